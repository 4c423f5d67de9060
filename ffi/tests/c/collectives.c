/*
 * Every collective x data type x op x count {0, 1, 7, 1031}, in place and out of
 * place, checked element by element against a reference computed here; PreMulSum
 * ops; grouped send/recv (ring shift, all-to-all, 4 MiB messages); split.
 *
 * One rank per process, started three ways:
 *   mpicc -DUSE_MPI: mpirun -np N; the unique id goes out with MPI_Bcast.
 *   cc:              N processes with TEST_RANK, TEST_NRANKS and TEST_ID_FILE; rank 0
 *                    writes the id as hex to TEST_ID_FILE (atomically, by rename), the
 *                    others wait for the file.
 *   cc, no TEST_ID_FILE: mixccl's environment launcher (mixcclCommInitFromEnv) with
 *                    MIXCCL_RANK, MIXCCL_NRANKS and MIXCCL_ROOT.
 * Inputs are small integers chosen so every reduction over up to 5 ranks is exact in
 * every type (int8 and bfloat16 included), so results compare exactly.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mixccl.h"
#include "nccl.h"
#ifdef USE_MPI
#include <mpi.h>
#endif

static int rank = -1, nranks = 0;
static ncclComm_t comm = NULL;
static long checks = 0;

static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "rank %d: FAILED: ", rank);
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

static const ncclDataType_t TYPES[] = {ncclInt8,    ncclUint8,   ncclInt32,   ncclUint32,
                                       ncclInt64,   ncclUint64,  ncclFloat16, ncclFloat32,
                                       ncclFloat64, ncclBfloat16};
static const char* TYPE_NAMES[] = {"int8",    "uint8", "int32",  "uint32", "int64",
                                   "uint64",  "half",  "float",  "double", "bfloat16"};
static const char* OP_NAMES[] = {"sum", "prod", "max", "min", "avg"};
static const size_t COUNTS[] = {0, 1, 7, 1031};
#define NTYPES (sizeof TYPES / sizeof TYPES[0])
#define NCOUNTS (sizeof COUNTS / sizeof COUNTS[0])
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
  switch (t) {
    case ncclInt8: { int8_t x = (int8_t)v; memcpy(p, &x, 1); break; }
    case ncclUint8: { uint8_t x = (uint8_t)v; memcpy(p, &x, 1); break; }
    case ncclInt32: { int32_t x = (int32_t)v; memcpy(p, &x, 4); break; }
    case ncclUint32: { uint32_t x = (uint32_t)v; memcpy(p, &x, 4); break; }
    case ncclInt64: { int64_t x = v; memcpy(p, &x, 8); break; }
    case ncclUint64: { uint64_t x = (uint64_t)v; memcpy(p, &x, 8); break; }
    case ncclFloat16: { uint16_t x = to_half((float)v); memcpy(p, &x, 2); break; }
    case ncclFloat32: { float x = (float)v; memcpy(p, &x, 4); break; }
    case ncclFloat64: { double x = (double)v; memcpy(p, &x, 8); break; }
    case ncclBfloat16: {
      float f = (float)v;
      uint32_t b;
      uint16_t x;
      memcpy(&b, &f, 4);
      x = (uint16_t)(b >> 16);
      memcpy(p, &x, 2);
      break;
    }
    default: fail("bad type %d", (int)t);
  }
}

static double get(ncclDataType_t t, const void* buf, size_t i) {
  const char* p = (const char*)buf + i * tsize(t);
  switch (t) {
    case ncclInt8: { int8_t x; memcpy(&x, p, 1); return x; }
    case ncclUint8: { uint8_t x; memcpy(&x, p, 1); return x; }
    case ncclInt32: { int32_t x; memcpy(&x, p, 4); return x; }
    case ncclUint32: { uint32_t x; memcpy(&x, p, 4); return x; }
    case ncclInt64: { int64_t x; memcpy(&x, p, 8); return (double)x; }
    case ncclUint64: { uint64_t x; memcpy(&x, p, 8); return (double)x; }
    case ncclFloat16: { uint16_t x; memcpy(&x, p, 2); return from_half(x); }
    case ncclFloat32: { float x; memcpy(&x, p, 4); return x; }
    case ncclFloat64: { double x; memcpy(&x, p, 8); return x; }
    case ncclBfloat16: {
      uint16_t x;
      uint32_t b;
      float f;
      memcpy(&x, p, 2);
      b = (uint32_t)x << 16;
      memcpy(&f, &b, 4);
      return f;
    }
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

/* count elements of t; NULL when empty; filled with a value no result has. */
static void* alloc(ncclDataType_t t, size_t count) {
  size_t i;
  void* p;
  if (count == 0) return NULL;
  p = malloc(count * tsize(t));
  if (!p) fail("out of memory");
  for (i = 0; i < count; i++) put(t, p, i, 77);
  return p;
}

