/*
 * One process: ncclCommInitAll with a thread per rank, bad arguments (documented
 * codes, a reason in ncclGetLastError, the communicator still usable), error strings,
 * configs, memory, split, one thread driving every rank through a group,
 * ncclCommAbort ending a call blocked on another thread, one thread creating and
 * driving three nonblocking ranks (init, a group across them, polling), and five
 * nonblocking ranks joined by ncclCommInitRankScalable through two ids (two roots).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nccl.h"

#define NRANKS 4

static ncclComm_t comms[NRANKS];
static const int devlist[NRANKS] = {10, 11, 12, 13};
static long checks = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "FAILED: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

static void count_check(void) {
  pthread_mutex_lock(&lock);
  checks++;
  pthread_mutex_unlock(&lock);
}

#define CHECK(call)                                                                       \
  do {                                                                                    \
    ncclResult_t r_ = (call);                                                             \
    if (r_ != ncclSuccess)                                                                \
      fail("%s:%d: %s returned %d (%s): %s", __FILE__, __LINE__, #call, (int)r_,          \
           ncclGetErrorString(r_), ncclGetLastError(NULL));                               \
  } while (0)

/* The call returns `want` and leaves a message containing `word` in ncclGetLastError. */
#define EXPECT(call, want, word)                                                          \
  do {                                                                                    \
    ncclResult_t r_ = (call);                                                             \
    const char* m_ = ncclGetLastError(NULL);                                              \
    if (r_ != (want))                                                                     \
      fail("%s:%d: %s returned %d, expected %d (%s)", __FILE__, __LINE__, #call, (int)r_,  \
           (int)(want), m_);                                                              \
    if (!m_ || !strstr(m_, (word)))                                                       \
      fail("%s:%d: %s: last error \"%s\" lacks \"%s\"", __FILE__, __LINE__, #call,         \
           m_ ? m_ : "(null)", (word));                                                   \
    count_check();                                                                        \
  } while (0)

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A float all-reduce of 4 elements: the communicator works. */
static void allreduce_works(ncclComm_t c, int rank, int nranks) {
  float x[4], y[4] = {0, 0, 0, 0};
  int i;
  for (i = 0; i < 4; i++) x[i] = (float)(rank + i);
  CHECK(ncclAllReduce(x, y, 4, ncclFloat, ncclSum, c, NULL));
  for (i = 0; i < 4; i++)
    if (y[i] != (float)(nranks * (nranks - 1) / 2 + nranks * i))
      fail("rank %d: allreduce after errors: y[%d] = %g", rank, i, (double)y[i]);
  count_check();
}

