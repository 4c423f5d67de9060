/*
 * All-gather without MPI: each process joins from its launcher's environment with
 * mixcclCommInitFromEnv (MIXCCL_RANK / MIXCCL_NRANKS / MIXCCL_ROOT here; torchrun and
 * Slurm variables work too), and rank 0 starts the rendezvous at MIXCCL_ROOT. Build
 * and run (see README.md, "C ABI"):
 *
 *   cargo build --release
 *   cc -O2 -Iinclude examples/c/allgather_env.c -o allgather_env \
 *      -Ltarget/release -lmixccl -Wl,-rpath,$PWD/target/release
 *   for r in 0 1 2; do MIXCCL_SOCKET_IFNAME=lo MIXCCL_ROOT=127.0.0.1:29500 \
 *     MIXCCL_NRANKS=3 MIXCCL_RANK=$r ./allgather_env & done; wait
 */
#include <stdio.h>
#include <stdlib.h>

#include "mixccl.h"

#define NCCLCHECK(cmd)                                                              \
  do {                                                                              \
    ncclResult_t r = (cmd);                                                         \
    if (r != ncclSuccess) {                                                         \
      fprintf(stderr, "%s:%d '%s': %s (%s)\n", __FILE__, __LINE__, #cmd,            \
              ncclGetErrorString(r), ncclGetLastError(NULL));                       \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

int main(void) {
  const size_t count = 1000;
  int rank, nranks, r, wrong = 0;
  size_t i;
  ncclComm_t comm;
  int *mine, *all;

  NCCLCHECK(mixcclCommInitFromEnv(&comm));
  NCCLCHECK(ncclCommUserRank(comm, &rank));
  NCCLCHECK(ncclCommCount(comm, &nranks));

  /* In place: this rank's block already sits at all + rank * count. */
  all = malloc(count * (size_t)nranks * sizeof(int));
  mine = all + (size_t)rank * count;
  for (i = 0; i < count; i++) mine[i] = rank * 1000000 + (int)i;
  NCCLCHECK(ncclAllGather(mine, all, count, ncclInt32, comm, NULL));
  for (r = 0; r < nranks; r++)
    for (i = 0; i < count; i++)
      if (all[(size_t)r * count + i] != r * 1000000 + (int)i) wrong++;

  printf("rank %d of %d: all-gather of %zu ints per rank, %d wrong\n", rank, nranks, count, wrong);
  free(all);
  NCCLCHECK(ncclCommDestroy(comm));
  return wrong != 0;
}
