/*
 * The C ABI on device memory of mixed vendors: one rank per process, each keeping
 * its buffers where TEST_MEM says (cuda, hip, acl, musa, cnrt: the stub runtimes of
 * tests/stubs/, linked into this program and named to mixccl by MIXCCL_*_LIB; host:
 * malloc). Every collective x data type x op x count {0, 1, 7, 1031, 65537}, in place
 * and out of place, and a grouped send/recv ring, checked element by element.
 *
 * Inputs are uploaded with the vendor's asynchronous copy from pinned memory on a
 * vendor stream that is NOT synchronised before the call: mixccl must order the call
 * after it (the stubs run queued work later, on a worker thread, so a missed
 * dependency reads stale device memory). Results are copied back on the same stream
 * after the call, which must order them after its result (calls on device buffers
 * are stream-ordered unless MIXCCL_LAUNCH=sync).
 *
 * TEST_RANK, TEST_NRANKS, TEST_ID_FILE: as collectives.c (rank 0 writes the id).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mixccl.h"
#include "nccl.h"

/* The vendor entry points used here, as their public headers declare them (enums
 * and handles spelled as ints and pointers). */
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
int hipSetDevice(int dev);
int hipMalloc(void** p, size_t n);
int hipFree(void* p);
int hipHostMalloc(void** p, size_t n, unsigned flags);
int hipMemcpyAsync(void* dst, const void* src, size_t n, int kind, void* stream);
int hipStreamCreateWithFlags(void** stream, unsigned flags);
int hipStreamSynchronize(void* stream);
int aclInit(const char* config);
int aclrtSetDevice(int32_t dev);
int aclrtMalloc(void** p, size_t n, int policy);
int aclrtFree(void* p);
int aclrtMallocHost(void** p, size_t n);
int aclrtMemcpyAsync(void* dst, size_t destMax, const void* src, size_t n, int kind, void* stream);
int aclrtCreateStream(void** stream);
int aclrtSynchronizeStream(void* stream);
int musaSetDevice(int dev);
int musaMalloc(void** p, size_t n);
int musaFree(void* p);
int musaMallocHost(void** p, size_t n);
int musaMemcpyAsync(void* dst, const void* src, size_t n, int kind, void* stream);
int musaStreamCreateWithFlags(void** stream, unsigned flags);
int musaStreamSynchronize(void* stream);
int cnrtSetDevice(int dev);
int cnrtMalloc(void** p, size_t n);
int cnrtFree(void* p);
int cnrtHostMalloc(void** p, size_t n);
int cnrtMemcpyAsync_V2(void* dst, void* src, size_t n, void* queue, int dir);
int cnrtQueueCreate(void** queue);
int cnrtQueueSync(void* queue);

static int rank = -1, nranks = 0;
static ncclComm_t comm = NULL;
static long checks = 0;
static const char* mem = "host";
static void* stream = NULL; /* the vendor stream inputs are uploaded on */

static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "rank %d (%s): FAILED: ", rank, mem);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
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

/* Device memory of TEST_MEM's runtime (NULL for zero bytes, as callers may pass). */
static void* dev_alloc(size_t n) {
  void* p = NULL;
  unsigned long long d = 0;
  if (n == 0) return NULL;
  if (is("cuda")) { VENDOR(cuMemAlloc_v2(&d, n)); p = (void*)(uintptr_t)d; }
  else if (is("hip")) VENDOR(hipMalloc(&p, n));
  else if (is("acl")) VENDOR(aclrtMalloc(&p, n, 0));
  else if (is("musa")) VENDOR(musaMalloc(&p, n));
  else if (is("cnrt")) VENDOR(cnrtMalloc(&p, n));
  else p = malloc(n);
  if (!p) fail("allocating %zu bytes", n);
  return p;
}

static void sync_stream(void);

/* Frees after the stream is done with the buffer: calls are stream-ordered, and the
 * stubs' free does not wait for the device as cudaFree does. */
static void dev_free(void* p) {
  if (!p) return;
  sync_stream();
  if (is("cuda")) VENDOR(cuMemFree_v2((unsigned long long)(uintptr_t)p));
  else if (is("hip")) VENDOR(hipFree(p));
  else if (is("acl")) VENDOR(aclrtFree(p));
  else if (is("musa")) VENDOR(musaFree(p));
  else if (is("cnrt")) VENDOR(cnrtFree(p));
  else free(p);
}