static void expect(const char* coll, int ti, int op, size_t count, int inplace,
                   const void* buf, size_t i, int64_t want) {
  double got = get(TYPES[ti], buf, i);
  checks++;
  if (got != (double)want)
    fail("%s %s %s count %zu %s: element %zu is %g, expected %lld", coll, TYPE_NAMES[ti],
         op >= 0 ? OP_NAMES[op] : "-", count, inplace ? "in place" : "out of place", i, got,
         (long long)want);
}

static void test_allreduce(int ti, int op, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  void* send = alloc(t, count);
  void* recv = inplace ? send : alloc(t, count);
  size_t i;
  for (i = 0; i < count; i++) put(t, send, i, input(op, t, rank, i));
  CHECK(ncclAllReduce(send, recv, count, t, (ncclRedOp_t)op, comm, NULL));
  for (i = 0; i < count; i++) expect("allreduce", ti, op, count, inplace, recv, i, reduced(op, t, i));
  free(send);
  if (!inplace) free(recv);
}

static void test_reduce(int ti, int op, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  int root = (int)((count + (size_t)op) % (size_t)nranks);
  void* send = alloc(t, count);
  /* Out of place, non-root ranks pass recvbuff = NULL, as NCCL allows. */
  void* recv = inplace ? send : (rank == root ? alloc(t, count) : NULL);
  size_t i;
  for (i = 0; i < count; i++) put(t, send, i, input(op, t, rank, i));
  CHECK(ncclReduce(send, recv, count, t, (ncclRedOp_t)op, root, comm, NULL));
  if (rank == root)
    for (i = 0; i < count; i++) expect("reduce", ti, op, count, inplace, recv, i, reduced(op, t, i));
  free(send);
  if (!inplace) free(recv);
}

static void test_reducescatter(int ti, int op, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  size_t total = count * (size_t)nranks, i;
  void* send = alloc(t, total);
  void* recv = inplace ? (count ? (char*)send + (size_t)rank * count * tsize(t) : NULL)
                       : alloc(t, count);
  for (i = 0; i < total; i++) put(t, send, i, input(op, t, rank, i));
  CHECK(ncclReduceScatter(send, recv, count, t, (ncclRedOp_t)op, comm, NULL));
  for (i = 0; i < count; i++)
    expect("reducescatter", ti, op, count, inplace, recv, i, reduced(op, t, (size_t)rank * count + i));
  free(send);
  if (!inplace) free(recv);
}

static void test_broadcast(int ti, size_t count, int inplace, int bcast) {
  ncclDataType_t t = TYPES[ti];
  int root = (int)(count % (size_t)nranks);
  void* recv = alloc(t, count);
  /* Out of place, non-root ranks pass sendbuff = NULL: it is not read there. */
  void* send = inplace ? recv : (rank == root ? alloc(t, count) : NULL);
  size_t i;
  if (rank == root)
    for (i = 0; i < count; i++) put(t, send, i, input(DATA, t, root, i));
  if (bcast)
    CHECK(ncclBcast(recv, count, t, root, comm, NULL));
  else
    CHECK(ncclBroadcast(send, recv, count, t, root, comm, NULL));
  for (i = 0; i < count; i++)
    expect(bcast ? "bcast" : "broadcast", ti, DATA, count, inplace, recv, i, input(DATA, t, root, i));
  free(recv);
  if (!inplace) free(send);
}