static void bad_arguments(ncclComm_t c) {
  float s[8] = {0}, r[8] = {0}, scalar = 2.0f;
  int n = 0;
  ncclComm_t sub = NULL;
  ncclRedOp_t op;
  EXPECT(ncclAllReduce(s, r, 4, (ncclDataType_t)12, ncclSum, c, NULL), ncclInvalidArgument, "datatype 12");
  EXPECT(ncclAllReduce(s, r, 4, (ncclDataType_t)-1, ncclSum, c, NULL), ncclInvalidArgument, "datatype -1");
  EXPECT(ncclAllReduce(s, r, 4, ncclFloat, (ncclRedOp_t)5, c, NULL), ncclInvalidArgument, "op 5");
  EXPECT(ncclAllReduce(s, r, 4, ncclFloat, (ncclRedOp_t)-3, c, NULL), ncclInvalidArgument, "op -3");
  EXPECT(ncclAllReduce(NULL, r, 4, ncclFloat, ncclSum, c, NULL), ncclInvalidArgument, "sendbuff is NULL");
  EXPECT(ncclAllReduce(s, NULL, 4, ncclFloat, ncclSum, c, NULL), ncclInvalidArgument, "recvbuff is NULL");
  EXPECT(ncclAllReduce(s, s + 1, 4, ncclFloat, ncclSum, c, NULL), ncclInvalidArgument, "overlap");
  EXPECT(ncclAllReduce(s, r, SIZE_MAX / 2, ncclFloat, ncclSum, c, NULL), ncclInvalidArgument, "overflow");
  EXPECT(ncclAllReduce(s, r, 4, ncclFloat, ncclSum, NULL, NULL), ncclInvalidArgument, "comm is NULL");
  EXPECT(ncclReduce(s, r, 4, ncclFloat, ncclSum, NRANKS, c, NULL), ncclInvalidArgument, "root 4");
  EXPECT(ncclReduce(s, r, 4, ncclFloat, ncclSum, -1, c, NULL), ncclInvalidArgument, "root -1");
  EXPECT(ncclBroadcast(s, r, 4, ncclFloat, 99, c, NULL), ncclInvalidArgument, "root 99");
  EXPECT(ncclBcast(NULL, 4, ncclFloat, 0, c, NULL), ncclInvalidArgument, "NULL");
  /* Not in place (that needs sendbuff == recvbuff + rank*2 elements) but overlapping. */
  EXPECT(ncclAllGather(r + 1, r, 2, ncclFloat, c, NULL), ncclInvalidArgument, "overlap");
  EXPECT(ncclReduceScatter(s, s + 1, 2, ncclFloat, ncclSum, c, NULL), ncclInvalidArgument, "overlap");
  EXPECT(ncclAlltoAll(s, s + 1, 1, ncclFloat, c, NULL), ncclInvalidArgument, "overlap");
  EXPECT(ncclSend(s, 4, ncclFloat, NRANKS, c, NULL), ncclInvalidArgument, "peer 4");
  EXPECT(ncclRecv(r, 4, ncclFloat, -1, c, NULL), ncclInvalidArgument, "peer -1");
  EXPECT(ncclSend(NULL, 4, ncclFloat, 0, c, NULL), ncclInvalidArgument, "NULL");
  EXPECT(ncclRecv(r, 4, (ncclDataType_t)42, 0, c, NULL), ncclInvalidArgument, "datatype 42");
  EXPECT(ncclCommCount(c, NULL), ncclInvalidArgument, "count is NULL");
  EXPECT(ncclCommCount(NULL, &n), ncclInvalidArgument, "comm is NULL");
  EXPECT(ncclCommUserRank(c, NULL), ncclInvalidArgument, "rank is NULL");
  EXPECT(ncclCommGetAsyncError(c, NULL), ncclInvalidArgument, "asyncError is NULL");
  EXPECT(ncclGroupEnd(), ncclInvalidUsage, "without a matching ncclGroupStart");
  EXPECT(ncclCommSplit(c, -5, 0, &sub, NULL), ncclInvalidArgument, "color -5");
  if (sub != NULL) fail("failed split left newcomm set");
  EXPECT(ncclRedOpDestroy(ncclSum, c), ncclInvalidArgument, "built in");
  EXPECT(ncclRedOpDestroy((ncclRedOp_t)77, c), ncclInvalidArgument, "op 77");
  EXPECT(ncclRedOpCreatePreMulSum(&op, &scalar, (ncclDataType_t)12, ncclScalarHostImmediate, c),
         ncclInvalidArgument, "datatype 12");
  EXPECT(ncclRedOpCreatePreMulSum(&op, &scalar, ncclFloat, (ncclScalarResidence_t)7, c),
         ncclInvalidArgument, "residence 7");
  EXPECT(ncclRedOpCreatePreMulSum(NULL, &scalar, ncclFloat, ncclScalarHostImmediate, c),
         ncclInvalidArgument, "op is NULL");
  EXPECT(ncclMemAlloc(NULL, 16), ncclInvalidArgument, "ptr is NULL");
  EXPECT(ncclCommRegister(c, s, sizeof s, NULL), ncclInvalidArgument, "handle is NULL");
  /* A bad call spoils its group: ncclGroupEnd runs nothing and returns the error. */
  CHECK(ncclGroupStart());
  CHECK(ncclAllReduce(s, r, 4, ncclFloat, ncclSum, c, NULL));
  EXPECT(ncclSend(s, 4, ncclFloat, 9, c, NULL), ncclInvalidArgument, "peer 9");
  EXPECT(ncclGroupEnd(), ncclInvalidArgument, "group was not run");
  /* A PreMulSum op belongs to its datatype. */
  CHECK(ncclRedOpCreatePreMulSum(&op, &scalar, ncclFloat, ncclScalarHostImmediate, c));
  EXPECT(ncclAllReduce(s, r, 4, ncclDouble, op, c, NULL), ncclInvalidArgument, "created for float");
  CHECK(ncclRedOpDestroy(op, c));
  EXPECT(ncclRedOpDestroy(op, c), ncclInvalidArgument, "not created");
}

