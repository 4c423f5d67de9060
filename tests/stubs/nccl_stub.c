/* A stub NCCL (libnccl.so.2's API, the part mixccl uses) over the stub CUDA runtime
 * named by MIXCCL_CUDA_LIB: collectives really run across the island's processes
 * (ccl_shm.h), queued on the caller's stream (STUB_CCL_SYNC=1: host-synchronous);
 * ncclCommGetAsyncError reports a queued one's failure. Built with -DPRETEND_MIXCCL it also exports mixccl's own marker
 * symbol, to check that mixccl refuses to bridge to itself. */
#include "ccl_shm.h"

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct ccl_comm *ncclComm_t;
typedef int ncclResult_t;
typedef void *cudaStream_t;
typedef int (*push_t)(void *);
typedef int (*pop_t)(void **);
typedef int (*retain_t)(void **, int);
typedef int (*attr_t)(void *, int, uintptr_t);
typedef int (*dtoh_t)(void *, uintptr_t, size_t, void *);
typedef int (*htod_t)(uintptr_t, const void *, size_t, void *);
typedef int (*sync_t)(void *);

enum { SUCCESS = 0, SYSTEM_ERROR = 2, INTERNAL_ERROR = 3, INVALID_ARGUMENT = 4, REMOTE_ERROR = 6 };

#define SYM(T, n) ((T)ccl_runtime_sym("MIXCCL_CUDA_LIB", n))

/* Runs `f` with the primary context of the device holding `dev` pushed. */
static int with_ctx(const void *dev, int (*f)(void *, const void *, size_t, void *), void *a,
                    const void *b, size_t n, void *s) {
    int ordinal = 0;
    if (SYM(attr_t, "cuPointerGetAttribute")(&ordinal, 9, (uintptr_t)dev) != 0) return -1;
    void *ctx;
    if (SYM(retain_t, "cuDevicePrimaryCtxRetain")(&ctx, ordinal) != 0) return -1;
    SYM(push_t, "cuCtxPushCurrent_v2")(ctx);
    int rc = f(a, b, n, s);
    SYM(pop_t, "cuCtxPopCurrent_v2")(NULL);
    return rc;
}

static int d2h(void *dst, const void *src, size_t n, void *s) {
    if (SYM(sync_t, "cuStreamSynchronize")(s) != 0) return -1;
    if (SYM(dtoh_t, "cuMemcpyDtoHAsync_v2")(dst, (uintptr_t)src, n, s) != 0) return -1;
    return SYM(sync_t, "cuStreamSynchronize")(s);
}

static int h2d(void *dst, const void *src, size_t n, void *s) {
    if (SYM(htod_t, "cuMemcpyHtoDAsync_v2")((uintptr_t)dst, src, n, s) != 0) return -1;
    return SYM(sync_t, "cuStreamSynchronize")(s);
}

static int to_host(void *dst, const void *dev, size_t n, void *s) { return with_ctx(dev, d2h, dst, dev, n, s); }
static int to_dev(void *dev, const void *src, size_t n, void *s) { return with_ctx(dev, h2d, dev, src, n, s); }

static void setup(void) {
    ccl_to_host = to_host;
    ccl_to_dev = to_dev;
    ccl_bind_stream_order("MIXCCL_CUDA_LIB");
}

const char *ncclGetErrorString(ncclResult_t rc) {
    switch (rc) {
    case SUCCESS: return "no error";
    case SYSTEM_ERROR: return "unhandled system error (stub)";
    case INTERNAL_ERROR: return "internal error (stub)";
    case INVALID_ARGUMENT: return "invalid argument (stub)";
    case REMOTE_ERROR: return "remote process exited or there was a network error (stub)";
    default: return "unknown result code";
    }
}

ncclResult_t ncclGetVersion(int *v) { *v = 22005; return SUCCESS; }

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (ccl_should_fail("ncclGetUniqueId")) return SYSTEM_ERROR;
    atomic_fetch_add(&ccl_counts[C_ID], 1);
    ccl_new_id(id->internal, sizeof id->internal);
    return SUCCESS;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    setup();
    if (ccl_should_fail("ncclCommInitRank")) return SYSTEM_ERROR;
    if (nranks < 1 || rank < 0 || rank >= nranks) return INVALID_ARGUMENT;
    id.internal[127] = 0;
    *comm = ccl_join(id.internal, nranks, rank);
    return *comm ? SUCCESS : SYSTEM_ERROR;
}

static int type_ok(int t) { return t >= T_I8 && t <= T_BF16; }

static ncclResult_t result(int rc) { return rc == 0 ? SUCCESS : rc == -2 ? INVALID_ARGUMENT : REMOTE_ERROR; }

/* Queues the collective on stream s (see ccl_shm.h); checked here first. */
static ncclResult_t submit(ncclComm_t c, int kind, const void *send, void *recv, size_t count, int t, int op,
                           int root, cudaStream_t s) {
    if (!c) return INVALID_ARGUMENT;
    return result(ccl_submit((struct ccl_op){c, kind, send, recv, count, t, op, root, s, 0}));
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, int t, int op, ncclComm_t c, cudaStream_t s) {
    atomic_fetch_add(&ccl_counts[C_AR], 1);
    if (ccl_should_fail("ncclAllReduce")) return INTERNAL_ERROR;
    if (!type_ok(t) || op < 0 || op > 3) return INVALID_ARGUMENT;
    return submit(c, K_AR, send, recv, count, t, op, 0, s);
}

ncclResult_t ncclReduceScatter(const void *send, void *recv, size_t count, int t, int op, ncclComm_t c, cudaStream_t s) {
    atomic_fetch_add(&ccl_counts[C_RS], 1);
    if (ccl_should_fail("ncclReduceScatter")) return INTERNAL_ERROR;
    if (!type_ok(t) || op < 0 || op > 3) return INVALID_ARGUMENT;
    return submit(c, K_RS, send, recv, count, t, op, 0, s);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, int t, ncclComm_t c, cudaStream_t s) {
    atomic_fetch_add(&ccl_counts[C_AG], 1);
    if (ccl_should_fail("ncclAllGather")) return INTERNAL_ERROR;
    if (!type_ok(t)) return INVALID_ARGUMENT;
    return submit(c, K_AG, send, recv, count, t, OP_SUM, 0, s);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, int t, int root, ncclComm_t c, cudaStream_t s) {
    atomic_fetch_add(&ccl_counts[C_BC], 1);
    if (ccl_should_fail("ncclBroadcast")) return INTERNAL_ERROR;
    if (!type_ok(t) || !c || root < 0 || root >= c->nranks) return INVALID_ARGUMENT;
    return submit(c, K_BC, send, recv, count, t, OP_SUM, root, s);
}

/* The first failure of a collective queued on `c` (ncclRemoteError), or ncclSuccess. */
ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *asyncError) {
    if (!c || !asyncError) return INVALID_ARGUMENT;
    *asyncError = result(ccl_async_error(c));
    return SUCCESS;
}

ncclResult_t ncclCommAbort(ncclComm_t c) { ccl_abort(c); return SUCCESS; }

ncclResult_t ncclCommDestroy(ncclComm_t c) { ccl_destroy(c); return SUCCESS; }

#ifdef PRETEND_MIXCCL
int mixcclCommInitFromEnv(void **comm) { (void)comm; return INTERNAL_ERROR; }
#endif