static void test_allgather(int ti, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  size_t i;
  int r;
  void* recv = alloc(t, count * (size_t)nranks);
  void* send = inplace ? (count ? (char*)recv + (size_t)rank * count * tsize(t) : NULL)
                       : alloc(t, count);
  for (i = 0; i < count; i++) put(t, send, i, input(DATA, t, rank, i));
  CHECK(ncclAllGather(send, recv, count, t, comm, NULL));
  for (r = 0; r < nranks; r++)
    for (i = 0; i < count; i++)
      expect("allgather", ti, DATA, count, inplace, recv, (size_t)r * count + i, input(DATA, t, r, i));
  free(recv);
  if (!inplace) free(send);
}

static void test_alltoall(int ti, size_t count, int inplace) {
  ncclDataType_t t = TYPES[ti];
  size_t total = count * (size_t)nranks, i;
  int r;
  void* send = alloc(t, total);
  void* recv = inplace ? send : alloc(t, total);
  /* Element k of block j is what this rank sends to rank j. */
  for (i = 0; i < total; i++) put(t, send, i, input(DATA, t, rank, i));
  CHECK(ncclAlltoAll(send, recv, count, t, comm, NULL));
  for (r = 0; r < nranks; r++)
    for (i = 0; i < count; i++)
      expect("alltoall", ti, DATA, count, inplace, recv, (size_t)r * count + i,
             input(DATA, t, r, (size_t)rank * count + i));
  free(send);
  if (!inplace) free(recv);
}

static void test_sendrecv(int ti, size_t count) {
  ncclDataType_t t = TYPES[ti];
  int to = (rank + 1) % nranks, from = (rank + nranks - 1) % nranks;
  void* send = alloc(t, count);
  void* recv = alloc(t, count);
  size_t i;
  for (i = 0; i < count; i++) put(t, send, i, input(DATA, t, rank, i));
  CHECK(ncclGroupStart());
  CHECK(ncclSend(send, count, t, to, comm, NULL));
  CHECK(ncclRecv(recv, count, t, from, comm, NULL));
  CHECK(ncclGroupEnd());
  for (i = 0; i < count; i++) expect("sendrecv", ti, DATA, count, 0, recv, i, input(DATA, t, from, i));
  free(send);
  free(recv);
}

/* PreMulSum: the sum of scalar * input, with the scalar read at creation (immediate)
 * or at each call (ncclScalarDevice: host memory here, changed after creation). */
static void test_premulsum(int ti) {
  ncclDataType_t t = TYPES[ti];
  char now[8], later[8];
  ncclRedOp_t op_now, op_later;
  size_t count = 1031, i;
  void* send = alloc(t, count * (size_t)nranks);
  void* recv = alloc(t, count);
  put(t, now, 0, 3);
  put(t, later, 0, 2);
  CHECK(ncclRedOpCreatePreMulSum(&op_now, now, t, ncclScalarHostImmediate, comm));
  CHECK(ncclRedOpCreatePreMulSum(&op_later, later, t, ncclScalarDevice, comm));
  if (op_now < ncclNumOps || op_later == op_now) fail("premulsum ops %d %d", op_now, op_later);
  put(t, now, 0, 5); /* must not matter: read at creation */
  put(t, later, 0, 4); /* must matter: read at each call */
  for (i = 0; i < count; i++) put(t, send, i, input(ncclSum, t, rank, i));
  CHECK(ncclAllReduce(send, recv, count, t, op_now, comm, NULL));
  for (i = 0; i < count; i++) expect("allreduce premulsum", ti, 0, count, 0, recv, i, 3 * reduced(ncclSum, t, i));
  CHECK(ncclAllReduce(send, send, count, t, op_later, comm, NULL));
  for (i = 0; i < count; i++) expect("allreduce premulsum", ti, 0, count, 1, send, i, 4 * reduced(ncclSum, t, i));
  for (i = 0; i < count; i++) put(t, send, i, input(ncclSum, t, rank, i));
  CHECK(ncclReduce(send, recv, count, t, op_now, nranks - 1, comm, NULL));
  if (rank == nranks - 1)
    for (i = 0; i < count; i++) expect("reduce premulsum", ti, 0, count, 0, recv, i, 3 * reduced(ncclSum, t, i));
  for (i = 0; i < count * (size_t)nranks; i++) put(t, send, i, input(ncclSum, t, rank, i));
  CHECK(ncclReduceScatter(send, (char*)send + (size_t)rank * count * tsize(t), count, t, op_now, comm, NULL));
  for (i = 0; i < count; i++)
    expect("reducescatter premulsum", ti, 0, count, 1, (char*)send + (size_t)rank * count * tsize(t), i,
           3 * reduced(ncclSum, t, (size_t)rank * count + i));
  CHECK(ncclRedOpDestroy(op_now, comm));
  CHECK(ncclRedOpDestroy(op_later, comm));
  free(send);
  free(recv);
}