static void* pinned(size_t n) {
  void* p = NULL;
  if (is("cuda")) VENDOR(cuMemAllocHost_v2(&p, n));
  else if (is("hip")) VENDOR(hipHostMalloc(&p, n, 0));
  else if (is("acl")) VENDOR(aclrtMallocHost(&p, n));
  else if (is("musa")) VENDOR(musaMallocHost(&p, n));
  else if (is("cnrt")) VENDOR(cnrtHostMalloc(&p, n));
  else p = malloc(n);
  if (!p) fail("allocating %zu pinned bytes", n);
  return p;
}

/* Queues a copy of host `src` to `dst` on `stream`, not waited for. */
static void upload(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  if (is("cuda")) VENDOR(cuMemcpyHtoDAsync_v2((unsigned long long)(uintptr_t)dst, src, n, stream));
  else if (is("hip")) VENDOR(hipMemcpyAsync(dst, src, n, 1, stream));
  else if (is("acl")) VENDOR(aclrtMemcpyAsync(dst, n, src, n, 1, stream));
  else if (is("musa")) VENDOR(musaMemcpyAsync(dst, src, n, 1, stream));
  else if (is("cnrt")) VENDOR(cnrtMemcpyAsync_V2(dst, (void*)src, n, stream, 0));
  else memcpy(dst, src, n);
}

/* Waits for everything queued on `stream`. */
static void sync_stream(void) {
  if (is("cuda")) VENDOR(cuStreamSynchronize(stream));
  else if (is("hip")) VENDOR(hipStreamSynchronize(stream));
  else if (is("acl")) VENDOR(aclrtSynchronizeStream(stream));
  else if (is("musa")) VENDOR(musaStreamSynchronize(stream));
  else if (is("cnrt")) VENDOR(cnrtQueueSync(stream));
}

/* Copies `src` to host `dst` and waits. */
static void download(void* dst, const void* src, size_t n) {
  if (n == 0) return;
  if (is("cuda")) {
    VENDOR(cuMemcpyDtoHAsync_v2(dst, (unsigned long long)(uintptr_t)src, n, stream));
    VENDOR(cuStreamSynchronize(stream));
  } else if (is("hip")) {
    VENDOR(hipMemcpyAsync(dst, src, n, 2, stream));
    VENDOR(hipStreamSynchronize(stream));
  } else if (is("acl")) {
    VENDOR(aclrtMemcpyAsync(dst, n, src, n, 2, stream));
    VENDOR(aclrtSynchronizeStream(stream));
  } else if (is("musa")) {
    VENDOR(musaMemcpyAsync(dst, src, n, 2, stream));
    VENDOR(musaStreamSynchronize(stream));
  } else if (is("cnrt")) {
    VENDOR(cnrtMemcpyAsync_V2(dst, (void*)src, n, stream, 2));
    VENDOR(cnrtQueueSync(stream));
  } else {
    memcpy(dst, src, n);
  }
}

static void setup_device(void) {
  void* ctx = NULL;
  if (is("cuda")) {
    VENDOR(cuInit(0));
    VENDOR(cuDevicePrimaryCtxRetain(&ctx, 1));
    VENDOR(cuCtxPushCurrent_v2(ctx));
    VENDOR(cuStreamCreate(&stream, 1));
  } else if (is("hip")) {
    VENDOR(hipSetDevice(1));
    VENDOR(hipStreamCreateWithFlags(&stream, 1));
  } else if (is("acl")) {
    VENDOR(aclInit(NULL));
    VENDOR(aclrtSetDevice(1));
    VENDOR(aclrtCreateStream(&stream));
  } else if (is("musa")) {
    VENDOR(musaSetDevice(1));
    VENDOR(musaStreamCreateWithFlags(&stream, 1));
  } else if (is("cnrt")) {
    VENDOR(cnrtSetDevice(1));
    VENDOR(cnrtQueueCreate(&stream));
  } else if (!is("host")) {
    fail("TEST_MEM=%s: expected cuda, hip, acl, musa, cnrt or host", mem);
  }
}

static const ncclDataType_t TYPES[] = {ncclInt8,    ncclUint8,   ncclInt32,   ncclUint32,
                                       ncclInt64,   ncclUint64,  ncclFloat16, ncclFloat32,
                                       ncclFloat64, ncclBfloat16};
static const char* TYPE_NAMES[] = {"int8",    "uint8", "int32",  "uint32", "int64",
                                   "uint64",  "half",  "float",  "double", "bfloat16"};
static const char* OP_NAMES[] = {"sum", "prod", "max", "min", "avg"};
static const size_t COUNTS[] = {0, 1, 7, 1031, 65537};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])
#define NCOUNTS (sizeof COUNTS / sizeof COUNTS[0])
#define MAX_COUNT 65537
#define DATA (-1) /* "op" of data-movement inputs */

static size_t tsize(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    default: return 8;
  }
}

