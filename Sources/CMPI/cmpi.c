#include "CMPI.h"
#include <mpi.h>
#include <stdio.h>

static int g_active = 0;

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
    g_active = 1;
    return 0;
}

int cmpi_active(void) { return g_active; }

void cmpi_finalize(void) {
    if (!g_active) return;
    g_active = 0;
    MPI_Finalize();
}

void cmpi_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }

// MPI counts are int: large buffers go in chunks of at most 2^30 elements.
static const int64_t chunk = (int64_t)1 << 30;

int cmpi_sum_float(float *values, int64_t count) {
    for (int64_t at = 0; at < count; at += chunk) {
        int n = (int)(count - at < chunk ? count - at : chunk);
        if (MPI_Allreduce(MPI_IN_PLACE, values + at, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return -1;
    }
    return 0;
}

int cmpi_sum_double(double *values, int64_t count) {
    for (int64_t at = 0; at < count; at += chunk) {
        int n = (int)(count - at < chunk ? count - at : chunk);
        if (MPI_Allreduce(MPI_IN_PLACE, values + at, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS) return -1;
    }
    return 0;
}

int cmpi_broadcast(void *bytes, int64_t count, int root) {
    for (int64_t at = 0; at < count; at += chunk) {
        int n = (int)(count - at < chunk ? count - at : chunk);
        if (MPI_Bcast((char *)bytes + at, n, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS) return -1;
    }
    return 0;
}

int cmpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : -1; }
