/* A stub HCCL (libhccl.so's API, the part mixccl uses) over the stub ACL runtime
 * named by MIXCCL_ACL_LIB: collectives really run across the island's processes
 * (ccl_shm.h), queued on the caller's stream (STUB_CCL_SYNC=1: host-synchronous);
 * HcclGetCommAsyncError reports a queued one's failure. HCCL numbers types and ops
 * its own way; it broadcasts in place. */
#include "ccl_shm.h"

#define ROOT_INFO_BYTES 4108
typedef struct ccl_comm *HcclComm;
typedef int HcclResult;
typedef int (*attr_t)(const void *, void *);
typedef int (*getdev_t)(int32_t *);
typedef int (*setdev_t)(int32_t);
typedef int (*memcpy_t)(void *, size_t, const void *, size_t, int, void *);
typedef int (*sync_t)(void *);

enum { SUCCESS = 0, E_PARA = 1, E_INTERNAL = 4, E_REMOTE = 15 };

#define SYM(T, n) ((T)ccl_runtime_sym("MIXCCL_ACL_LIB", n))

struct ptr_attr { uint32_t id, type, page, rsv[4]; };

/* Copies with the thread's device set to the one holding `dev`, then set back. */
static int copy(void *dst, const void *src, size_t n, int kind, const void *dev, void *s) {
    struct ptr_attr a;
    if (SYM(attr_t, "aclrtPointerGetAttributes")(dev, &a) != 0 || a.type != 1) return -1;
    int32_t prev = -1;
    if (SYM(getdev_t, "aclrtGetDevice")(&prev) != 0) prev = -1;
    if (SYM(setdev_t, "aclrtSetDevice")((int32_t)a.id) != 0) return -1;
    int rc = SYM(sync_t, "aclrtSynchronizeStream")(s);
    if (rc == 0) rc = SYM(memcpy_t, "aclrtMemcpyAsync")(dst, n, src, n, kind, s);
    if (rc == 0) rc = SYM(sync_t, "aclrtSynchronizeStream")(s);
    if (prev >= 0) SYM(setdev_t, "aclrtSetDevice")(prev);
    return rc;
}

static int to_host(void *dst, const void *dev, size_t n, void *s) { return copy(dst, dev, n, 2, dev, s); }
static int to_dev(void *dev, const void *src, size_t n, void *s) { return copy(dev, src, n, 1, dev, s); }

/* HcclDataType to the common numbering. */
static int type_of(int t) {
    switch (t) {
    case 0: return T_I8;
    case 2: return T_I32;
    case 3: return T_F16;
    case 4: return T_F32;
    case 5: return T_I64;
    case 6: return T_U64;
    case 7: return T_U8;
    case 9: return T_U32;
    case 10: return T_F64;
    case 11: return T_BF16;
    default: return T_NONE;
    }
}

const char *HcclGetErrorString(HcclResult rc) {
    switch (rc) {
    case SUCCESS: return "no error";
    case E_PARA: return "parameter error (stub)";
    case E_INTERNAL: return "internal error (stub)";
    case E_REMOTE: return "remote error (stub)";
    default: return "unknown error";
    }
}

HcclResult HcclGetRootInfo(void *info) {
    if (ccl_should_fail("HcclGetRootInfo")) return E_INTERNAL;
    atomic_fetch_add(&ccl_counts[C_ID], 1);
    ccl_new_id(info, ROOT_INFO_BYTES);
    return SUCCESS;
}

HcclResult HcclCommInitRootInfo(uint32_t nranks, const void *info, uint32_t rank, HcclComm *comm) {
    ccl_to_host = to_host;
    ccl_to_dev = to_dev;
    ccl_bind_stream_order("MIXCCL_ACL_LIB");
    if (ccl_should_fail("HcclCommInitRootInfo")) return E_INTERNAL;
    if (rank >= nranks) return E_PARA;
    char name[128];
    memcpy(name, info, sizeof name - 1);
    name[sizeof name - 1] = 0;
    *comm = ccl_join(name, (int)nranks, (int)rank);
    return *comm ? SUCCESS : E_INTERNAL;
}

static HcclResult result(int rc) { return rc == 0 ? SUCCESS : rc == -2 ? E_PARA : E_REMOTE; }

/* Queues the collective on stream s (see ccl_shm.h); checked here first. */
static HcclResult submit(HcclComm c, int kind, const void *send, void *recv, uint64_t count, int t, int op,
                         int root, void *s) {
    if (!c) return E_PARA;
    return result(ccl_submit((struct ccl_op){c, kind, send, recv, count, t, op, root, s, 0}));
}

HcclResult HcclAllReduce(void *send, void *recv, uint64_t count, int t, int op, HcclComm c, void *s) {
    atomic_fetch_add(&ccl_counts[C_AR], 1);
    if (ccl_should_fail("HcclAllReduce")) return E_INTERNAL;
    if (type_of(t) == T_NONE || op < 0 || op > 3) return E_PARA;
    return submit(c, K_AR, send, recv, count, type_of(t), op, 0, s);
}

HcclResult HcclReduceScatter(void *send, void *recv, uint64_t count, int t, int op, HcclComm c, void *s) {
    atomic_fetch_add(&ccl_counts[C_RS], 1);
    if (ccl_should_fail("HcclReduceScatter")) return E_INTERNAL;
    if (type_of(t) == T_NONE || op < 0 || op > 3) return E_PARA;
    return submit(c, K_RS, send, recv, count, type_of(t), op, 0, s);
}

HcclResult HcclAllGather(void *send, void *recv, uint64_t count, int t, HcclComm c, void *s) {
    atomic_fetch_add(&ccl_counts[C_AG], 1);
    if (ccl_should_fail("HcclAllGather")) return E_INTERNAL;
    if (type_of(t) == T_NONE) return E_PARA;
    return submit(c, K_AG, send, recv, count, type_of(t), OP_SUM, 0, s);
}

HcclResult HcclBroadcast(void *buf, uint64_t count, int t, uint32_t root, HcclComm c, void *s) {
    atomic_fetch_add(&ccl_counts[C_BC], 1);
    if (ccl_should_fail("HcclBroadcast")) return E_INTERNAL;
    if (type_of(t) == T_NONE || !c || (int)root >= c->nranks) return E_PARA;
    return submit(c, K_BC, buf, buf, count, type_of(t), OP_SUM, (int)root, s);
}

/* HCCL's documented signature: *asyncError is HCCL_E_REMOTE once a collective
 * queued on `c` failed, else HCCL_SUCCESS. */
HcclResult HcclGetCommAsyncError(HcclComm c, HcclResult *asyncError) {
    if (!c || !asyncError) return E_PARA;
    *asyncError = result(ccl_async_error(c));
    return SUCCESS;
}

HcclResult HcclCommDestroy(HcclComm c) {
    /* mixccl also calls this to stop a hung call (HCCL has no abort): wake this
     * process's calls and queued collectives on it and leave the segment mapped
     * (a stub may leak it). */
    atomic_fetch_add(&ccl_counts[C_DESTROY], 1);
    atomic_store(&c->aborted, 1);
    return SUCCESS;
}