static int is_unsigned(ncclDataType_t t) {
  return t == ncclUint8 || t == ncclUint32 || t == ncclUint64;
}

/* Exact conversions for the small integers used here. */
static uint16_t to_half(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  if ((b & 0x7fffffffu) == 0) return (uint16_t)(b >> 16);
  return (uint16_t)(((b >> 16) & 0x8000u) | ((((b >> 23) & 0xffu) - 127u + 15u) << 10) |
                    ((b >> 13) & 0x3ffu));
}

static float from_half(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, b;
  float f;
  if (e == 0 && m == 0) b = s;
  else if (e == 0 || e == 31) return 1e30f; /* never produced here: a mismatch */
  else b = s | ((e - 15u + 127u) << 23) | (m << 13);
  memcpy(&f, &b, 4);
  return f;
}

static void put(ncclDataType_t t, void* buf, size_t i, int64_t v) {
  char* p = (char*)buf + i * tsize(t);
  float f = (float)v;
  uint32_t b;
  uint16_t h;
  switch (t) {
    case ncclInt8: { int8_t x = (int8_t)v; memcpy(p, &x, 1); break; }
    case ncclUint8: { uint8_t x = (uint8_t)v; memcpy(p, &x, 1); break; }
    case ncclInt32: { int32_t x = (int32_t)v; memcpy(p, &x, 4); break; }
    case ncclUint32: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    case ncclInt64: memcpy(p, &v, 8); break;
    case ncclUint64: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
    case ncclFloat16: h = to_half(f); memcpy(p, &h, 2); break;
    case ncclFloat32: memcpy(p, &f, 4); break;
    case ncclFloat64: { double x = (double)v; memcpy(p, &x, 8); break; }
    case ncclBfloat16: memcpy(&b, &f, 4); h = (uint16_t)(b >> 16); memcpy(p, &h, 2); break;
    default: fail("bad type %d", (int)t);
  }
}

static double get(ncclDataType_t t, const void* buf, size_t i) {
  const char* p = (const char*)buf + i * tsize(t);
  uint32_t b;
  uint16_t h;
  float f;
  switch (t) {
    case ncclInt8: { int8_t x; memcpy(&x, p, 1); return x; }
    case ncclUint8: { uint8_t x; memcpy(&x, p, 1); return x; }
    case ncclInt32: { int32_t x; memcpy(&x, p, 4); return x; }
    case ncclUint32: { uint32_t x; memcpy(&x, p, 4); return x; }
    case ncclInt64: { int64_t x; memcpy(&x, p, 8); return (double)x; }
    case ncclUint64: { uint64_t x; memcpy(&x, p, 8); return (double)x; }
    case ncclFloat16: memcpy(&h, p, 2); return from_half(h);
    case ncclFloat32: memcpy(&f, p, 4); return f;
    case ncclFloat64: { double x; memcpy(&x, p, 8); return x; }
    case ncclBfloat16: memcpy(&h, p, 2); b = (uint32_t)h << 16; memcpy(&f, &b, 4); return f;
    default: fail("bad type %d", (int)t);
  }
  return 0;
}

/* Rank r's input at index i, for op (ncclSum..ncclAvg) or DATA. */
static int64_t input(int op, ncclDataType_t t, int r, size_t i) {
  int64_t u = is_unsigned(t);
  switch (op) {
    case ncclProd: { int64_t p = (int64_t)((r + i) % 3); return p == 2 ? (u ? 1 : -1) : p + 1; }
    case ncclAvg: return (int64_t)(i % 3) + 2 * r - (u ? 0 : 3); /* sum divisible by n */
    case DATA: return (int64_t)((r * 31 + i * 7) % 100) - (u ? 0 : 50);
    default: return (int64_t)((r * 3 + i) % 5) - (u ? 0 : 2);
  }
}

static int64_t reduced(int op, ncclDataType_t t, size_t i) {
  int64_t acc = input(op, t, 0, i);
  int r;
  for (r = 1; r < nranks; r++) {
    int64_t v = input(op, t, r, i);
    switch (op) {
      case ncclProd: acc *= v; break;
      case ncclMax: acc = v > acc ? v : acc; break;
      case ncclMin: acc = v < acc ? v : acc; break;
      default: acc += v;
    }
  }
  return op == ncclAvg ? acc / nranks : acc;
}

/* Pinned host staging: two upload slots (reused only once the stream has run the
 * upload from them) and one for results. */
static void* up[2];
static void* down;

/* Device buffer of `count` elements holding op's inputs of this rank from `first`
 * (or the sentinel 77 when op is -2), uploaded through slot `slot`. */