static unsigned char pattern(int from, int to, size_t i) {
  return (unsigned char)(from * 37 + to * 11 + (int)(i % 251));
}

/* Ring shift and all-to-all through send/recv in groups, 4 MiB per message (more
 * than socket buffers hold, so a rank that sent before receiving would deadlock). */
static void test_groups(void) {
  const size_t len = (size_t)4 << 20;
  int to = (rank + 1) % nranks, from = (rank + nranks - 1) % nranks, p;
  unsigned char** sends = malloc(sizeof(unsigned char*) * (size_t)nranks);
  unsigned char** recvs = malloc(sizeof(unsigned char*) * (size_t)nranks);
  size_t i;
  for (p = 0; p < nranks; p++) {
    sends[p] = malloc(len);
    recvs[p] = malloc(len);
    for (i = 0; i < len; i++) sends[p][i] = pattern(rank, p, i);
    memset(recvs[p], 0xEE, len);
  }
  /* Ring shift, the receive posted after the send, inside nested groups. */
  CHECK(ncclGroupStart());
  CHECK(ncclGroupStart());
  CHECK(ncclSend(sends[to], len, ncclUint8, to, comm, NULL));
  CHECK(ncclGroupEnd());
  CHECK(ncclRecv(recvs[from], len, ncclUint8, from, comm, NULL));
  CHECK(ncclGroupEnd());
  for (i = 0; i < len; i++)
    if (recvs[from][i] != pattern(from, rank, i)) fail("ring shift: byte %zu from rank %d", i, from);
  checks += (long)len;
  /* All-to-all, every send first, self included. */
  for (p = 0; p < nranks; p++) memset(recvs[p], 0xEE, len);
  CHECK(ncclGroupStart());
  for (p = 0; p < nranks; p++) CHECK(ncclSend(sends[p], len, ncclUint8, p, comm, NULL));
  for (p = 0; p < nranks; p++) CHECK(ncclRecv(recvs[p], len, ncclUint8, p, comm, NULL));
  CHECK(ncclGroupEnd());
  for (p = 0; p < nranks; p++)
    for (i = 0; i < len; i++)
      if (recvs[p][i] != pattern(p, rank, i)) fail("all-to-all: byte %zu from rank %d", i, p);
  checks += (long)len * nranks;
  /* A collective and transfers in one group: the collective runs first. */
  {
    int32_t x = rank + 1, sum = 0;
    CHECK(ncclGroupStart());
    CHECK(ncclSend(sends[to], 1024, ncclUint8, to, comm, NULL));
    CHECK(ncclAllReduce(&x, &sum, 1, ncclInt32, ncclSum, comm, NULL));
    CHECK(ncclRecv(recvs[from], 1024, ncclUint8, from, comm, NULL));
    CHECK(ncclGroupEnd());
    if (sum != nranks * (nranks + 1) / 2) fail("allreduce in a group: %d", (int)sum);
    for (i = 0; i < 1024; i++)
      if (recvs[from][i] != pattern(from, rank, i)) fail("send/recv in a mixed group: byte %zu", i);
    checks += 1025;
  }
  for (p = 0; p < nranks; p++) {
    free(sends[p]);
    free(recvs[p]);
  }
  free(sends);
  free(recvs);
}

