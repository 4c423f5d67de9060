/*
 * A program written for NVIDIA's NCCL: only nccl.h, linked with -lnccl (or -lrccl),
 * so at run time it loads whatever libnccl.so.2 the loader finds. ffi/tests/dropin.rs
 * runs it on mixccl's build of that library through LD_LIBRARY_PATH and LD_PRELOAD.
 *
 * One rank per process: TEST_RANK, TEST_NRANKS, TEST_ID_FILE (rank 0 makes two unique
 * ids and writes their 256 bytes there, atomically by rename; the others wait for it).
 * Checks, against values computed here: the version; ncclCommInitRankScalable with
 * both ids; an all-reduce; ncclGather and ncclScatter from every root, in and out of
 * place; suspend, resume and memory statistics; windows; that ncclGroupSimulateEnd
 * ends its group without running it and estimates it; grow (a split-off part grows
 * back with the last rank joining) and revoke then an empty shrink; that the calls
 * mixccl does not provide fail with ncclInvalidUsage and a message. Prints which libnccl/librccl file it loaded.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nccl.h"

#define COUNT 5

static int rank = -1, nranks = 0;
static ncclComm_t comm = NULL;

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

/* `call` must fail with `want` and leave a last error mentioning `text`. */
#define EXPECT(want, text, call)                                                   \
  do {                                                                             \
    ncclResult_t r_ = (call);                                                      \
    const char* m_ = ncclGetLastError(NULL);                                       \
    if (r_ != (want)) fail("%s:%d: %s returned %d, expected %d (%s)", __FILE__,    \
                           __LINE__, #call, (int)r_, (int)(want), m_);             \
    if (!strstr(m_, (text)))                                                       \
      fail("%s:%d: %s: last error \"%s\" does not mention \"%s\"", __FILE__,       \
           __LINE__, #call, m_, (text));                                           \
  } while (0)

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

/* Rank 0 makes the ids and writes them to TEST_ID_FILE; the others read them. */
static void share_ids(ncclUniqueId ids[2]) {
  const char* path = getenv("TEST_ID_FILE");
  char tmp[4096];
  FILE* f;
  int tries;
  if (!path) fail("TEST_ID_FILE is not set");
  if (rank == 0) {
    CHECK(ncclGetUniqueId(&ids[0]));
    CHECK(ncclGetUniqueId(&ids[1]));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f || fwrite(ids, sizeof(ncclUniqueId), 2, f) != 2 || fclose(f) != 0 ||
        rename(tmp, path) != 0)
      fail("writing %s", path);
    return;
  }
  for (tries = 0; tries < 3000; tries++) {
    f = fopen(path, "rb");
    if (f) {
      size_t got = fread(ids, sizeof(ncclUniqueId), 2, f);
      fclose(f);
      if (got == 2) return;
    }
    sleep_ms(10);
  }
  fail("no unique ids in %s after 30 s", path);
}

/* The library file this process loaded for libnccl.so.2 or librccl.so.1. */
static void print_loaded_library(void) {
  char line[4096];
  FILE* maps = fopen("/proc/self/maps", "r");
  if (!maps) return;
  while (fgets(line, sizeof line, maps)) {
    char* path = strchr(line, '/');
    if (path && (strstr(path, "libnccl") || strstr(path, "librccl"))) {
      printf("rank %d loaded %s", rank, path);
      break;
    }
  }
  fclose(maps);
}

static int32_t value(int from, int block, int i) { return 1000 * from + 10 * block + i; }

static void test_gather(int root, int inplace) {
  int32_t send[COUNT], recv[COUNT * 8];
  const void* sendbuff = send;
  int i, r;
  if (nranks > 8) fail("at most 8 ranks");
  for (i = 0; i < COUNT; i++) send[i] = value(rank, 0, i);
  for (i = 0; i < COUNT * nranks; i++) recv[i] = -1;
  if (inplace && rank == root) {
    memcpy(recv + root * COUNT, send, sizeof send);
    sendbuff = recv + root * COUNT;
  }
  CHECK(ncclGather(sendbuff, rank == root ? recv : NULL, COUNT, ncclInt32, root, comm, NULL));
  if (rank != root) return;
  for (r = 0; r < nranks; r++)
    for (i = 0; i < COUNT; i++)
      if (recv[r * COUNT + i] != value(r, 0, i))
        fail("gather root %d%s: block %d [%d] = %d, expected %d", root, inplace ? " in place" : "",
             r, i, (int)recv[r * COUNT + i], (int)value(r, 0, i));
}

static void test_scatter(int root, int inplace) {
  int32_t send[COUNT * 8], recv[COUNT];
  void* recvbuff = recv;
  int i, r;
  for (r = 0; r < nranks; r++)
    for (i = 0; i < COUNT; i++) send[r * COUNT + i] = value(rank, r, i);
  for (i = 0; i < COUNT; i++) recv[i] = -1;
  if (inplace && rank == root) recvbuff = send + root * COUNT;
  CHECK(ncclScatter(rank == root ? send : NULL, recvbuff, COUNT, ncclInt32, root, comm, NULL));
  for (i = 0; i < COUNT; i++) {
    int32_t got = ((int32_t*)recvbuff)[i];
    if (got != value(root, rank, i))
      fail("scatter root %d%s: [%d] = %d, expected %d", root, inplace ? " in place" : "", i,
           (int)got, (int)value(root, rank, i));
  }
}

static void test_allreduce(const char* when) {
  float x = (float)(rank + 1), sum = 0;
  CHECK(ncclAllReduce(&x, &sum, 1, ncclFloat, ncclSum, comm, NULL));
  if (sum != (float)(nranks * (nranks + 1) / 2))
    fail("all-reduce %s: %g, expected %d", when, sum, nranks * (nranks + 1) / 2);
}

static void test_suspend(void) {
  uint64_t v = 7;
  float x = 1;
  CHECK(ncclCommMemStats(comm, ncclStatGpuMemTotal, &v));
  if (v != 0) fail("mixccl holds no device memory, MemStats says %llu", (unsigned long long)v);
  EXPECT(ncclInvalidArgument, "flags", ncclCommSuspend(comm, 0x4));
  CHECK(ncclCommSuspend(comm, NCCL_SUSPEND_MEM));
  CHECK(ncclCommMemStats(comm, ncclStatGpuMemSuspended, &v));
  if (v != 1) fail("suspended: MemStats says %llu", (unsigned long long)v);
  EXPECT(ncclInvalidUsage, "suspended", ncclAllReduce(&x, &x, 1, ncclFloat, ncclSum, comm, NULL));
  EXPECT(ncclInvalidArgument, "stat", ncclCommMemStats(comm, (ncclCommMemStat_t)9, &v));
  CHECK(ncclCommResume(comm));
  CHECK(ncclCommMemStats(comm, ncclStatGpuMemSuspended, &v));
  if (v != 0) fail("resumed: MemStats says %llu", (unsigned long long)v);
  test_allreduce("after resume");
}

static void test_windows(void) {
  float buf[16];
  void* user = NULL;
  ncclWindow_t win = NULL, refused = NULL;
  ncclWaitSignalDesc_t desc = {1, 0, 0, 0};
  CHECK(ncclCommWindowRegister(comm, buf, sizeof buf, &win, NCCL_WIN_COLL_SYMMETRIC));
  if (!win) fail("no window");
  CHECK(ncclWinGetUserPtr(comm, win, &user));
  if (user != (void*)buf) fail("window user pointer %p, expected %p", user, (void*)buf);
  EXPECT(ncclInvalidUsage, "device API", ncclGetPeerDevicePointer(win, 0, 0, &user));
  EXPECT(ncclInvalidUsage, "device API", ncclGetLsaMultimemDevicePointer(win, 0, &user));
  EXPECT(ncclInvalidUsage, "one-sided",
         ncclPutSignal(buf, 1, ncclFloat, 0, win, 0, 0, 0, 0, comm, NULL));
  EXPECT(ncclInvalidUsage, "one-sided", ncclSignal(0, 0, 0, 0, comm, NULL));
  EXPECT(ncclInvalidUsage, "one-sided", ncclWaitSignal(1, &desc, comm, NULL));
  EXPECT(ncclInvalidArgument, "winFlags", ncclCommWindowRegister(comm, buf, 4, &refused, 0x100));
  CHECK(ncclCommWindowDeregister(comm, win));
  EXPECT(ncclInvalidUsage, "not a registered window", ncclCommWindowDeregister(comm, win));
}

static void test_not_provided(void) {
  EXPECT(ncclInvalidUsage, "device API", ncclDevCommCreate(comm, NULL, NULL));
  EXPECT(ncclInvalidUsage, "device API", ncclDevCommDestroy(comm, NULL));
}

/* The estimate of a simulated group of `calls` all-reduces of `count` floats. */
static float simulated(size_t count, int calls) {
  ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
  float* x = calloc(count, sizeof(float));
  float* y = malloc(count * sizeof(float));
  int i;
  if (!x || !y) fail("allocating %zu floats", count);
  for (i = 0; i < (int)count; i++) y[i] = -1;
  CHECK(ncclGroupStart());
  for (i = 0; i < calls; i++) CHECK(ncclAllReduce(x, y, count, ncclFloat, ncclSum, comm, NULL));
  CHECK(ncclGroupSimulateEnd(&sim));
  for (i = 0; i < (int)count; i++)
    if (y[i] != -1) fail("the simulated all-reduce ran: y[%d] = %g", i, y[i]);
  free(x);
  free(y);
  return sim.estimatedTime;
}

/* A simulated group runs nothing, ends the group and reports the planner's
 * estimate in microseconds: positive, longer for more bytes, summed over calls. */
static void test_simulate(void) {
  ncclSimInfo_t bad = NCCL_SIM_INFO_INITIALIZER, good = NCCL_SIM_INFO_INITIALIZER;
  float one, two, large;
  bad.magic = 0;
  EXPECT(ncclInvalidArgument, "NCCL_SIM_INFO_INITIALIZER", ncclGroupSimulateEnd(&bad));
  EXPECT(ncclInvalidUsage, "without a matching ncclGroupStart", ncclGroupSimulateEnd(&good));
  one = simulated(1, 1);
  EXPECT(ncclInvalidUsage, "without a matching ncclGroupStart", ncclGroupEnd());
  two = simulated(1, 2);
  large = simulated(1 << 20, 1);
  if (!(one > 0 && one < 1e6)) fail("estimatedTime of one small all-reduce: %g us", one);
  if (two < 1.99f * one || two > 2.01f * one) fail("two calls %g us, one %g us", two, one);
  if (!(large > one)) fail("4 MiB all-reduce %g us, 4 B %g us", large, one);
  test_allreduce("after a simulated group");
}

/* Rank 0 writes a grow id to TEST_ID_FILE.grow; the others read it. */
static void share_grow_id(ncclUniqueId* id) {
  char path[4096], tmp[4200];
  FILE* f;
  int tries;
  snprintf(path, sizeof path, "%s.grow", getenv("TEST_ID_FILE"));
  if (rank == 0) {
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f || fwrite(id, sizeof *id, 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0)
      fail("writing %s", path);
    return;
  }
  for (tries = 0; tries < 3000; tries++) {
    f = fopen(path, "rb");
    if (f) {
      size_t got = fread(id, sizeof *id, 1, f);
      fclose(f);
      if (got == 1) return;
    }
    sleep_ms(10);
  }
  fail("no grow id in %s after 30 s", path);
}

/* Ranks 0..n-2 split off and grow back to n, the last rank joining with comm NULL;
 * then rank 0 revokes the grown communicator, everyone's next call fails with
 * ncclInvalidUsage, and an empty shrink gives a communicator that works. */
static void test_grow_and_revoke(void) {
  ncclComm_t saved = comm, sub = NULL, big = NULL, fresh = NULL;
  ncclUniqueId gid, plain;
  float x = 1, y = 0;
  int member = rank < nranks - 1, n = 0, r = -1, none[1] = {0};
  if (nranks < 2) return;
  CHECK(ncclCommSplit(comm, member ? 0 : NCCL_SPLIT_NOCOLOR, rank, &sub, NULL));
  if (rank == 0) CHECK(ncclCommGetUniqueId(sub, &gid));
  share_grow_id(&gid);
  CHECK(ncclGetUniqueId(&plain));
  if (member) {
    EXPECT(ncclInvalidArgument, "rank -1", ncclCommGrow(sub, nranks, &gid, rank, &big, NULL));
    EXPECT(ncclInvalidArgument, "not a grow id", ncclCommGrow(sub, nranks, &plain, -1, &big, NULL));
    CHECK(ncclCommGrow(sub, nranks, &gid, -1, &big, NULL));
  } else {
    EXPECT(ncclInvalidArgument, "not a grow id", ncclCommGrow(NULL, nranks, &plain, rank, &big, NULL));
    CHECK(ncclCommGrow(NULL, nranks, &gid, rank, &big, NULL));
  }
  CHECK(ncclCommCount(big, &n));
  CHECK(ncclCommUserRank(big, &r));
  if (n != nranks || r != rank) fail("grown comm says rank %d of %d", r, n);
  comm = big;
  test_allreduce("after grow");
  EXPECT(ncclInvalidArgument, "revokeFlags", ncclCommRevoke(big, 5));
  if (rank == 0) CHECK(ncclCommRevoke(big, NCCL_REVOKE_DEFAULT));
  EXPECT(ncclInvalidUsage, "revoked by rank 0",
         ncclAllReduce(&x, &y, 1, ncclFloat, ncclSum, big, NULL));
  CHECK(ncclCommShrink(big, none, 0, &fresh, NULL, NCCL_SHRINK_DEFAULT));
  comm = fresh;
  test_allreduce("after revoke and an empty shrink");
  CHECK(ncclCommDestroy(fresh));
  CHECK(ncclCommDestroy(big));
  if (sub) CHECK(ncclCommDestroy(sub));
  comm = saved;
}

int main(void) {
  ncclUniqueId ids[2];
  int version = 0, n = 0, r = -1, root, inplace;
  rank = env_int("TEST_RANK");
  nranks = env_int("TEST_NRANKS");
  print_loaded_library();
  CHECK(ncclGetVersion(&version));
  if (version != NCCL_VERSION_CODE) fail("version %d, nccl.h says %d", version, NCCL_VERSION_CODE);
  share_ids(ids);
  CHECK(ncclCommInitRankScalable(&comm, nranks, rank, 2, ids, NULL));
  CHECK(ncclCommCount(comm, &n));
  CHECK(ncclCommUserRank(comm, &r));
  if (n != nranks || r != rank) fail("comm says rank %d of %d", r, n);
  test_allreduce("after init");
  for (root = 0; root < nranks; root++)
    for (inplace = 0; inplace < 2; inplace++) {
      test_gather(root, inplace);
      test_scatter(root, inplace);
    }
  CHECK(ncclGather(NULL, NULL, 0, ncclInt32, 0, comm, NULL));
  test_suspend();
  test_windows();
  test_not_provided();
  test_simulate();
  test_grow_and_revoke();
  CHECK(ncclCommDestroy(comm));
  printf("rank %d of %d: dropin OK (version %d)\n", rank, nranks, version);
  return 0;
}
