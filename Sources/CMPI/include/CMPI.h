#ifndef CMPI_H
#define CMPI_H
// The only place MPI is seen: a few collective operations over MPI_COMM_WORLD in plain C types, so that no
// MPI handle, macro or implementation-specific type reaches Swift.
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Initialises MPI (thread level "serialized": any thread may call, one at a time) and returns 0, filling the
/// world rank and size and the number of ranks on this node; on failure returns -1 and a message in `error`.
int cmpi_init(int *rank, int *size, int *local_size, char *error, int error_length);
/// Whether cmpi_init succeeded and cmpi_finalize has not run.
int cmpi_active(void);
void cmpi_finalize(void);
/// Ends every rank of the job with `code` (MPI_Abort); does not return.
void cmpi_abort(int code);

/// In-place sums over all ranks (MPI_Allreduce with MPI_SUM). Counts may exceed INT_MAX (sent in chunks).
/// 0 on success; MPI's default error handler ends the job on a communication failure.
int cmpi_sum_float(float *values, int64_t count);
int cmpi_sum_double(double *values, int64_t count);
/// Starts an in-place sum of `count` floats over all ranks (MPI_Iallreduce on a communicator of its own, so
/// it never matches the blocking operations above) and returns at once; 0 on success, -1 when too many are
/// pending. The buffer must stay untouched until cmpi_wait_sums returns.
int cmpi_start_sum_float(float *values, int64_t count);
/// Lets started sums advance (MPI_Testall); 1 when none is pending any more.
int cmpi_progress(void);
/// Waits for every started sum.
int cmpi_wait_sums(void);
/// `bytes` bytes from `root` to every rank, in place.
int cmpi_broadcast(void *bytes, int64_t count, int root);
int cmpi_barrier(void);

#ifdef __cplusplus
}
#endif
#endif