#define SENTINEL (-2)
static void* make(ncclDataType_t t, size_t count, int op, int r, size_t first, int slot) {
  void* d = dev_alloc(count * tsize(t));
  size_t i;
  sync_stream(); /* the slot's last upload has run */
  for (i = 0; i < count; i++) put(t, up[slot], i, op == SENTINEL ? 77 : input(op, t, r, first + i));
  upload(d, up[slot], count * tsize(t));
  return d;
}

/* Downloads `count` elements of `d` and checks element i against want(i). */
static void expect(const char* coll, int ti, int op, size_t count, int inplace, const void* d,
                   size_t offset, int64_t (*want)(int, ncclDataType_t, size_t, size_t), size_t arg) {
  ncclDataType_t t = TYPES[ti];
  size_t i;
  download(down, (const char*)d + offset * tsize(t), count * tsize(t));
  for (i = 0; i < count; i++) {
    double got = get(t, down, i);
    int64_t w = want(op, t, i, arg);
    checks++;
    if (got != (double)w)
      fail("%s %s %s count %zu %s: element %zu is %g, expected %lld", coll, TYPE_NAMES[ti],
           op >= 0 ? OP_NAMES[op] : "-", count, inplace ? "in place" : "out of place", i, got,
           (long long)w);
  }
}

static int64_t w_reduced(int op, ncclDataType_t t, size_t i, size_t first) { return reduced(op, t, first + i); }
static int64_t w_input_of(int op, ncclDataType_t t, size_t i, size_t r) { return input(op, t, (int)r, i); }
static int64_t w_gathered(int op, ncclDataType_t t, size_t i, size_t count) {
  return input(op, t, (int)(i / count), i % count);
}
static int64_t w_alltoall(int op, ncclDataType_t t, size_t i, size_t count) {
  return input(op, t, (int)(i / count), (size_t)rank * count + i % count);
}

static void test_allreduce(int ti, int op, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  void* send = make(t, count, op, rank, 0, 0);
  void* recv = inplace ? send : make(t, count, SENTINEL, 0, 0, 1);
  CHECK(ncclAllReduce(send, recv, count, t, (ncclRedOp_t)op, comm, (cudaStream_t)stream));
  expect("allreduce", ti, op, count, inplace, recv, 0, w_reduced, 0);
  if (!inplace) {
    expect("allreduce send buffer", ti, op, count, inplace, send, 0, w_input_of, (size_t)rank);
    dev_free(recv);
  }
  dev_free(send);
}

static void test_reduce(int ti, int op, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  int root = (int)((count + (size_t)op) % (size_t)nranks);
  void* send = make(t, count, op, rank, 0, 0);
  void* recv = inplace ? send : (rank == root ? make(t, count, SENTINEL, 0, 0, 1) : NULL);
  CHECK(ncclReduce(send, recv, count, t, (ncclRedOp_t)op, root, comm, (cudaStream_t)stream));
  if (rank == root) expect("reduce", ti, op, count, inplace, recv, 0, w_reduced, 0);
  else if (inplace) expect("reduce (non-root input)", ti, op, count, inplace, send, 0, w_input_of, (size_t)rank);
  if (!inplace) dev_free(recv);
  dev_free(send);
}

static void test_reducescatter(int ti, int op, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  size_t total = count * (size_t)nranks;
  void* send = make(t, total, op, rank, 0, 0);
  void* recv = inplace ? (count ? (char*)send + (size_t)rank * count * tsize(t) : NULL)
                       : make(t, count, SENTINEL, 0, 0, 1);
  CHECK(ncclReduceScatter(send, recv, count, t, (ncclRedOp_t)op, comm, (cudaStream_t)stream));
  expect("reducescatter", ti, op, count, inplace, recv, 0, w_reduced, (size_t)rank * count);
  if (!inplace) dev_free(recv);
  dev_free(send);
}

static void test_broadcast(int ti, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  int root = (int)(count % (size_t)nranks);
  void* recv = make(t, count, rank == root && inplace ? DATA : SENTINEL, root, 0, 0);
  void* send = inplace ? recv : (rank == root ? make(t, count, DATA, root, 0, 1) : NULL);
  CHECK(ncclBroadcast(send, recv, count, t, root, comm, (cudaStream_t)stream));
  expect("broadcast", ti, DATA, count, inplace, recv, 0, w_input_of, (size_t)root);
  if (!inplace) dev_free(send);
  dev_free(recv);
}

