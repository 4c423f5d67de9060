/*
 * All-reduce with one rank per process, started by mpirun; MPI only shares the
 * unique id (as in NCCL's documentation). Build and run (see README.md, "C ABI"):
 *
 *   cargo build --release
 *   mpicc -O2 -Iinclude examples/c/allreduce_mpi.c -o allreduce_mpi \
 *         -Ltarget/release -lmixccl -Wl,-rpath,$PWD/target/release
 *   MIXCCL_SOCKET_IFNAME=lo mpirun -np 4 ./allreduce_mpi
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "nccl.h"

#define NCCLCHECK(cmd)                                                              \
  do {                                                                              \
    ncclResult_t r = (cmd);                                                         \
    if (r != ncclSuccess) {                                                         \
      fprintf(stderr, "%s:%d '%s': %s (%s)\n", __FILE__, __LINE__, #cmd,            \
              ncclGetErrorString(r), ncclGetLastError(NULL));                       \
      MPI_Abort(MPI_COMM_WORLD, 1);                                                 \
    }                                                                               \
  } while (0)

int main(int argc, char** argv) {
  const size_t count = 1 << 20;
  int rank, nranks, wrong = 0;
  size_t i;
  ncclUniqueId id;
  ncclComm_t comm;
  float *send, *recv;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);

  /* Rank 0 starts the rendezvous; every rank gets its 128-byte id. */
  if (rank == 0) NCCLCHECK(ncclGetUniqueId(&id));
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  NCCLCHECK(ncclCommInitRank(&comm, nranks, id, rank));

  /* Host buffers; the call completes before it returns (the stream is unused). */
  send = malloc(count * sizeof(float));
  recv = malloc(count * sizeof(float));
  for (i = 0; i < count; i++) send[i] = (float)(rank + 1);
  NCCLCHECK(ncclAllReduce(send, recv, count, ncclFloat, ncclSum, comm, NULL));
  for (i = 0; i < count; i++)
    if (recv[i] != (float)(nranks * (nranks + 1) / 2)) wrong++;

  printf("rank %d of %d: all-reduce of %zu floats, %d wrong\n", rank, nranks, count, wrong);
  free(send);
  free(recv);
  NCCLCHECK(ncclCommDestroy(comm));
  MPI_Finalize();
  return wrong != 0;
}
