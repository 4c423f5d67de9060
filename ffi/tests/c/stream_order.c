/*
 * Stream-ordered calls through the C ABI, on the stub runtimes of tests/stubs/ (which
 * run stream work on a worker thread, later than it was enqueued). One rank per
 * process; TEST_MEM names the runtime whose device memory and streams the rank uses.
 *
 * A *gate* is a host function the program launches on a stream: it blocks that
 * stream until the program opens it. A call made behind a closed gate can only
 * return if it does not wait for its stream; it can only be right if it reads its
 * input after the gate (and the upload before it) and the copies queued after it see
 * its result. Results are checked element by element against sums computed here.
 *
 * TEST_CASE:
 *   order   (any number of ranks) calls behind a gate; an input buffer re-uploaded
 *           between two calls on the stream; two communicators on two streams of one
 *           device, the second finishing while the first's stream is held; a group
 *           over two streams; the default stream; host buffers stay
 *           host-synchronous; a nonblocking communicator. TEST_SYNC=1 (with
 *           MIXCCL_LAUNCH=sync) runs the same without gates, since calls then wait.
 *   killed  (2 ranks) rank 1 exits after a first call; rank 0's next call, enqueued
 *           behind a gate, must release its stream (MIXCCL_TIMEOUT is far beyond the
 *           test's deadline, so only the peer loss can), report the error through
 *           ncclCommGetAsyncError, and the next call must fail with it.
 *   silent  (2 ranks) rank 1 stays but makes no call; rank 0's stream is released
 *           after MIXCCL_TIMEOUT with the error latched as above.
 *   abort   (2 ranks) rank 1 stays silent; rank 0 holds one stream in a call waiting
 *           for it and another behind a gate; ncclCommAbort releases both.
 *   allocs  (any number of ranks, cuda, STUB_IMPLICIT_SYNC=1) what PyTorch's caching
 *           allocator does between calls: a device allocation and a free (device-wide
 *           synchronisation points) right after each call is enqueued, with the call
 *           still waiting for its peers. Each call must still complete and be right
 *           (the library must queue no device work that the held stream waits for).
 *   islands (cuda ranks share the stub NCCL, acl ranks the stub HCCL; TEST_HOSTS
 *           names each rank's host, comma-separated) island collectives behind a gate:
 *           all-reduce (float sum out of and in place, int32 max), all-gather (out of
 *           and in place), broadcast from the last rank, reduce-scatter, at 0, 1, 7
 *           and N elements. Prints the native library's call counts.
 * TEST_RANK, TEST_NRANKS, TEST_ID_FILE: as mixed.c; TEST_DONE_FILE: rank 0 creates it
 * when done, and a silent rank 1 waits for it (60 s at most).
 */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mixccl.h"
#include "nccl.h"

/* The vendor entry points used here, as their public headers declare them (enums
 * and handles spelled as ints and pointers). */
typedef void (*host_fn)(void*);
int cuInit(unsigned flags);
int cuDevicePrimaryCtxRetain(void** ctx, int dev);
int cuCtxPushCurrent_v2(void* ctx);
int cuMemAlloc_v2(unsigned long long* p, size_t n);
int cuMemFree_v2(unsigned long long p);
int cuMemAllocHost_v2(void** p, size_t n);
int cuMemcpyHtoDAsync_v2(unsigned long long dst, const void* src, size_t n, void* stream);
int cuMemcpyDtoHAsync_v2(void* dst, unsigned long long src, size_t n, void* stream);
int cuStreamCreate(void** stream, unsigned flags);
int cuStreamSynchronize(void* stream);
int cuLaunchHostFunc(void* stream, host_fn fn, void* arg);
int hipSetDevice(int dev);
int hipMalloc(void** p, size_t n);
int hipFree(void* p);
int hipHostMalloc(void** p, size_t n, unsigned flags);
int hipMemcpyAsync(void* dst, const void* src, size_t n, int kind, void* stream);
int hipStreamCreateWithFlags(void** stream, unsigned flags);
int hipStreamSynchronize(void* stream);
int hipLaunchHostFunc(void* stream, host_fn fn, void* arg);
int aclInit(const char* config);
int aclrtSetDevice(int32_t dev);
int aclrtMalloc(void** p, size_t n, int policy);
int aclrtFree(void* p);
int aclrtMallocHost(void** p, size_t n);
int aclrtMemcpyAsync(void* dst, size_t destMax, const void* src, size_t n, int kind, void* stream);
int aclrtCreateStream(void** stream);
int aclrtSynchronizeStream(void* stream);
int aclrtLaunchCallback(host_fn fn, void* arg, int block_type, void* stream);
int musaSetDevice(int dev);
int musaMalloc(void** p, size_t n);
int musaFree(void* p);
int musaMallocHost(void** p, size_t n);
int musaMemcpyAsync(void* dst, const void* src, size_t n, int kind, void* stream);
int musaStreamCreateWithFlags(void** stream, unsigned flags);
int musaStreamSynchronize(void* stream);
int musaLaunchHostFunc(void* stream, host_fn fn, void* arg);
int cnrtSetDevice(int dev);
int cnrtMalloc(void** p, size_t n);
int cnrtFree(void* p);
int cnrtHostMalloc(void** p, size_t n);
int cnrtMemcpyAsync_V2(void* dst, void* src, size_t n, void* queue, int dir);
int cnrtQueueCreate(void** queue);
int cnrtQueueSync(void* queue);
int cnrtInvokeHostFunc(void* queue, host_fn fn, void* arg);