static void* rank_main(void* arg) {
  int rank = (int)(intptr_t)arg, n = -1, r = -1, dev = -1, i, color, subn = -1, subr = -1, subdev = -1;
  ncclComm_t c = comms[rank], sub = NULL;
  ncclResult_t async = ncclInternalError;
  float* mem = NULL;
  void* handle = NULL;
  int32_t x = rank + 1, sum = 0, want = 0, members = 0, before = 0, q;

  CHECK(ncclCommCount(c, &n));
  CHECK(ncclCommUserRank(c, &r));
  CHECK(ncclCommCuDevice(c, &dev));
  if (n != NRANKS || r != rank || dev != devlist[rank])
    fail("rank %d: count %d, rank %d, device %d", rank, n, r, dev);
  allreduce_works(c, rank, NRANKS);

  bad_arguments(c);
  allreduce_works(c, rank, NRANKS);
  CHECK(ncclCommGetAsyncError(c, &async));
  if (async != ncclSuccess) fail("rank %d: async error %d after argument errors", rank, (int)async);

  CHECK(ncclMemAlloc((void**)&mem, 1000 * sizeof(float)));
  if (!mem || ((uintptr_t)mem % 64) != 0) fail("ncclMemAlloc gave %p", (void*)mem);
  CHECK(ncclCommRegister(c, mem, 1000 * sizeof(float), &handle));
  for (i = 0; i < 1000; i++) mem[i] = (float)rank;
  CHECK(ncclAllReduce(mem, mem, 1000, ncclFloat, ncclMax, c, NULL));
  for (i = 0; i < 1000; i++)
    if (mem[i] != (float)(NRANKS - 1)) fail("in-place max in ncclMemAlloc memory: %g", (double)mem[i]);
  CHECK(ncclCommDeregister(c, handle));
  CHECK(ncclMemFree(mem));
  CHECK(ncclMemFree(NULL));

  /* Ranks 0 and 2 (color 0) in reverse order, rank 1 alone, rank 3 in none. */
  color = rank == 3 ? NCCL_SPLIT_NOCOLOR : rank % 2;
  CHECK(ncclCommSplit(c, color, -rank, &sub, NULL));
  if (color == NCCL_SPLIT_NOCOLOR) {
    if (sub != NULL) fail("NCCL_SPLIT_NOCOLOR gave a communicator");
  } else {
    for (q = 0; q < NRANKS - 1; q++)
      if (q % 2 == color) {
        members++;
        want += q + 1;
        if (q > rank) before++;
      }
    CHECK(ncclCommCount(sub, &subn));
    CHECK(ncclCommUserRank(sub, &subr));
    CHECK(ncclCommCuDevice(sub, &subdev));
    if (subn != members || subr != before || subdev != dev)
      fail("rank %d: split gave rank %d of %d on device %d", rank, subr, subn, subdev);
    CHECK(ncclAllReduce(&x, &sum, 1, ncclInt32, ncclSum, sub, NULL));
    if (sum != want) fail("rank %d: split allreduce %d, expected %d", rank, (int)sum, (int)want);
    CHECK(ncclCommDestroy(sub));
  }
  count_check();
  return NULL;
}

/* Blocks in a receive nobody sends; returns its result once aborted. */
static ncclResult_t aborted_result = ncclSuccess;
static char aborted_message[512];
static void* blocked_recv(void* arg) {
  char buf[16];
  (void)arg;
  aborted_result = ncclRecv(buf, sizeof buf, ncclUint8, 1, comms[0], NULL);
  snprintf(aborted_message, sizeof aborted_message, "%s", ncclGetLastError(NULL));
  return NULL;
}

