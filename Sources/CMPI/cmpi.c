#include "CMPI.h"
#include <mpi.h>
#include <stdio.h>

static int g_active = 0;
static MPI_Comm g_sums = MPI_COMM_NULL;  // started (nonblocking) sums only
enum { max_pending = 1024 };
static MPI_Request g_pending[max_pending];
static int g_pending_count = 0;

int cmpi_init(int *rank, int *size, int *local_size, char *error, int error_length) {
    int provided = 0;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int length = 0;
        MPI_Error_string(rc, text, &length);
        snprintf(error, (size_t)error_length, "MPI_Init_thread failed: %s", text);
        return -1;
    }
    if (provided < MPI_THREAD_SERIALIZED) {
        snprintf(error, (size_t)error_length, "this MPI library gives thread level %d, serialized (%d) is needed",
                 provided, MPI_THREAD_SERIALIZED);
        MPI_Finalize();
        return -1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, *rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, local_size);
    MPI_Comm_free(&node);
    MPI_Comm_dup(MPI_COMM_WORLD, &g_sums);
    g_active = 1;
    return 0;
}

int cmpi_active(void) { return g_active; }

void cmpi_finalize(void) {
    if (!g_active) return;
    g_active = 0;
    cmpi_wait_sums();
    MPI_Comm_free(&g_sums);
    MPI_Finalize();
}

void cmpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

// MPI counts are int: large buffers go in chunks of at most 2^30 elements.
static const int64_t chunk = (int64_t)1 << 30;

static int sum_in_place(void *values, int64_t count, MPI_Datatype type, size_t size) {
    for (int64_t at = 0; at < count; at += chunk) {
        int n = (int)(count - at < chunk ? count - at : chunk);
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)values + at * (int64_t)size, n, type, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return -1;
    }
    return 0;
}

int cmpi_sum_float(float *values, int64_t count) { return sum_in_place(values, count, MPI_FLOAT, sizeof(float)); }

int cmpi_sum_double(double *values, int64_t count) { return sum_in_place(values, count, MPI_DOUBLE, sizeof(double)); }

int cmpi_start_sum_float(float *values, int64_t count) {
    for (int64_t at = 0; at < count; at += chunk) {
        if (g_pending_count == max_pending) return -1;
        int n = (int)(count - at < chunk ? count - at : chunk);
        if (MPI_Iallreduce(MPI_IN_PLACE, values + at, n, MPI_FLOAT, MPI_SUM, g_sums, &g_pending[g_pending_count]) != MPI_SUCCESS)
            return -1;
        g_pending_count++;
    }
    return 0;
}

int cmpi_progress(void) {
    if (g_pending_count == 0) return 1;
    int done = 0;
    MPI_Testall(g_pending_count, g_pending, &done, MPI_STATUSES_IGNORE);
    if (done) g_pending_count = 0;
    return done;
}

int cmpi_wait_sums(void) {
    if (g_pending_count == 0) return 0;
    int rc = MPI_Waitall(g_pending_count, g_pending, MPI_STATUSES_IGNORE);
    g_pending_count = 0;
    return rc == MPI_SUCCESS ? 0 : -1;
}

int cmpi_broadcast(void *bytes, int64_t count, int root) {
    for (int64_t at = 0; at < count; at += chunk) {
        int n = (int)(count - at < chunk ? count - at : chunk);
        if (MPI_Bcast((char *)bytes + at, n, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS) return -1;
    }
    return 0;
}

int cmpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1; }