static int rank = -1, nranks = 0, sync_mode = 0;
static ncclComm_t comm = NULL;
static long checks = 0;
static const char* mem = "cuda";

static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "rank %d (%s): FAILED: ", rank, mem);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (comm) {
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(comm, &state);
    fprintf(stderr, "rank %d: the communicator's state: %d (%s)\n", rank, (int)state,
            ncclGetLastError(comm));
  }
  exit(1);
}

#define CHECK(call)                                                                \
  do {                                                                             \
    ncclResult_t r_ = (call);                                                      \
    if (r_ != ncclSuccess)                                                         \
      fail("%s:%d: %s returned %d (%s): %s", __FILE__, __LINE__, #call, (int)r_,   \
           ncclGetErrorString(r_), ncclGetLastError(comm));                        \
  } while (0)

#define VENDOR(call)                                                               \
  do {                                                                             \
    int v_ = (call);                                                               \
    if (v_ != 0) fail("%s:%d: %s returned %d", __FILE__, __LINE__, #call, v_);     \
  } while (0)

static int is(const char* m) { return strcmp(mem, m) == 0; }

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static int env_int(const char* name) {
  const char* v = getenv(name);
  if (!v) fail("%s is not set", name);
  return atoi(v);
}

/* ---- the vendor's memory and streams ---- */

static void setup_device(void) {
  void* ctx = NULL;
  if (is("cuda")) {
    VENDOR(cuInit(0));
    VENDOR(cuDevicePrimaryCtxRetain(&ctx, 1));
    VENDOR(cuCtxPushCurrent_v2(ctx));
  } else if (is("hip")) {
    VENDOR(hipSetDevice(1));
  } else if (is("acl")) {
    VENDOR(aclInit(NULL));
    VENDOR(aclrtSetDevice(1));
  } else if (is("musa")) {
    VENDOR(musaSetDevice(1));
  } else if (is("cnrt")) {
    VENDOR(cnrtSetDevice(1));
  } else {
    fail("TEST_MEM=%s: expected cuda, hip, acl, musa or cnrt", mem);
  }
}

static void* new_stream(void) {
  void* s = NULL;
  if (is("cuda")) VENDOR(cuStreamCreate(&s, 1));
  else if (is("hip")) VENDOR(hipStreamCreateWithFlags(&s, 1));
  else if (is("acl")) VENDOR(aclrtCreateStream(&s));
  else if (is("musa")) VENDOR(musaStreamCreateWithFlags(&s, 1));
  else VENDOR(cnrtQueueCreate(&s));
  return s;
}

static void* dev_alloc(size_t n) {
  void* p = NULL;
  unsigned long long d = 0;
  if (is("cuda")) { VENDOR(cuMemAlloc_v2(&d, n)); p = (void*)(uintptr_t)d; }
  else if (is("hip")) VENDOR(hipMalloc(&p, n));
  else if (is("acl")) VENDOR(aclrtMalloc(&p, n, 0));
  else if (is("musa")) VENDOR(musaMalloc(&p, n));
  else VENDOR(cnrtMalloc(&p, n));
  if (!p) fail("allocating %zu device bytes", n);
  return p;
}

static void dev_free(void* p) {
  if (is("cuda")) VENDOR(cuMemFree_v2((unsigned long long)(uintptr_t)p));
  else if (is("hip")) VENDOR(hipFree(p));
  else if (is("acl")) VENDOR(aclrtFree(p));
  else if (is("musa")) VENDOR(musaFree(p));
  else VENDOR(cnrtFree(p));
}

static float* pinned(size_t count) {
  void* p = NULL;
  size_t n = count * sizeof(float);
  if (is("cuda")) VENDOR(cuMemAllocHost_v2(&p, n));
  else if (is("hip")) VENDOR(hipHostMalloc(&p, n, 0));
  else if (is("acl")) VENDOR(aclrtMallocHost(&p, n));
  else if (is("musa")) VENDOR(musaMallocHost(&p, n));
  else VENDOR(cnrtHostMalloc(&p, n));
  if (!p) fail("allocating %zu pinned bytes", n);
  return (float*)p;
}

/* Queues a copy of host `src` to device `dst` on `s`. */
static void upload(void* dst, const float* src, size_t count, void* s) {
  size_t n = count * sizeof(float);
  if (is("cuda")) VENDOR(cuMemcpyHtoDAsync_v2((unsigned long long)(uintptr_t)dst, src, n, s));
  else if (is("hip")) VENDOR(hipMemcpyAsync(dst, src, n, 1, s));
  else if (is("acl")) VENDOR(aclrtMemcpyAsync(dst, n, src, n, 1, s));
  else if (is("musa")) VENDOR(musaMemcpyAsync(dst, src, n, 1, s));
  else VENDOR(cnrtMemcpyAsync_V2(dst, (void*)src, n, s, 0));
}

/* Queues a copy of device `src` to host `dst` on `s`. */
static void download(float* dst, const void* src, size_t count, void* s) {
  size_t n = count * sizeof(float);
  if (is("cuda")) VENDOR(cuMemcpyDtoHAsync_v2(dst, (unsigned long long)(uintptr_t)src, n, s));
  else if (is("hip")) VENDOR(hipMemcpyAsync(dst, src, n, 2, s));
  else if (is("acl")) VENDOR(aclrtMemcpyAsync(dst, n, src, n, 2, s));
  else if (is("musa")) VENDOR(musaMemcpyAsync(dst, src, n, 2, s));
  else VENDOR(cnrtMemcpyAsync_V2(dst, (void*)src, n, s, 2));
}

static void sync_stream(void* s) {
  if (is("cuda")) VENDOR(cuStreamSynchronize(s));
  else if (is("hip")) VENDOR(hipStreamSynchronize(s));
  else if (is("acl")) VENDOR(aclrtSynchronizeStream(s));
  else if (is("musa")) VENDOR(musaStreamSynchronize(s));
  else VENDOR(cnrtQueueSync(s));
}

/* The islands case launches its gates with the stub runtime's test-only
 * stubLaunchHostFunc: an ACL stream needs a report thread for aclrtLaunchCallback,
 * and mixccl subscribes one only to the streams it launches its own holds on. */
static int (*stub_launch)(void*, host_fn, void*);

static void launch(void* s, host_fn fn, void* arg) {
  if (stub_launch) VENDOR(stub_launch(s, fn, arg));
  else if (is("cuda")) VENDOR(cuLaunchHostFunc(s, fn, arg));
  else if (is("hip")) VENDOR(hipLaunchHostFunc(s, fn, arg));
  else if (is("acl")) VENDOR(aclrtLaunchCallback(fn, arg, 1 /* ACL_CALLBACK_BLOCK */, s));
  else if (is("musa")) VENDOR(musaLaunchHostFunc(s, fn, arg));
  else VENDOR(cnrtInvokeHostFunc(s, fn, arg));
}

/* ---- gates ---- */

struct gate {
  int open, passed, expired;
};
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;

/* The host function: waits (60 s at most) for the program to open the gate. */
static void gate_fn(void* arg) {
  struct gate* g = arg;
  struct timespec end;
  clock_gettime(CLOCK_REALTIME, &end);
  end.tv_sec += 60;
  pthread_mutex_lock(&gate_mu);
  while (!g->open) {
    if (pthread_cond_timedwait(&gate_cv, &gate_mu, &end) == ETIMEDOUT) {
      g->expired = 1;
      break;
    }
  }
  g->passed = 1;
  pthread_mutex_unlock(&gate_mu);
}

/* Closes a gate on `s` (not in sync mode: a call would wait for it forever). */
static void gate_close(struct gate* g, void* s) {
  memset(g, 0, sizeof *g);
  if (sync_mode) {
    g->open = g->passed = 1;
    return;
  }
  launch(s, gate_fn, g);
}

static int gate_passed(struct gate* g) {
  pthread_mutex_lock(&gate_mu);
  int p = g->passed;
  pthread_mutex_unlock(&gate_mu);
  return p;
}

static void gate_open(struct gate* g) {
  /* Give a call that wrongly ran ahead of the gate time to do so: a missing
   * dependency then shows as wrong data (the result never depends on this pause). */
  if (!sync_mode) sleep_ms(20);
  pthread_mutex_lock(&gate_mu);
  if (g->passed && !sync_mode) fail("a gate passed before it was opened");
  g->open = 1;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
}

static void gate_check(struct gate* g) {
  if (g->expired) fail("a gate was never opened (60 s)");
}

/* ---- values ---- */

/* Rank r's input element i in pass `salt`: small integers, exact in float. */
static float value(int r, size_t i, int salt) {
  return (float)((r + 1) * 100 + (long)(i % 251) + salt * 7);
}

static float sum_of(size_t i, int salt) {
  float s = 0;
  for (int r = 0; r < nranks; r++) s += value(r, i, salt);
  return s;
}

static void fill(float* h, size_t count, int r, int salt) {
  for (size_t i = 0; i < count; i++) h[i] = value(r, i, salt);
}

static void expect(const char* what, const float* got, size_t count, float (*want)(size_t, int),
                   int salt) {
  for (size_t i = 0; i < count; i++) {
    float w = want(i, salt);
    if (got[i] != w) fail("%s: element %zu is %g, expected %g", what, i, got[i], w);
    checks++;
  }
}

static float from_prev(size_t i, int salt) {
  return value((rank + nranks - 1) % nranks, i, salt);
}

static float from_root(size_t i, int salt) { return value(0, i, salt); }

/* ---- the id, the done file ---- */

static ncclUniqueId share_id_by_file(void) {
  ncclUniqueId id;
  char hex[MIXCCL_UNIQUE_ID_HEX_BYTES];
  const char* path = getenv("TEST_ID_FILE");
  char tmp[4096];
  FILE* f;
  if (!path) fail("TEST_ID_FILE is not set");
  if (rank == 0) {
    CHECK(ncclGetUniqueId(&id));
    CHECK(mixcclUniqueIdToHex(&id, hex));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fputs(hex, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) fail("writing %s", path);
    return id;
  }
  for (int tries = 0; tries < 3000; tries++) {
    f = fopen(path, "r");
    if (f) {
      size_t got = fread(hex, 1, sizeof hex - 1, f);
      fclose(f);
      hex[got] = 0;
      CHECK(mixcclUniqueIdFromHex(hex, &id));
      return id;
    }
    sleep_ms(10);
  }
  fail("no unique id in %s after 30 s", path);
  return id;
}

/* TEST_DONE_FILE with `suffix` appended. */
static const char* signal_path(const char* suffix) {
  static char path[4096];
  const char* base = getenv("TEST_DONE_FILE");
  if (!base) fail("TEST_DONE_FILE is not set");
  snprintf(path, sizeof path, "%s%s", base, suffix);
  return path;
}

static void say(const char* suffix) {
  FILE* f = fopen(signal_path(suffix), "w");
  if (!f || fclose(f) != 0) fail("cannot create %s", signal_path(suffix));
}

static void wait_for(const char* suffix) {
  for (int tries = 0; tries < 6000; tries++) {
    if (access(signal_path(suffix), F_OK) == 0) return;
    sleep_ms(10);
  }
  fail("rank 0 did not create %s within 60 s", signal_path(suffix));
}

static void say_done(void) { say(""); }
static void wait_done(void) { wait_for(""); }

/* ---- the cases ---- */

#define N 4099 /* floats per buffer: not a multiple of anything the ring cuts by */

static void case_order(void) {
  void *s1 = new_stream(), *s2 = new_stream();
  float *h_in = pinned(N), *h_in2 = pinned(N), *h_a = pinned(N * 8), *h_b = pinned(N * 8);
  void *d_send = dev_alloc(N * 4), *d_a = dev_alloc(N * 4 * 8), *d_b = dev_alloc(N * 4 * 8);
  ncclComm_t comm2 = NULL;
  struct gate g;
  if (nranks > 8) fail("at most 8 ranks");

  /* 0. One call on each stream first: mixccl then has subscribed the ACL streams to
   * its report thread, which is what lets this program launch gates on them. */
  fill(h_in, N, rank, 0);
  upload(d_send, h_in, N, s1);
  CHECK(ncclAllReduce(d_send, d_a, N, ncclFloat32, ncclSum, comm, s1));
  CHECK(ncclAllReduce(d_a, d_a, N, ncclFloat32, ncclSum, comm, s2));
  CHECK(ncclAllReduce(d_send, d_b, N, ncclFloat32, ncclSum, comm, NULL));
  sync_stream(s1);
  sync_stream(s2);
  sync_stream(NULL);

  /* 1. Behind a gate: upload, gate, all-reduce, download; the call returns at once. */
  fill(h_in, N, rank, 1);
  for (size_t i = 0; i < N; i++) h_a[i] = -1;
  upload(d_send, h_in, N, s1);
  gate_close(&g, s1);
  CHECK(ncclAllReduce(d_send, d_a, N, ncclFloat32, ncclSum, comm, s1));
  download(h_a, d_a, N, s1);
  if (gate_passed(&g) && !sync_mode) fail("the stream passed the gate before it was opened");
  gate_open(&g);
  sync_stream(s1);
  gate_check(&g);
  expect("all-reduce behind a gate", h_a, N, sum_of, 1);

  /* 2. The input re-uploaded between two calls (all queued behind a gate): each call
   * reads what the stream held when it reached it. Then an all-gather and a
   * broadcast from the same buffer. */
  fill(h_in, N, rank, 2);
  fill(h_in2, N, rank, 3);
  gate_close(&g, s1);
  upload(d_send, h_in, N, s1);
  CHECK(ncclAllReduce(d_send, d_a, N, ncclFloat32, ncclSum, comm, s1));
  upload(d_send, h_in2, N, s1);
  CHECK(ncclAllReduce(d_send, d_b, N, ncclFloat32, ncclSum, comm, s1));
  download(h_a, d_a, N, s1);
  download(h_b, d_b, N, s1);
  gate_open(&g);
  sync_stream(s1);
  gate_check(&g);
  expect("first of two calls on one input buffer", h_a, N, sum_of, 2);
  expect("second of two calls on one input buffer", h_b, N, sum_of, 3);
  CHECK(ncclAllGather(d_send, d_a, N, ncclFloat32, comm, s1));
  CHECK(ncclBroadcast(d_send, d_b, N, ncclFloat32, 0, comm, s1));
  download(h_a, d_a, N * nranks, s1);
  download(h_b, d_b, N, s1);
  sync_stream(s1);
  for (int r = 0; r < nranks; r++)
    for (size_t i = 0; i < N; i++) {
      if (h_a[r * N + i] != value(r, i, 3))
        fail("all-gather: block %d element %zu is %g", r, i, h_a[r * N + i]);
      checks++;
    }
  expect("broadcast", h_b, N, from_root, 3);

  /* 3. Two communicators on two streams of one device: the second finishes while the
   * first's stream is still held. */
  CHECK(ncclCommSplit(comm, 0, rank, &comm2, NULL));
  fill(h_in, N, rank, 4);
  upload(d_send, h_in, N, s1);
  gate_close(&g, s1);
  CHECK(ncclAllReduce(d_send, d_a, N, ncclFloat32, ncclSum, comm, s1));
  download(h_a, d_a, N, s1);
  fill(h_in2, N, rank, 5);
  upload(d_b, h_in2, N, s2);
  CHECK(ncclAllReduce(d_b, d_b, N, ncclFloat32, ncclSum, comm2, s2));
  download(h_b, d_b, N, s2);
  /* ACL runs every callback of a device on one report thread, so while the gate
   * blocks it no other stream's callback (mixccl's hold on s2) can run. */
  if (!is("acl")) {
    sync_stream(s2);
    expect("in-place all-reduce on the second communicator", h_b, N, sum_of, 5);
    if (gate_passed(&g) && !sync_mode) fail("the first stream passed its gate early");
  }
  gate_open(&g);
  sync_stream(s2);
  expect("in-place all-reduce on the second communicator", h_b, N, sum_of, 5);
  sync_stream(s1);
  gate_check(&g);
  expect("all-reduce on the first communicator", h_a, N, sum_of, 4);

  /* 4. A group over two streams, behind a gate on the first: a ring shift (send on
   * s1, receive on s2) and an all-reduce on s1, one unit. */
  fill(h_in, N, rank, 6);
  /* Several uploads keep s1 busy, so s2 reaches the unit first: on ACL, whose
   * callbacks share one report thread, a hold on s2 that started before the unit was
   * ready would keep the gate on s1 from ever running. */
  for (int k = 0; k < 20; k++) upload(d_send, h_in, N, s1);
  gate_close(&g, s1);
  CHECK(ncclGroupStart());
  CHECK(ncclSend(d_send, N, ncclFloat32, (rank + 1) % nranks, comm, s1));
  CHECK(ncclRecv(d_b, N, ncclFloat32, (rank + nranks - 1) % nranks, comm, s2));
  CHECK(ncclAllReduce(d_send, d_a, N, ncclFloat32, ncclSum, comm, s1));
  CHECK(ncclGroupEnd());
  download(h_a, d_a, N, s1);
  download(h_b, d_b, N, s2);
  gate_open(&g);
  sync_stream(s1);
  sync_stream(s2);
  gate_check(&g);
  expect("group all-reduce", h_a, N, sum_of, 6);
  expect("group ring shift", h_b, N, from_prev, 6);

  /* 5. The default (legacy) stream, behind a gate: mixccl's own streams must not
   * wait for it. */
  size_t part = N / (size_t)nranks;
  fill(h_in, N, rank, 8);
  upload(d_send, h_in, N, NULL);
  gate_close(&g, NULL);
  CHECK(ncclReduceScatter(d_send, d_a, part, ncclFloat32, ncclSum, comm, NULL));
  download(h_a, d_a, part, NULL);
  gate_open(&g);
  sync_stream(NULL);
  gate_check(&g);
  for (size_t i = 0; i < part; i++) {
    float w = sum_of((size_t)rank * part + i, 8);
    if (h_a[i] != w) fail("reduce-scatter on the default stream: element %zu is %g, expected %g", i, h_a[i], w);
    checks++;
  }

  /* 6. Host buffers stay host-synchronous: the result is there when the call returns. */
  float* host = malloc(N * sizeof(float));
  fill(host, N, rank, 7);
  CHECK(ncclAllReduce(host, host, N, ncclFloat32, ncclSum, comm, s1));
  expect("host all-reduce", host, N, sum_of, 7);
  free(host);

  /* 7. A nonblocking communicator: a device call is stream-ordered too, returns
   * ncclSuccess (the enqueue is complete, as in NCCL) and is not reported as in
   * progress while its stream is held. With MIXCCL_LAUNCH=sync it is queued instead:
   * ncclInProgress, then poll. */
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  ncclComm_t nb = NULL;
  int state = ncclInProgress;
  config.blocking = 0;
  ncclResult_t r = ncclCommSplit(comm, 0, rank, &nb, &config);
  if (r != ncclInProgress && r != ncclSuccess) fail("nonblocking split returned %d", (int)r);
  for (int tries = 0; tries < 30000 && state == ncclInProgress; tries++) {
    CHECK(ncclCommGetAsyncError(nb, (ncclResult_t*)&state));
    if (state == ncclInProgress) sleep_ms(1);
  }
  if (state != ncclSuccess) fail("nonblocking split ended in %d", state);
  fill(h_in, N, rank, 9);
  upload(d_send, h_in, N, s1);
  gate_close(&g, s1);
  r = ncclAllReduce(d_send, d_a, N, ncclFloat32, ncclSum, nb, s1);
  if (r != (sync_mode ? ncclInProgress : ncclSuccess))
    fail("all-reduce on a nonblocking communicator returned %d", (int)r);
  CHECK(ncclCommGetAsyncError(nb, (ncclResult_t*)&state));
  if (!sync_mode && state != ncclSuccess)
    fail("a stream-ordered call is reported as %d while its stream is held", state);
  for (int tries = 0; tries < 30000 && state == ncclInProgress; tries++) {
    sleep_ms(1);
    CHECK(ncclCommGetAsyncError(nb, (ncclResult_t*)&state));
  }
  if (state != ncclSuccess) fail("the nonblocking all-reduce ended in %d", state);
  download(h_a, d_a, N, s1);
  gate_open(&g);
  sync_stream(s1);
  gate_check(&g);
  expect("all-reduce on a nonblocking communicator", h_a, N, sum_of, 9);
  CHECK(ncclCommDestroy(nb));

  CHECK(ncclCommDestroy(comm2));
  dev_free(d_send);
  dev_free(d_a);
  dev_free(d_b);
}

/* One good call, waited for. */
static void warm_up(void* s, void* d, float* h) {
  fill(h, N, rank, 1);
  upload(d, h, N, s);
  CHECK(ncclAllReduce(d, d, N, ncclFloat32, ncclSum, comm, s));
  download(h, d, N, s);
  sync_stream(s);
  expect("first all-reduce", h, N, sum_of, 1);
}

/* Rank 0's side of killed and silent: a call behind a gate that cannot complete; its
 * stream must come back, the error must latch and fail the next call. */
static void lost_peer(const char* what) {
  void* s = new_stream();
  float* h = pinned(N);
  void* d = dev_alloc(N * 4);
  struct gate g;
  int err = ncclSuccess;
  warm_up(s, d, h);
  if (rank == 0) say(".warm");
  if (rank == 1) {
    wait_for(".warm"); /* rank 0 has all of the first call's data */
    if (strcmp(what, "killed") == 0) _exit(0); /* no goodbye: the peer just dies */
    wait_done();
    CHECK(ncclCommAbort(comm));
    comm = NULL;
    return;
  }
  gate_close(&g, s);
  CHECK(ncclAllReduce(d, d, N, ncclFloat32, ncclSum, comm, s));
  download(h, d, N, s);
  gate_open(&g);
  sync_stream(s); /* returns only when the call has released the stream */
  gate_check(&g);
  CHECK(ncclCommGetAsyncError(comm, (ncclResult_t*)&err));
  if (err == ncclSuccess || err == ncclInProgress)
    fail("%s peer: ncclCommGetAsyncError gave %d after the stream was released", what, err);
  ncclResult_t next = ncclAllReduce(d, d, N, ncclFloat32, ncclSum, comm, s);
  if ((int)next != err)
    fail("%s peer: the next call returned %d, expected the latched %d", what, (int)next, err);
  printf("rank 0: %s peer: stream released, error %d (%s): %s\n", what, err,
         ncclGetErrorString((ncclResult_t)err), ncclGetLastError(comm));
  say_done();
  CHECK(ncclCommDestroy(comm));
  comm = NULL;
}

/* Rank 0 holds two streams (one in a call waiting for the silent rank 1, one behind
 * a gate); ncclCommAbort must release both. */
static void case_abort(void) {
  void *s1 = new_stream(), *s2 = new_stream();
  float* h = pinned(N);
  void *d1 = dev_alloc(N * 4), *d2 = dev_alloc(N * 4);
  struct gate g;
  warm_up(s1, d1, h);
  if (rank == 1) {
    wait_done();
    CHECK(ncclCommAbort(comm));
    comm = NULL;
    return;
  }
  CHECK(ncclAllReduce(d1, d1, N, ncclFloat32, ncclSum, comm, s1));
  gate_close(&g, s2);
  CHECK(ncclAllReduce(d2, d2, N, ncclFloat32, ncclSum, comm, s2));
  CHECK(ncclCommAbort(comm));
  comm = NULL;
  sync_stream(s1); /* MIXCCL_TIMEOUT is beyond the deadline: only the abort releases it */
  gate_open(&g);
  sync_stream(s2);
  gate_check(&g);
  printf("rank 0: abort released both streams\n");
  say_done();
}

/* Calls followed at once by a device allocation and a free, as a framework's allocator
 * makes them: all-reduce in and out of place, all-gather, broadcast, a send/recv ring. */
static void case_allocs(void) {
  void* s = new_stream();
  size_t n = N;
  float *h_in = pinned(n), *h_out = pinned(n * nranks);
  void *d_in = dev_alloc(n * 4), *d_out = dev_alloc(n * 4 * nranks);
  for (int salt = 1; salt <= 4; salt++) {
    fill(h_in, n, rank, salt);
    upload(d_in, h_in, n, s);
    CHECK(ncclAllReduce(d_in, d_out, n, ncclFloat32, ncclSum, comm, s));
    dev_free(dev_alloc(1 << 20)); /* while the call may still wait for its peers */
    CHECK(ncclAllReduce(d_out, d_out, n, ncclFloat32, ncclSum, comm, s));
    dev_free(dev_alloc(4096));
    download(h_out, d_out, n, s);
    sync_stream(s);
    for (size_t i = 0; i < n; i++) {
      float want = sum_of(i, salt) * (float)nranks;
      if (h_out[i] != want) fail("all-reduce twice, pass %d: element %zu is %g, expected %g", salt, i, h_out[i], want);
      checks++;
    }
    CHECK(ncclAllGather(d_in, d_out, n, ncclFloat32, comm, s));
    dev_free(dev_alloc(8192));
    download(h_out, d_out, n * nranks, s);
    sync_stream(s);
    for (int r = 0; r < nranks; r++)
      for (size_t i = 0; i < n; i++) {
        float want = value(r, i, salt);
        if (h_out[r * n + i] != want) fail("all-gather, pass %d: block %d element %zu is %g, expected %g", salt, r, i, h_out[r * n + i], want);
        checks++;
      }
    CHECK(ncclBroadcast(d_in, d_out, n, ncclFloat32, 0, comm, s));
    dev_free(dev_alloc(4096));
    CHECK(ncclGroupStart());
    CHECK(ncclSend(d_in, n, ncclFloat32, (rank + 1) % nranks, comm, s));
    CHECK(ncclRecv((float*)d_out + n, n, ncclFloat32, (rank + nranks - 1) % nranks, comm, s));
    CHECK(ncclGroupEnd());
    dev_free(dev_alloc(4096));
    download(h_out, d_out, n * 2, s);
    sync_stream(s);
    expect("broadcast", h_out, n, from_root, salt);
    expect("send/recv ring", h_out + n, n, from_prev, salt);
  }
  dev_free(d_in);
  dev_free(d_out);
}

/* The native library's count of `name` calls in this process (stubCclCount). */
static long native_count(const char* name) {
  const char* path = getenv(is("acl") ? "MIXCCL_HCCL_LIB" : "MIXCCL_NCCL_LIB");
  void* lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
  long (*count)(const char*) = NULL;
  if (!lib) fail("cannot open the stub collective library %s", path ? path : "(unset)");
  *(void**)&count = dlsym(lib, "stubCclCount");
  if (!count) fail("%s has no stubCclCount", path);
  long n = count(name);
  dlclose(lib);
  return n;
}

static float max_of(size_t i, int salt) { return value(nranks - 1, i, salt); }
static float from_last(size_t i, int salt) { return value(nranks - 1, i, salt); }

/* Runs the upload, `call` and the download behind a gate on `s`, and checks. */
/* `call` behind a gate on `s` (an empty call has no device buffer to order by:
 * it waits for its stream on the host, so no gate then). */
#define GATED(what, call)                                                          \
  do {                                                                             \
    int saved_ = sync_mode;                                                        \
    if (n == 0) sync_mode = 1;                                                     \
    gate_close(&g, s);                                                             \
    sync_mode = saved_;                                                            \
    CHECK(call);                                                                   \
    if (gate_passed(&g) && !sync_mode && n > 0)                                    \
      fail("%s: the stream passed the gate early", what);                          \
  } while (0)

/* Every rank's block of n elements, in rank order. */
static void expect_gathered(const char* what, const float* got, size_t n, int salt) {
  for (int r = 0; r < nranks; r++)
    for (size_t i = 0; i < n; i++) {
      if (got[r * n + i] != value(r, i, salt))
        fail("%s of %zu: block %d element %zu is %g", what, n, r, i, got[r * n + i]);
      checks++;
    }
}

static void gate_open_if(struct gate* g, size_t n) {
  if (n > 0) gate_open(g);
}

static void case_islands(void) {
  void* s = new_stream();
  const size_t counts[] = {0, 1, 7, N};
  float *h_in = pinned(N * 8), *h_out = pinned(N * 8);
  void *d_in = dev_alloc(N * 4 * 8), *d_out = dev_alloc(N * 4 * 8);
  struct gate g;
  if (nranks > 8) fail("at most 8 ranks");
  if (is("acl")) {
    const char* path = getenv("MIXCCL_ACL_LIB");
    void* lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
    if (lib) *(void**)&stub_launch = dlsym(lib, "stubLaunchHostFunc");
    if (!stub_launch) fail("no stubLaunchHostFunc in %s", path ? path : "(unset)");
  }
  for (int ci = 0; ci < 4; ci++) {
    size_t n = counts[ci];
    int salt = 10 + ci;
    int32_t* ints = (int32_t*)h_in;

    fill(h_in, n, rank, salt);
    upload(d_in, h_in, n, s);
    GATED("all-reduce", ncclAllReduce(d_in, d_out, n, ncclFloat32, ncclSum, comm, s));
    download(h_out, d_out, n, s);
    gate_open_if(&g, n);
    sync_stream(s);
    gate_check(&g);
    expect("island all-reduce", h_out, n, sum_of, salt);

    upload(d_out, h_in, n, s);
    GATED("in-place all-reduce", ncclAllReduce(d_out, d_out, n, ncclFloat32, ncclSum, comm, s));
    download(h_out, d_out, n, s);
    gate_open_if(&g, n);
    sync_stream(s);
    expect("island in-place all-reduce", h_out, n, sum_of, salt);

    for (size_t i = 0; i < n; i++) ints[i] = (int32_t)value(rank, i, salt);
    upload(d_out, h_in, n, s);
    GATED("int32 max", ncclAllReduce(d_out, d_out, n, ncclInt32, ncclMax, comm, s));
    download(h_out, d_out, n, s);
    gate_open_if(&g, n);
    sync_stream(s);
    for (size_t i = 0; i < n; i++) {
      int32_t got = ((int32_t*)h_out)[i], want = (int32_t)max_of(i, salt);
      if (got != want) fail("island int32 max: element %zu is %d, expected %d", i, got, want);
      checks++;
    }

    fill(h_in, n, rank, salt);
    upload(d_in, h_in, n, s);
    GATED("all-gather", ncclAllGather(d_in, d_out, n, ncclFloat32, comm, s));
    download(h_out, d_out, n * nranks, s);
    gate_open_if(&g, n);
    sync_stream(s);
    expect_gathered("island all-gather", h_out, n, salt);

    float* own = (float*)d_out + (size_t)rank * n;
    upload(own, h_in, n, s);
    GATED("in-place all-gather", ncclAllGather(own, d_out, n, ncclFloat32, comm, s));
    download(h_out, d_out, n * nranks, s);
    gate_open_if(&g, n);
    sync_stream(s);
    expect_gathered("island in-place all-gather", h_out, n, salt);

    GATED("broadcast", ncclBroadcast(d_in, d_out, n, ncclFloat32, nranks - 1, comm, s));
    download(h_out, d_out, n, s);
    gate_open_if(&g, n);
    sync_stream(s);
    expect("island broadcast", h_out, n, from_last, salt);

    fill(h_in, n * nranks, rank, salt);
    upload(d_in, h_in, n * nranks, s);
    GATED("reduce-scatter", ncclReduceScatter(d_in, d_out, n, ncclFloat32, ncclSum, comm, s));
    download(h_out, d_out, n, s);
    gate_open_if(&g, n);
    sync_stream(s);
    for (size_t i = 0; i < n; i++) {
      float w = sum_of((size_t)rank * n + i, salt);
      if (h_out[i] != w) fail("island reduce-scatter of %zu: element %zu is %g, expected %g", n, i, h_out[i], w);
      checks++;
    }
  }
  printf("rank %d NATIVE all_reduce=%ld reduce_scatter=%ld all_gather=%ld broadcast=%ld abort=%ld\n",
         rank, native_count("all_reduce"), native_count("reduce_scatter"),
         native_count("all_gather"), native_count("broadcast"), native_count("abort"));
  dev_free(d_in);
  dev_free(d_out);
}

/* For the islands case: this rank's runtime and host, set before mixccl starts. */
static void island_env(void) {
  char hosts[256], *save = NULL, *h;
  const char* list = getenv("TEST_HOSTS");
  int r = 0;
  setenv("MIXCCL_DEVICES", mem, 1);
  if (!list) return;
  snprintf(hosts, sizeof hosts, "%s", list);
  for (h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save), r++)
    if (r == rank) setenv("MIXCCL_HOST_ID", h, 1);
}

int main(void) {
  ncclUniqueId id;
  const char* which = getenv("TEST_CASE");
  rank = env_int("TEST_RANK");
  nranks = env_int("TEST_NRANKS");
  sync_mode = getenv("TEST_SYNC") != NULL;
  if (getenv("TEST_MEM")) mem = getenv("TEST_MEM");
  if (!which) fail("TEST_CASE is not set");
  if (strcmp(which, "islands") == 0 || getenv("TEST_HOSTS")) island_env();
  setup_device();
  id = share_id_by_file();
  CHECK(ncclCommInitRank(&comm, nranks, id, rank));
  if (strcmp(which, "order") == 0) case_order();
  else if (strcmp(which, "killed") == 0 || strcmp(which, "silent") == 0) lost_peer(which);
  else if (strcmp(which, "abort") == 0) case_abort();
  else if (strcmp(which, "allocs") == 0) case_allocs();
  else if (strcmp(which, "islands") == 0) case_islands();
  else fail("TEST_CASE=%s: expected order, killed, silent, abort, allocs or islands", which);
  if (comm) CHECK(ncclCommDestroy(comm));
  printf("rank %d of %d (%s): stream_order %s OK, %ld checks\n", rank, nranks, mem, which, checks);
  return 0;
}
