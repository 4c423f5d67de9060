/*
 * Nonblocking communicators (config.blocking = 0), one rank per process, the unique
 * id shared through TEST_ID_FILE (rank 0 writes it), TEST_RANK and TEST_NRANKS set.
 * Every wait polls ncclCommGetAsyncError with a deadline. argv[1]:
 *   ok     init returns ncclInProgress and completes; an all-reduce of 1 Mi floats
 *          returns ncclInProgress and is checked element by element after polling;
 *          three calls queued back to back (all-reduce, broadcast, all-gather) and a
 *          grouped ring send/recv complete in order; a nonblocking split; finalize.
 *   lost   the last rank SIGKILLs itself after the first all-reduce; the others' next
 *          all-reduce returns ncclInProgress, then ncclCommGetAsyncError reports
 *          ncclRemoteError; they shrink (nonblocking, inherited) and all-reduce again.
 *   abort  rank 0 only: a communicator whose other rank never comes stays
 *          ncclInProgress, refuses queries and calls (ncclInvalidArgument), and
 *          ncclCommAbort returns within a bound; then with the real peer, an
 *          all-reduce that cannot finish (the peer waits) is aborted while in
 *          progress.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mixccl.h"

static int rank = -1, nranks = 0;

static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "rank %d: FAILED: ", rank);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (last error: %s)\n", ncclGetLastError(NULL));
  exit(1);
}

#define EXPECT(call, want)                                                          \
  do {                                                                              \
    ncclResult_t r_ = (call);                                                       \
    if (r_ != (want))                                                               \
      fail("%s:%d: %s returned %d (%s), expected %d", __FILE__, __LINE__, #call,   \
           (int)r_, ncclGetErrorString(r_), (int)(want));                           \
  } while (0)
#define CHECK(call) EXPECT(call, ncclSuccess)
/* A call on a nonblocking communicator: ncclSuccess or ncclInProgress. */
#define START(call)                                                                 \
  do {                                                                              \
    ncclResult_t r_ = (call);                                                       \
    if (r_ != ncclSuccess && r_ != ncclInProgress)                                  \
      fail("%s:%d: %s returned %d (%s)", __FILE__, __LINE__, #call, (int)r_,       \
           ncclGetErrorString(r_));                                                 \
  } while (0)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* Polls until the communicator leaves ncclInProgress or `limit` seconds pass. */
static ncclResult_t wait_state(ncclComm_t c, double limit) {
  ncclResult_t state = ncclInProgress;
  double end = now() + limit;
  while (now() < end) {
    CHECK(ncclCommGetAsyncError(c, &state));
    if (state != ncclInProgress) return state;
    sleep_ms(1);
  }
  return ncclInProgress;
}

static ncclUniqueId shared_id(const char* path) {
  char hex[MIXCCL_UNIQUE_ID_HEX_BYTES], tmp[4096];
  ncclUniqueId id;
  FILE* f;
  int tries;
  if (rank == 0) {
    CHECK(ncclGetUniqueId(&id));
    CHECK(mixcclUniqueIdToHex(&id, hex));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fputs(hex, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) fail("writing the id");
    return id;
  }
  for (tries = 0; !(f = fopen(path, "r")); tries++) {
    if (tries > 6000) fail("no id in %s after 60 s", path);
    sleep_ms(10);
  }
  hex[fread(hex, 1, sizeof hex - 1, f)] = 0;
  fclose(f);
  CHECK(mixcclUniqueIdFromHex(hex, &id));
  return id;
}

/* ncclCommInitRankConfig with blocking = 0; returns once the communicator is ready. */
static ncclComm_t init_nonblocking(ncclUniqueId id, int n, int r) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  ncclComm_t c = NULL;
  ncclResult_t state;
  config.blocking = 0;
  EXPECT(ncclCommInitRankConfig(&c, n, id, r, &config), ncclInProgress);
  if (c == NULL) fail("ncclInProgress without a handle");
  if ((state = wait_state(c, 60)) != ncclSuccess) fail("init ended in %d (%s)", (int)state, ncclGetErrorString(state));
  return c;
}

#define BIG (1 << 20)

