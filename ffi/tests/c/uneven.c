/*
 * mixccl's uneven collectives and fp8 types through the C ABI: ncclCommInitAll with
 * a thread per rank; mixcclAllGatherV (out of place, in place, gaps, empty blocks),
 * mixcclReduceScatterV, mixcclAlltoAllV checked element by element against values
 * computed here; fp8 all-reduces in the OCP and FNUZ e4m3 formats; mixcclSplitByWeight;
 * a V call inside a group refused; ranks disagreeing about counts get a mismatch.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mixccl.h"

#define NRANKS 3

static ncclComm_t comms[NRANKS];

static void fail(const char* fmt, ...) {
  va_list ap;
  fprintf(stderr, "FAILED: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

#define CHECK(call)                                                                       \
  do {                                                                                    \
    ncclResult_t r_ = (call);                                                             \
    if (r_ != ncclSuccess)                                                                \
      fail("%s:%d: %s returned %d (%s): %s", __FILE__, __LINE__, #call, (int)r_,          \
           ncclGetErrorString(r_), ncclGetLastError(NULL));                               \
  } while (0)

static float val(int rank, size_t i) { return (float)((rank * 131 + (int)i * 7) % 61) - 30.0f; }

static const size_t ag_counts[NRANKS] = {2, 0, 5};
static const size_t ag_displs[NRANKS] = {1, 4, 5}; /* gaps at 0 and 3..4 */
#define AG_TOTAL 11
static const size_t rs_counts[NRANKS] = {3, 1, 0};
static const size_t rs_displs[NRANKS] = {4, 0, 8};
#define RS_TOTAL 8

static size_t a2a(int i, int j) { return (size_t)((i + 2 * j) % 3) * 2; }

