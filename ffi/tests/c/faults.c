/*
 * Faults reach C as NCCL's codes: rank 1 leaves (exits without destroying its
 * communicator) or stays silent, and rank 0's next all-reduce returns ncclRemoteError
 * or ncclTimeout, which ncclCommGetAsyncError then reports and later calls repeat.
 * Two processes, the unique id shared through TEST_ID_FILE; argv[1] is "lost" or "silent".
 * "shrink": three processes; the last leaves, and the other two, after
 * ncclRemoteError, make a communicator of themselves with ncclCommShrink and use it.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mixccl.h"

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static void die(const char* what, ncclResult_t r) {
  fprintf(stderr, "FAILED: %s: %d (%s): %s\n", what, (int)r, ncclGetErrorString(r), ncclGetLastError(NULL));
  exit(1);
}

int main(int argc, char** argv) {
  const char* path = getenv("TEST_ID_FILE");
  int rank = atoi(getenv("TEST_RANK") ? getenv("TEST_RANK") : "-1"), lost, tries;
  char hex[MIXCCL_UNIQUE_ID_HEX_BYTES], tmp[4096];
  ncclUniqueId id;
  ncclComm_t comm, small;
  int nranks, excluded, small_rank = -1, small_n = -1, shrink;
  ncclResult_t r, want, async;
  float x = 1, y = 0;
  FILE* f;

  shrink = argc == 2 && strcmp(argv[1], "shrink") == 0;
  nranks = shrink ? 3 : 2;
  if (argc != 2 || !path || rank < 0 || rank >= nranks) {
    fprintf(stderr, "usage: TEST_RANK=0|1[|2] TEST_ID_FILE=path faults lost|silent|shrink\n");
    return 2;
  }
  lost = shrink || strcmp(argv[1], "lost") == 0;
  want = lost ? ncclRemoteError : ncclTimeout;
  if (rank == 0) {
    if ((r = ncclGetUniqueId(&id)) != ncclSuccess) die("ncclGetUniqueId", r);
    if ((r = mixcclUniqueIdToHex(&id, hex)) != ncclSuccess) die("mixcclUniqueIdToHex", r);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fputs(hex, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) die("writing the id", ncclSystemError);
  } else {
    for (tries = 0; !(f = fopen(path, "r")); tries++) {
      if (tries > 3000) die("waiting for the id", ncclSystemError);
      sleep_ms(10);
    }
    hex[fread(hex, 1, sizeof hex - 1, f)] = 0;
    fclose(f);
    if ((r = mixcclUniqueIdFromHex(hex, &id)) != ncclSuccess) die("mixcclUniqueIdFromHex", r);
  }
  if ((r = ncclCommInitRank(&comm, nranks, id, rank)) != ncclSuccess) die("ncclCommInitRank", r);
  if ((r = ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL)) != ncclSuccess || y != nranks)
    die("first allreduce", r);
  if (rank == nranks - 1) {
    if (!lost) sleep_ms(4000); /* silent: alive, but calls nothing */
    _exit(0);                  /* lost: gone without ncclCommDestroy */
  }
  sleep_ms(300);
  r = ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL);
  if (r != want) die("allreduce after the fault (wrong code)", r);
  if (strstr(ncclGetLastError(comm), lost ? "lost" : "timed out") == NULL) die("ncclGetLastError", r);
  if ((r = ncclCommGetAsyncError(comm, &async)) != ncclSuccess || async != want) die("ncclCommGetAsyncError", async);
  /* The error is latched: later calls return it without waiting. */
  if ((r = ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL)) != want) die("latched", r);
  if (shrink) {
    excluded = nranks - 1;
    if ((r = ncclCommShrink(comm, &excluded, 1, &small, NULL, NCCL_SHRINK_DEFAULT)) != ncclSuccess)
      die("ncclCommShrink", r);
    if ((r = ncclCommCount(small, &small_n)) != ncclSuccess || small_n != 2) die("ncclCommCount", r);
    if ((r = ncclCommUserRank(small, &small_rank)) != ncclSuccess || small_rank != rank)
      die("ncclCommUserRank", r);
    x = (float)(rank + 1);
    if ((r = ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, small, NULL)) != ncclSuccess || y != 3)
      die("allreduce after the shrink", r);
    if ((r = ncclCommDestroy(small)) != ncclSuccess) die("ncclCommDestroy(small)", r);
    printf("shrunk to %d ranks, allreduce %g\n", small_n, (double)y);
  }
  if ((r = ncclCommDestroy(comm)) != ncclSuccess) die("ncclCommDestroy", r);
  printf("%s peer: %s\n", argv[1], ncclGetErrorString(want));
  return 0;
}