static void mode_ok(ncclUniqueId id) {
  ncclComm_t comm = init_nonblocking(id, nranks, rank), sub = NULL;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  float* x = malloc(BIG * sizeof(float));
  float* y = malloc(BIG * sizeof(float));
  float* g = malloc((size_t)nranks * 1000 * sizeof(float));
  float b[1000], from[64], to[64];
  int n = 0, r = -1, i, j, in_progress = 0, left, right, sub_n = 0;
  ncclResult_t res, state;
  if (!x || !y || !g) fail("malloc");
  CHECK(ncclCommCount(comm, &n));
  CHECK(ncclCommUserRank(comm, &r));
  if (n != nranks || r != rank) fail("count %d rank %d", n, r);

  /* One large all-reduce, polled. */
  for (i = 0; i < BIG; i++) x[i] = (float)((i % 97) + rank);
  res = ncclAllReduce(x, y, BIG, ncclFloat, ncclSum, comm, NULL);
  if (res != ncclInProgress) fail("1 Mi-float all-reduce returned %d, expected ncclInProgress", (int)res);
  if ((state = wait_state(comm, 60)) != ncclSuccess) fail("all-reduce ended in %d", (int)state);
  for (i = 0; i < BIG; i++) {
    float want = (float)(nranks * (i % 97) + nranks * (nranks - 1) / 2);
    if (y[i] != want) fail("all-reduce y[%d] = %g, expected %g", i, (double)y[i], (double)want);
  }

  /* Three calls queued back to back, then one poll: they run in call order. */
  for (i = 0; i < 1000; i++) b[i] = rank == 1 % nranks ? (float)(3 * i) : -1.0f;
  for (i = 0; i < BIG; i++) x[i] = 1.0f;
  START(ncclAllReduce(x, x, BIG, ncclFloat, ncclSum, comm, NULL));
  START(ncclBroadcast(b, b, 1000, ncclFloat, 1 % nranks, comm, NULL));
  START(ncclAllGather(b, g, 1000, ncclFloat, comm, NULL));
  if ((state = wait_state(comm, 60)) != ncclSuccess) fail("queued calls ended in %d", (int)state);
  for (i = 0; i < BIG; i++)
    if (x[i] != (float)nranks) fail("queued all-reduce x[%d] = %g", i, (double)x[i]);
  for (j = 0; j < nranks; j++)
    for (i = 0; i < 1000; i++)
      if (g[j * 1000 + i] != (float)(3 * i)) fail("queued all-gather g[%d] = %g", j * 1000 + i, (double)g[j * 1000 + i]);

  /* A grouped ring shift. */
  left = (rank + nranks - 1) % nranks;
  right = (rank + 1) % nranks;
  for (i = 0; i < 64; i++) from[i] = (float)(100 * rank + i), to[i] = -1;
  CHECK(ncclGroupStart());
  CHECK(ncclSend(from, 64, ncclFloat, right, comm, NULL));
  CHECK(ncclRecv(to, 64, ncclFloat, left, comm, NULL));
  res = ncclGroupEnd();
  if (res == ncclInProgress) in_progress++;
  else if (res != ncclSuccess) fail("ncclGroupEnd returned %d", (int)res);
  if ((state = wait_state(comm, 60)) != ncclSuccess) fail("group ended in %d", (int)state);
  for (i = 0; i < 64; i++)
    if (to[i] != (float)(100 * left + i)) fail("ring to[%d] = %g", i, (double)to[i]);
  if (!in_progress) fail("ncclGroupEnd on a nonblocking communicator did not return ncclInProgress");

  /* A nonblocking split: even and odd ranks. */
  config.blocking = 0;
  EXPECT(ncclCommSplit(comm, rank % 2, rank, &sub, &config), ncclInProgress);
  if ((state = wait_state(sub, 60)) != ncclSuccess) fail("split ended in %d", (int)state);
  CHECK(ncclCommCount(sub, &sub_n));
  if (sub_n != (nranks + 1 - rank % 2) / 2) fail("split of %d ranks has %d", nranks, sub_n);
  x[0] = 1;
  START(ncclAllReduce(x, y, 1, ncclFloat, ncclSum, sub, NULL));
  if ((state = wait_state(sub, 60)) != ncclSuccess || y[0] != (float)sub_n) fail("split all-reduce: %g", (double)y[0]);

  res = ncclCommFinalize(sub);
  if (res != ncclSuccess && res != ncclInProgress) fail("finalize returned %d", (int)res);
  if (wait_state(sub, 60) != ncclSuccess) fail("finalize did not complete");
  CHECK(ncclCommDestroy(sub));
  /* Destroy waits for a queued call. */
  START(ncclAllReduce(x, y, BIG, ncclFloat, ncclSum, comm, NULL));
  CHECK(ncclCommDestroy(comm));
  printf("rank %d: nonblocking OK\n", rank);
  free(x), free(y), free(g);
}