static void init_checks(void) {
  ncclUniqueId id, zero;
  ncclComm_t c = NULL, two[2];
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  int version = 0, dev = -1, code;
  int32_t x = 5, y = 0;

  memset(&zero, 0, sizeof zero);
  CHECK(ncclGetVersion(&version));
  if (version != NCCL_VERSION_CODE || version < NCCL_VERSION(2, 18, 0)) fail("version %d", version);
  EXPECT(ncclGetVersion(NULL), ncclInvalidArgument, "version is NULL");
  EXPECT(ncclGetUniqueId(NULL), ncclInvalidArgument, "uniqueId is NULL");
  EXPECT(ncclCommInitRank(NULL, 1, zero, 0), ncclInvalidArgument, "comm is NULL");
  EXPECT(ncclCommInitRank(&c, 0, zero, 0), ncclInvalidArgument, "nranks = 0");
  EXPECT(ncclCommInitRank(&c, 2, zero, 2), ncclInvalidArgument, "rank = 2");
  EXPECT(ncclCommInitRank(&c, 1, zero, 0), ncclInvalidArgument, "unique id");
  if (c != NULL) fail("failed init left comm set");
  config.magic = 0;
  EXPECT(ncclCommInitRankConfig(&c, 1, zero, 0, &config), ncclInvalidArgument, "NCCL_CONFIG_INITIALIZER");
  EXPECT(ncclCommInitAll(NULL, 2, NULL), ncclInvalidArgument, "comm is NULL");
  EXPECT(ncclCommInitAll(two, 0, NULL), ncclInvalidArgument, "ndev = 0");
  CHECK(ncclCommDestroy(NULL));
  CHECK(ncclCommAbort(NULL));
  EXPECT(ncclCommFinalize(NULL), ncclInvalidArgument, "comm is NULL");

  /* A one-rank communicator over TCP, nonblocking config: poll after each call. */
  {
    ncclConfig_t nb = NCCL_CONFIG_INITIALIZER;
    ncclResult_t state = ncclInProgress;
    int polls;
    nb.blocking = 0;
    CHECK(ncclGetUniqueId(&id));
    EXPECT(ncclCommInitRankConfig(&c, 1, id, 0, &nb), ncclInProgress, "");
    for (polls = 0; state == ncclInProgress && polls < 30000; polls++) {
      CHECK(ncclCommGetAsyncError(c, &state));
      if (state == ncclInProgress) sleep_ms(1);
    }
    if (state != ncclSuccess) fail("nonblocking init: state %d", (int)state);
    EXPECT(ncclAllReduce(&x, &y, 1, ncclInt32, ncclProd, c, NULL), ncclInProgress, "");
    for (state = ncclInProgress, polls = 0; state == ncclInProgress && polls < 30000; polls++) {
      CHECK(ncclCommGetAsyncError(c, &state));
      if (state == ncclInProgress) sleep_ms(1);
    }
    if (state != ncclSuccess || y != 5) fail("one-rank allreduce: %d, state %d", (int)y, (int)state);
    CHECK(ncclCommCuDevice(c, &dev));
    if (dev != 0) fail("ncclCommInitRank device %d", dev);
    CHECK(ncclCommFinalize(c));
    EXPECT(ncclAllReduce(&x, &y, 1, ncclInt32, ncclSum, c, NULL), ncclInvalidUsage, "finalized");
    CHECK(ncclCommDestroy(c));
    EXPECT(ncclCommDestroy(c), ncclInvalidUsage, "not a live communicator");
  }

  /* Default devices are 0..ndev-1. */
  CHECK(ncclCommInitAll(two, 2, NULL));
  CHECK(ncclCommCuDevice(two[1], &dev));
  if (dev != 1) fail("ncclCommInitAll without devlist: device %d", dev);
  CHECK(ncclCommDestroy(two[0]));
  CHECK(ncclCommDestroy(two[1]));

  for (code = 0; code <= ncclNumResults; code++) {
    const char* s = ncclGetErrorString((ncclResult_t)code);
    if (!s || !*s) fail("no string for result %d", code);
    if (code > 0 && strcmp(s, ncclGetErrorString((ncclResult_t)(code - 1))) == 0)
      fail("results %d and %d share a string", code - 1, code);
    count_check();
  }
  if (strcmp(ncclGetErrorString(ncclTimeout), ncclGetErrorString((ncclResult_t)1234)) == 0)
    fail("ncclTimeout has the unknown code's string");
}