/* Colors rank % 2, keys -rank: each half in reverse rank order. */
static void test_split(void) {
  ncclComm_t sub = NULL;
  int color = rank % 2, n = 0, r = -1, members = 0, higher = 0, q;
  int32_t x = rank + 1, sum = 0, want = 0;
  CHECK(ncclCommSplit(comm, color, -rank, &sub, NULL));
  if (!sub) fail("split gave NULL for color %d", color);
  for (q = 0; q < nranks; q++)
    if (q % 2 == color) {
      members++;
      want += q + 1;
      if (q > rank) higher++;
    }
  CHECK(ncclCommCount(sub, &n));
  CHECK(ncclCommUserRank(sub, &r));
  if (n != members || r != higher) fail("split: rank %d of %d, expected %d of %d", r, n, higher, members);
  CHECK(ncclAllReduce(&x, &sum, 1, ncclInt32, ncclSum, sub, NULL));
  if (sum != want) fail("split allreduce: %d, expected %d", (int)sum, (int)want);
  CHECK(ncclCommDestroy(sub));
  checks += 3;
}

#ifndef USE_MPI
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
#endif

int main(int argc, char** argv) {
  ncclUniqueId id;
  int ti, op, inplace, version = 0, n = 0, r = -1, from_env = 0;
  size_t ci;
  ncclResult_t async;
  struct timespec t0, t1;
  memset(&id, 0, sizeof id);
#ifdef USE_MPI
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  if (rank == 0) CHECK(ncclGetUniqueId(&id));
  MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
#else
  (void)argc;
  (void)argv;
  from_env = getenv("TEST_ID_FILE") == NULL;
  if (from_env) {
    rank = env_int("MIXCCL_RANK");
    nranks = env_int("MIXCCL_NRANKS");
  } else {
    rank = env_int("TEST_RANK");
    nranks = env_int("TEST_NRANKS");
    id = share_id_by_file();
  }
#endif
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(ncclGetVersion(&version));
  if (version != NCCL_VERSION_CODE) fail("version %d, header says %d", version, NCCL_VERSION_CODE);
  if (from_env)
    CHECK(mixcclCommInitFromEnv(&comm));
  else
    CHECK(ncclCommInitRank(&comm, nranks, id, rank));
  CHECK(ncclCommCount(comm, &n));
  CHECK(ncclCommUserRank(comm, &r));
  if (n != nranks || r != rank) fail("comm says rank %d of %d", r, n);

  for (ti = 0; ti < (int)NTYPES; ti++) {
    for (ci = 0; ci < NCOUNTS; ci++) {
      for (inplace = 0; inplace < 2; inplace++) {
        for (op = 0; op < 5; op++) {
          test_allreduce(ti, op, COUNTS[ci], inplace);
          test_reduce(ti, op, COUNTS[ci], inplace);
          test_reducescatter(ti, op, COUNTS[ci], inplace);
        }
        test_broadcast(ti, COUNTS[ci], inplace, 0);
        test_allgather(ti, COUNTS[ci], inplace);
        test_alltoall(ti, COUNTS[ci], inplace);
      }
      test_broadcast(ti, COUNTS[ci], 1, 1);
      test_sendrecv(ti, COUNTS[ci]);
    }
    test_premulsum(ti);
  }
  /* Large enough for the pipelined ring algorithms (the small counts run direct). */
  {
    static const int big_types[] = {0, 7, 9}; /* int8, float, bfloat16 */
    const size_t big = 65537;
    size_t k;
    for (k = 0; k < sizeof big_types / sizeof big_types[0]; k++)
      for (inplace = 0; inplace < 2; inplace++) {
        for (op = 0; op < 5; op++) {
          test_allreduce(big_types[k], op, big, inplace);
          test_reducescatter(big_types[k], op, big, inplace);
        }
        test_allgather(big_types[k], big, inplace);
      }
  }
  test_groups();
  test_split();

  CHECK(ncclCommGetAsyncError(comm, &async));
  if (async != ncclSuccess) fail("async error %d", (int)async);
  CHECK(ncclCommFinalize(comm));
  CHECK(ncclCommDestroy(comm));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("rank %d of %d: collectives OK, %ld checks, %.2f s\n", rank, nranks, checks,
         (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
#ifdef USE_MPI
  MPI_Finalize();
#endif
  return 0;
}