static void test_allgather(int ti, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  size_t total = count * (size_t)nranks, i;
  void *recv, *send;
  if (inplace) {
    for (i = 0; i < total; i++)
      put(t, up[0], i, i / count == (size_t)rank ? input(DATA, t, rank, i % count) : 77);
    recv = dev_alloc(total * tsize(t));
    upload(recv, up[0], total * tsize(t));
    send = count ? (char*)recv + (size_t)rank * count * tsize(t) : NULL;
  } else {
    send = make(t, count, DATA, rank, 0, 0);
    recv = make(t, total, SENTINEL, 0, 0, 1);
  }
  CHECK(ncclAllGather(send, recv, count, t, comm, (cudaStream_t)stream));
  expect("allgather", ti, DATA, total, inplace, recv, 0, w_gathered, count ? count : 1);
  if (!inplace) dev_free(send);
  dev_free(recv);
}

static void test_alltoall(int ti, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  size_t total = count * (size_t)nranks;
  void* send = make(t, total, DATA, rank, 0, 0);
  void* recv = inplace ? send : make(t, total, SENTINEL, 0, 0, 1);
  CHECK(ncclAlltoAll(send, recv, count, t, comm, (cudaStream_t)stream));
  expect("alltoall", ti, DATA, total, inplace, recv, 0, w_alltoall, count ? count : 1);
  if (!inplace) dev_free(recv);
  dev_free(send);
}

/* A ring shift in one group: send to the next rank, receive from the previous. */
static void test_sendrecv(int ti, size_t count) {
  ncclDataType_t t = TYPES[ti];
  int to = (rank + 1) % nranks, from = (rank + nranks - 1) % nranks;
  void* send = make(t, count, DATA, rank, 0, 0);
  void* recv = make(t, count, SENTINEL, 0, 0, 1);
  CHECK(ncclGroupStart());
  CHECK(ncclSend(send, count, t, to, comm, (cudaStream_t)stream));
  CHECK(ncclRecv(recv, count, t, from, comm, (cudaStream_t)stream));
  CHECK(ncclGroupEnd());
  expect("send/recv", ti, DATA, count, 0, recv, 0, w_input_of, (size_t)from);
  dev_free(send);
  dev_free(recv);
}

static int env_int(const char* name) {
  const char* v = getenv(name);
  if (!v) fail("%s is not set", name);
  return atoi(v);
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* Rank 0 writes the id as hex to TEST_ID_FILE; the others wait for it (30 s at most). */
static ncclUniqueId share_id_by_file(void) {
  ncclUniqueId id;
  char hex[MIXCCL_UNIQUE_ID_HEX_BYTES];
  const char* path = getenv("TEST_ID_FILE");
  char tmp[4096];
  FILE* f;
  int tries;
  if (!path) fail("TEST_ID_FILE is not set");
  if (rank == 0) {
    CHECK(ncclGetUniqueId(&id));
    CHECK(mixcclUniqueIdToHex(&id, hex));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fputs(hex, f) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) fail("writing %s", path);
    return id;
  }
  for (tries = 0; tries < 3000; tries++) {
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

int main(void) {
  ncclUniqueId id;
  int ti, op, inplace;
  size_t ci, stage = MAX_COUNT * 8 * 8;
  struct timespec t0, t1;
  rank = env_int("TEST_RANK");
  nranks = env_int("TEST_NRANKS");
  if (getenv("TEST_MEM")) mem = getenv("TEST_MEM");
  if (nranks > 8) fail("at most 8 ranks");
  setup_device();
  up[0] = pinned(stage);
  up[1] = pinned(stage);
  down = pinned(stage);
  id = share_id_by_file();
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(ncclCommInitRank(&comm, nranks, id, rank));
  for (ci = 0; ci < NCOUNTS; ci++) {
    for (ti = 0; ti < (int)NTYPES; ti++) {
      /* The large count: every collective with sum, every op for float and bfloat16. */
      int big = COUNTS[ci] > 1031, ops = big && ti != 7 && ti != 9 ? 1 : 5;
      for (inplace = 0; inplace < 2; inplace++) {
        for (op = 0; op < ops; op++) {
          test_allreduce(ti, op, COUNTS[ci], inplace);
          test_reduce(ti, op, COUNTS[ci], inplace);
          test_reducescatter(ti, op, COUNTS[ci], inplace);
        }
        test_broadcast(ti, COUNTS[ci], inplace);
        test_allgather(ti, COUNTS[ci], inplace);
        test_alltoall(ti, COUNTS[ci], inplace);
      }
      test_sendrecv(ti, COUNTS[ci]);
    }
  }
  CHECK(ncclCommFinalize(comm));
  CHECK(ncclCommDestroy(comm));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("rank %d of %d (%s): mixed OK, %ld checks, %.2f s\n", rank, nranks, mem, checks,
         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}
