/*
 * Dropping a whole island and growing it back, from C: four processes, ranks 0-1 on
 * host "island-a" and 2-3 on "island-b" (MIXCCL_HOST_ID, set by the harness). Ranks
 * 0-1 drop island-b with mixcclCommShrinkHosts (2-3 get NULL and take no part) and
 * check an all-reduce; rank 0 gets a grow id with ncclCommGetUniqueId and shares it
 * through TEST_ID_FILE.grow; ranks 0-1 grow with their communicator and rank -1,
 * ranks 2-3 join with NULL and their rank; the grown communicator's all-reduce is
 * checked. Also: an island that matches no rank is ncclInvalidArgument.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mixccl.h"

static int rank = -1;

static void die(const char* what, ncclResult_t r) {
  fprintf(stderr, "rank %d: FAILED: %s: %d (%s): %s\n", rank, what, (int)r,
          ncclGetErrorString(r), ncclGetLastError(NULL));
  exit(1);
}

#define CHECK(call)                                \
  do {                                             \
    ncclResult_t r_ = (call);                      \
    if (r_ != ncclSuccess) die(#call, r_);         \
  } while (0)

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* The writer puts the id's hex text at `path`; the others wait for it. */
static void share(const char* path, ncclUniqueId* id, int writer) {
  char hex[MIXCCL_UNIQUE_ID_HEX_BYTES], tmp[4200];
  FILE* f;
  int tries;
  if (writer) {
    CHECK(mixcclUniqueIdToHex(id, hex));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fputs(hex, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
      die("writing an id", ncclSystemError);
    return;
  }
  for (tries = 0; !(f = fopen(path, "r")); tries++) {
    if (tries > 6000) die("waiting for an id", ncclSystemError);
    sleep_ms(10);
  }
  hex[fread(hex, 1, sizeof hex - 1, f)] = 0;
  fclose(f);
  CHECK(mixcclUniqueIdFromHex(hex, id));
}

/* All-reduce of (rank + 1) over `comm`: n (n + 1) / 2. */
static void check_sum(ncclComm_t comm, const char* when) {
  int n = 0, r = -1;
  float x, y = 0;
  CHECK(ncclCommCount(comm, &n));
  CHECK(ncclCommUserRank(comm, &r));
  x = (float)(r + 1);
  CHECK(ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL));
  if (y != (float)(n * (n + 1) / 2)) {
    fprintf(stderr, "rank %d: FAILED: all-reduce %s: %g, expected %d\n", rank, when, y,
            n * (n + 1) / 2);
    exit(1);
  }
  printf("rank %d: %s: rank %d of %d, all-reduce %g\n", rank, when, r, n, y);
}

int main(void) {
  const char* path = getenv("TEST_ID_FILE");
  const char* island_b[] = {"island-b"};
  const char* cuda[] = {"cuda"};
  char grow_path[4200];
  ncclUniqueId id, gid;
  ncclComm_t comm, small = NULL, big = NULL, none = NULL;
  int in_b, n = 0, r = -1;
  rank = atoi(getenv("TEST_RANK") ? getenv("TEST_RANK") : "-1");
  if (!path || rank < 0 || rank > 3) die("usage: TEST_RANK=0..3 TEST_ID_FILE=path", ncclInvalidUsage);
  in_b = rank >= 2;
  snprintf(grow_path, sizeof grow_path, "%s.grow", path);
  if (rank == 0) CHECK(ncclGetUniqueId(&id));
  share(path, &id, rank == 0);
  CHECK(ncclCommInitRank(&comm, 4, id, rank));
  check_sum(comm, "all four");
  if (mixcclCommShrinkVendors(comm, cuda, 1, &none) != ncclInvalidArgument || none != NULL)
    die("an island of no rank must be ncclInvalidArgument", ncclInternalError);
  CHECK(mixcclCommShrinkHosts(comm, island_b, 1, &small));
  if (in_b) {
    if (small != NULL) die("a rank of the dropped island got a communicator", ncclInternalError);
    share(grow_path, &gid, 0);
    CHECK(ncclCommGrow(NULL, 4, &gid, rank, &big, NULL));
  } else {
    if (small == NULL) die("a survivor got no communicator", ncclInternalError);
    check_sum(small, "island-b dropped");
    if (rank == 0) CHECK(ncclCommGetUniqueId(small, &gid));
    share(grow_path, &gid, rank == 0);
    CHECK(ncclCommGrow(small, 4, &gid, -1, &big, NULL));
  }
  CHECK(ncclCommCount(big, &n));
  CHECK(ncclCommUserRank(big, &r));
  if (n != 4 || r != rank) die("the grown communicator has the wrong rank or size", ncclInternalError);
  check_sum(big, "island-b admitted again");
  CHECK(ncclCommDestroy(big));
  if (small) CHECK(ncclCommDestroy(small));
  CHECK(ncclCommDestroy(comm));
  printf("rank %d: island OK\n", rank);
  return 0;
}