static void* rank_main(void* arg) {
  int r = (int)(intptr_t)arg;
  ncclComm_t c = comms[r];
  size_t i;
  int p;

  /* AllGatherV, out of place: gaps keep their marker. */
  {
    float send[5], out[AG_TOTAL], want[AG_TOTAL];
    for (i = 0; i < AG_TOTAL; i++) out[i] = want[i] = -1.0f;
    for (i = 0; i < ag_counts[r]; i++) send[i] = val(r, i);
    for (p = 0; p < NRANKS; p++)
      for (i = 0; i < ag_counts[p]; i++) want[ag_displs[p] + i] = val(p, i);
    CHECK(mixcclAllGatherV(send, ag_counts[r], out, ag_counts, ag_displs, ncclFloat, c, NULL));
    for (i = 0; i < AG_TOTAL; i++)
      if (out[i] != want[i]) fail("allgatherv rank %d [%zu] = %g, want %g", r, i, out[i], want[i]);
    /* In place: sendbuff is recvbuff + displs[rank]. */
    for (i = 0; i < AG_TOTAL; i++) out[i] = -1.0f;
    for (i = 0; i < ag_counts[r]; i++) out[ag_displs[r] + i] = val(r, i);
    CHECK(mixcclAllGatherV(out + ag_displs[r], ag_counts[r], out, ag_counts, ag_displs, ncclFloat,
                           c, NULL));
    for (i = 0; i < AG_TOTAL; i++)
      if (out[i] != want[i]) fail("allgatherv in place rank %d [%zu]", r, i);
  }

  /* ReduceScatterV, sum of floats. */
  {
    float send[RS_TOTAL], out[3];
    for (i = 0; i < RS_TOTAL; i++) send[i] = val(r, i);
    CHECK(mixcclReduceScatterV(send, rs_counts, rs_displs, out, rs_counts[r], ncclFloat, ncclSum,
                               c, NULL));
    for (i = 0; i < rs_counts[r]; i++) {
      float want = 0.0f;
      for (p = 0; p < NRANKS; p++) want += val(p, rs_displs[r] + i);
      if (out[i] != want) fail("reducescatterv rank %d [%zu] = %g, want %g", r, i, out[i], want);
    }
  }

  /* AlltoAllV, int32: rank i sends a2a(i, j) elements to rank j. */
  {
    size_t sc[NRANKS], sd[NRANKS], rc[NRANKS], rd[NRANKS], st = 0, rt = 0;
    int32_t send[64], recv[64];
    for (p = 0; p < NRANKS; p++) {
      sc[p] = a2a(r, p);
      sd[p] = st;
      st += sc[p] + 1;
      rc[p] = a2a(p, r);
      rd[p] = rt;
      rt += rc[p];
    }
    for (p = 0; p < NRANKS; p++)
      for (i = 0; i < sc[p]; i++) send[sd[p] + i] = r * 1000 + p * 100 + (int)i;
    CHECK(mixcclAlltoAllV(send, sc, sd, recv, rc, rd, ncclInt32, c, NULL));
    for (p = 0; p < NRANKS; p++)
      for (i = 0; i < rc[p]; i++)
        if (recv[rd[p] + i] != p * 1000 + r * 100 + (int)i) fail("alltoallv rank %d from %d", r, p);
  }

  /* fp8: 1.0 from every rank sums to 3.0 (OCP e4m3 0x38 -> 0x44; FNUZ 0x40 -> 0x4c). */
  {
    uint8_t one = 0x38, sum = 0, one_fnuz = 0x40;
    CHECK(ncclAllReduce(&one, &sum, 1, ncclFloat8e4m3, ncclSum, c, NULL));
    if (sum != 0x44) fail("e4m3 sum rank %d: %#x", r, sum);
    CHECK(ncclAllReduce(&one_fnuz, &sum, 1, mixcclFloat8e4m3fnuz, ncclSum, c, NULL));
    if (sum != 0x4c) fail("e4m3fnuz sum rank %d: %#x", r, sum);
  }

  /* Inside a group: refused, the communicator still usable. */
  {
    float x = 1.0f, y[NRANKS];
    size_t cnt[NRANKS] = {1, 1, 1}, dsp[NRANKS] = {0, 1, 2};
    ncclResult_t got;
    CHECK(ncclGroupStart());
    got = mixcclAllGatherV(&x, 1, y, cnt, dsp, ncclFloat, c, NULL);
    CHECK(ncclGroupEnd());
    if (got != ncclInvalidUsage) fail("AllGatherV in a group returned %d", (int)got);
    CHECK(mixcclAllGatherV(&x, 1, y, cnt, dsp, ncclFloat, c, NULL));
  }

  /* Ranks disagreeing about counts: a mismatch (ncclInvalidUsage) everywhere. */
  {
    float x[2] = {1.0f, 2.0f}, y[8];
    size_t cnt[NRANKS] = {2, 2, 2}, dsp[NRANKS] = {0, 2, 4};
    ncclResult_t got;
    if (r == 2) {
      cnt[0] = 3;
      dsp[1] = 3;
      dsp[2] = 5;
    }
    got = mixcclAllGatherV(x, 2, y, cnt, dsp, ncclFloat, c, NULL);
    if (got != ncclInvalidUsage) fail("disagreeing counts rank %d returned %d", r, (int)got);
    if (!strstr(ncclGetLastError(c), "mismatched"))
      fail("disagreeing counts rank %d: %s", r, ncclGetLastError(c));
  }
  return NULL;
}

int main(void) {
  pthread_t t[NRANKS];
  int r;
  size_t shares[3];
  const uint64_t w[3] = {448, 240, 0};
  CHECK(mixcclSplitByWeight(1000, w, 3, shares));
  if (shares[0] != 651 || shares[1] != 349 || shares[2] != 0)
    fail("split %zu %zu %zu", shares[0], shares[1], shares[2]);
  CHECK(ncclCommInitAll(comms, NRANKS, NULL));
  for (r = 0; r < NRANKS; r++) pthread_create(&t[r], NULL, rank_main, (void*)(intptr_t)r);
  for (r = 0; r < NRANKS; r++) pthread_join(t[r], NULL);
  for (r = 0; r < NRANKS; r++) ncclCommAbort(comms[r]);
  printf("uneven OK\n");
  return 0;
}