static void mode_lost(ncclUniqueId id) {
  ncclComm_t comm = init_nonblocking(id, nranks, rank), small = NULL;
  float x = 1, y = 0;
  int excluded = nranks - 1, n = 0, r = -1;
  ncclResult_t state;
  START(ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL));
  if ((state = wait_state(comm, 60)) != ncclSuccess || y != (float)nranks) fail("first all-reduce %d %g", (int)state, (double)y);
  if (rank == nranks - 1) kill(getpid(), SIGKILL); /* gone without a word */
  sleep_ms(200);
  START(ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL));
  if ((state = wait_state(comm, 30)) != ncclRemoteError)
    fail("after the peer left: state %d (%s), expected ncclRemoteError", (int)state, ncclGetErrorString(state));
  if (!strstr(ncclGetLastError(comm), "lost")) fail("ncclGetLastError: %s", ncclGetLastError(comm));
  /* Latched: the next call fails at once with the same code. */
  EXPECT(ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, comm, NULL), ncclRemoteError);
  /* Shrink with config NULL: inherits nonblocking. */
  EXPECT(ncclCommShrink(comm, &excluded, 1, &small, NULL, NCCL_SHRINK_DEFAULT), ncclInProgress);
  if ((state = wait_state(small, 60)) != ncclSuccess) fail("shrink ended in %d", (int)state);
  CHECK(ncclCommCount(small, &n));
  CHECK(ncclCommUserRank(small, &r));
  if (n != nranks - 1 || r != rank) fail("shrunk: count %d rank %d", n, r);
  x = (float)(rank + 1);
  START(ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, small, NULL));
  if ((state = wait_state(small, 60)) != ncclSuccess) fail("shrunk all-reduce ended in %d", (int)state);
  if (y != (float)(n * (n + 1) / 2)) fail("shrunk all-reduce %g", (double)y);
  CHECK(ncclCommDestroy(small));
  CHECK(ncclCommAbort(comm));
  printf("rank %d: lost peer reported as %s; shrunk to %d ranks, all-reduce %g\n", rank,
         ncclGetErrorString(ncclRemoteError), n, (double)y);
}

/* `path` with `suffix`: a file rank 0 creates to tell the others something happened. */
static void signal_file(const char* path, const char* suffix, int create) {
  char name[4096];
  FILE* f;
  int tries;
  snprintf(name, sizeof name, "%s%s", path, suffix);
  if (create) {
    if (!(f = fopen(name, "w")) || fclose(f) != 0) fail("creating %s", name);
    return;
  }
  for (tries = 0; !(f = fopen(name, "r")); tries++) {
    if (tries > 6000) fail("no %s after 60 s", name);
    sleep_ms(10);
  }
  fclose(f);
}

static void mode_abort(ncclUniqueId id, const char* path) {
  ncclUniqueId lonely;
  ncclComm_t c = NULL, comm;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  float* x = malloc(BIG * sizeof(float));
  int n = 0;
  double t;
  ncclResult_t state;
  if (!x) fail("malloc");
  memset(x, 0, BIG * sizeof(float));
  /* Init that cannot finish: nobody else joins `lonely`. */
  if (rank == 0) {
    config.blocking = 0;
    CHECK(ncclGetUniqueId(&lonely));
    EXPECT(ncclCommInitRankConfig(&c, 2, lonely, 0, &config), ncclInProgress);
    if (wait_state(c, 0.3) != ncclInProgress) fail("a lonely init left ncclInProgress");
    EXPECT(ncclCommCount(c, &n), ncclInvalidArgument);
    EXPECT(ncclAllReduce(x, x, 1, ncclFloat, ncclSum, c, NULL), ncclInvalidArgument);
    t = now();
    CHECK(ncclCommAbort(c));
    if (now() - t > 3.0) fail("abort during init took %.2f s", now() - t);
    printf("rank 0: abort during init returned in %.3f s\n", now() - t);
  }
  comm = init_nonblocking(id, nranks, rank);
  if (rank == 0) {
    /* The peer makes no call: this all-reduce cannot finish. */
    START(ncclAllReduce(x, x, BIG, ncclFloat, ncclSum, comm, NULL));
    if (wait_state(comm, 0.5) != ncclInProgress) fail("an all-reduce without its peer left ncclInProgress");
    t = now();
    CHECK(ncclCommAbort(comm));
    if (now() - t > 3.0) fail("abort of an all-reduce in progress took %.2f s", now() - t);
    printf("rank 0: abort during an all-reduce returned in %.3f s\n", now() - t);
    signal_file(path, ".aborted", 1);
  } else {
    /* Once rank 0 has aborted, this all-reduce must fail. */
    signal_file(path, ".aborted", 0);
    START(ncclAllReduce(x, x, BIG, ncclFloat, ncclSum, comm, NULL));
    state = wait_state(comm, 30);
    if (state == ncclInProgress || state == ncclSuccess) fail("rank 1 saw no error after rank 0 aborted: %d", (int)state);
    printf("rank 1: after the peer aborted: %s\n", ncclGetErrorString(state));
    CHECK(ncclCommAbort(comm));
  }
  free(x);
}

int main(int argc, char** argv) {
  const char* path = getenv("TEST_ID_FILE");
  ncclUniqueId id;
  rank = atoi(getenv("TEST_RANK") ? getenv("TEST_RANK") : "-1");
  nranks = atoi(getenv("TEST_NRANKS") ? getenv("TEST_NRANKS") : "0");
  if (argc != 2 || !path || rank < 0 || rank >= nranks) {
    fprintf(stderr, "usage: TEST_RANK=r TEST_NRANKS=n TEST_ID_FILE=path nonblocking ok|lost|abort\n");
    return 2;
  }
  id = shared_id(path);
  if (strcmp(argv[1], "ok") == 0) mode_ok(id);
  else if (strcmp(argv[1], "lost") == 0) mode_lost(id);
  else if (strcmp(argv[1], "abort") == 0) mode_abort(id, path);
  else fail("unknown mode %s", argv[1]);
  return 0;
}