/* Polls until the communicator leaves ncclInProgress (at most 60 s). */
static ncclResult_t settle(ncclComm_t c) {
  ncclResult_t state = ncclInProgress;
  int polls;
  for (polls = 0; state == ncclInProgress && polls < 60000; polls++) {
    CHECK(ncclCommGetAsyncError(c, &state));
    if (state == ncclInProgress) sleep_ms(1);
  }
  return state;
}

/* One thread, three nonblocking ranks joined through ncclGetUniqueId: each init
 * returns ncclInProgress, so the thread can start them all and then poll; one group
 * with an all-reduce on each returns ncclInProgress and the ranks run it on their
 * own threads. */
static void one_thread_drives_nonblocking_ranks(void) {
  ncclUniqueId id;
  ncclComm_t nb[3];
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  float x[3][1031], y[3][1031];
  int i, j;
  config.blocking = 0;
  CHECK(ncclGetUniqueId(&id));
  for (i = 0; i < 3; i++) EXPECT(ncclCommInitRankConfig(&nb[i], 3, id, i, &config), ncclInProgress, "");
  for (i = 0; i < 3; i++)
    if (settle(nb[i]) != ncclSuccess) fail("nonblocking init of rank %d", i);
  for (i = 0; i < 3; i++)
    for (j = 0; j < 1031; j++) x[i][j] = (float)(i * j), y[i][j] = -1;
  CHECK(ncclGroupStart());
  for (i = 0; i < 3; i++) CHECK(ncclAllReduce(x[i], y[i], 1031, ncclFloat, ncclSum, nb[i], NULL));
  EXPECT(ncclGroupEnd(), ncclInProgress, "");
  for (i = 0; i < 3; i++)
    if (settle(nb[i]) != ncclSuccess) fail("nonblocking grouped all-reduce on rank %d", i);
  for (i = 0; i < 3; i++)
    for (j = 0; j < 1031; j++)
      if (y[i][j] != (float)(3 * j)) fail("nonblocking rank %d y[%d] = %g", i, j, (double)y[i][j]);
  for (i = 0; i < 3; i++) CHECK(ncclCommDestroy(nb[i]));
  count_check();
}

/* ncclCommInitRankScalable with 2 ids (2 roots) on 5 nonblocking ranks of one
 * thread: ranks 0-2 join the first root, 3-4 the second (NCCL's slices), the roots
 * exchange their slices; one grouped all-reduce is checked. Bad nId and NULL ids
 * are refused at once. */
static void two_roots_drive_scalable_ranks(void) {
  ncclUniqueId ids[2];
  ncclComm_t nb[5], c = NULL;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  int32_t x[5], y[5];
  int i, n = 0, r = -1;
  config.blocking = 0;
  CHECK(ncclGetUniqueId(&ids[0]));
  CHECK(ncclGetUniqueId(&ids[1]));
  EXPECT(ncclCommInitRankScalable(&c, 5, 0, 0, ids, NULL), ncclInvalidArgument, "nId = 0");
  EXPECT(ncclCommInitRankScalable(&c, 1, 0, 2, ids, NULL), ncclInvalidArgument, "nId = 2");
  EXPECT(ncclCommInitRankScalable(&c, 5, 0, 2, NULL, NULL), ncclInvalidArgument, "commIds is NULL");
  EXPECT(ncclCommInitRankScalable(&c, 5, 5, 2, ids, NULL), ncclInvalidArgument, "myrank = 5");
  for (i = 0; i < 5; i++)
    EXPECT(ncclCommInitRankScalable(&nb[i], 5, i, 2, ids, &config), ncclInProgress, "");
  for (i = 0; i < 5; i++)
    if (settle(nb[i]) != ncclSuccess) fail("scalable init of rank %d", i);
  for (i = 0; i < 5; i++) {
    CHECK(ncclCommCount(nb[i], &n));
    CHECK(ncclCommUserRank(nb[i], &r));
    if (n != 5 || r != i) fail("scalable comm %d says rank %d of %d", i, r, n);
    x[i] = 10 * (i + 1);
    y[i] = -1;
  }
  CHECK(ncclGroupStart());
  for (i = 0; i < 5; i++) CHECK(ncclAllReduce(&x[i], &y[i], 1, ncclInt32, ncclSum, nb[i], NULL));
  EXPECT(ncclGroupEnd(), ncclInProgress, "");
  for (i = 0; i < 5; i++) {
    if (settle(nb[i]) != ncclSuccess) fail("scalable all-reduce on rank %d", i);
    if (y[i] != 150) fail("scalable all-reduce on rank %d: %d, expected 150", i, (int)y[i]);
  }
  for (i = 0; i < 5; i++) CHECK(ncclCommDestroy(nb[i]));
  count_check();
}

int main(void) {
  pthread_t threads[NRANKS], blocked;
  int i, n = 0;
  int32_t xs[NRANKS], ys[NRANKS];
  unsigned char *out[NRANKS], *in[NRANKS];
  const size_t len = (size_t)4 << 20;
  size_t k;
  double t0 = now(), t_abort;

  init_checks();
  one_thread_drives_nonblocking_ranks();
  two_roots_drive_scalable_ranks();
  CHECK(ncclCommInitAll(comms, NRANKS, devlist));
  for (i = 0; i < NRANKS; i++)
    if (pthread_create(&threads[i], NULL, rank_main, (void*)(intptr_t)i) != 0) fail("pthread_create");
  for (i = 0; i < NRANKS; i++) pthread_join(threads[i], NULL);

  /* One thread drives every rank: an all-reduce and a 4 MiB ring shift in one group. */
  for (i = 0; i < NRANKS; i++) {
    xs[i] = i + 1;
    ys[i] = 0;
    out[i] = malloc(len);
    in[i] = malloc(len);
    memset(out[i], i + 1, len);
    memset(in[i], 0, len);
  }
  CHECK(ncclGroupStart());
  for (i = 0; i < NRANKS; i++) CHECK(ncclAllReduce(&xs[i], &ys[i], 1, ncclInt32, ncclSum, comms[i], NULL));
  for (i = 0; i < NRANKS; i++) {
    CHECK(ncclSend(out[i], len, ncclUint8, (i + 1) % NRANKS, comms[i], NULL));
    CHECK(ncclRecv(in[i], len, ncclUint8, (i + NRANKS - 1) % NRANKS, comms[i], NULL));
  }
  CHECK(ncclGroupEnd());
  for (i = 0; i < NRANKS; i++) {
    if (ys[i] != NRANKS * (NRANKS + 1) / 2) fail("grouped allreduce on rank %d: %d", i, (int)ys[i]);
    for (k = 0; k < len; k++)
      if (in[i][k] != (unsigned char)((i + NRANKS - 1) % NRANKS + 1)) fail("grouped ring shift, rank %d", i);
    free(out[i]);
    free(in[i]);
  }
  count_check();

  /* Abort ends a receive blocked on another thread, and frees the communicator. */
  if (pthread_create(&blocked, NULL, blocked_recv, NULL) != 0) fail("pthread_create");
  sleep_ms(300);
  t_abort = now();
  CHECK(ncclCommAbort(comms[0]));
  pthread_join(blocked, NULL);
  if (aborted_result != ncclInvalidUsage || !strstr(aborted_message, "abort"))
    fail("aborted receive returned %d: %s", (int)aborted_result, aborted_message);
  if (now() - t_abort > 5.0) fail("abort took %.1f s", now() - t_abort);
  EXPECT(ncclCommCount(comms[0], &n), ncclInvalidUsage, "not a live communicator");
  for (i = 1; i < NRANKS; i++) CHECK(ncclCommDestroy(comms[i]));
  EXPECT(ncclAllReduce(xs, ys, 1, ncclInt32, ncclSum, comms[1], NULL), ncclInvalidUsage, "not a live");

  printf("single process OK, %ld checks, %.2f s\n", checks, now() - t0);
  return 0;
}
