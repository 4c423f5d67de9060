/* A stub of Cambricon CNRT (libcnrt.so) for mixccl's tests: the symbols
 * src/device/cnrt.rs loads, with CNRT's documented behaviour where mixccl depends
 * on it, and loud failure on misuse (see devmem.h).
 *
 * - cnrtPointerGetAttributes: device memory is cnrtMemTypeDevice (2) with device,
 *   size and deviceBasePointer; cnrtHostMalloc memory cnrtMemTypeHost (1); any
 *   other pointer succeeds with cnrtMemTypeUnregistered (0).
 * - Copies: only cnrtMemcpyAsync_V2 is exported (the shim prefers _V3 and falls
 *   back); directions cnrtMemcpyHostToDev (0) and cnrtMemcpyDevToHost (2). With
 *   pinned host memory the copy is queued; with pageable memory it is synchronous,
 *   as the CNRT guide documents (queued behind earlier work, then waited for).
 * - Queues run their work (copies, host functions, notifier places and waits) in
 *   order on a worker thread each (devmem.h); cnrtQueryNotifier answers
 *   cnrtErrorNotReady until the work before the notifier's last place has run.
 * - The current device is per thread (default 0), checked against
 *   STUB_CNRT_DEVICES (default 2); allocations and queues belong to it.
 * - STUB_FAIL (devmem.h): cnrtMalloc fails with cnrtErrorNoMem (100100),
 *   cnrtHostMalloc with cnrtErrorSysNoMem (100010), cnrtQueueSync with
 *   cnrtErrorQueue (100060).
 * - -DOMIT_cnrtMemcpyAsync_V2 builds it with no async copy at all. */
#include "devmem.h"

typedef int cnrtRet_t;
typedef void *cnrtQueue_t;
typedef void *cnrtNotifier_t;
typedef void (*cnrtHostFn_t)(void *userData);

enum { cnrtSuccess = 0, cnrtErrorNotReady = 1, cnrtErrorDeviceInvalid = 100005, cnrtErrorArgsInvalid = 100006,
       cnrtErrorSysNoMem = 100010, cnrtErrorQueue = 100060, cnrtErrorNoMem = 100100 };

typedef struct {
    int type; /* cnrtMemType_t */
    int device;
    size_t size;
    void *devicePointer;
    void *hostPointer;
    int cacheMode; /* cnrtUvaCacheMode_t */
    void *deviceBasePointer;
} cnrtPointerAttributes_t;

static __thread int current = 0;

static void init(void) { dm_init("cnrt"); }

cnrtRet_t cnrtGetDevice(int *dev) {
    if (!dev) return cnrtErrorArgsInvalid;
    *dev = current;
    return cnrtSuccess;
}

cnrtRet_t cnrtSetDevice(int dev) {
    if (dev < 0 || dev >= dm_ndevices("STUB_CNRT_DEVICES")) return cnrtErrorDeviceInvalid;
    current = dev;
    return cnrtSuccess;
}

cnrtRet_t cnrtPointerGetAttributes(cnrtPointerAttributes_t *attr, const void *ptr) {
    init();
    if (!attr) return cnrtErrorArgsInvalid;
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    memset(attr, 0, sizeof *attr);
    attr->device = -1;
    if (!d) return cnrtSuccess; /* cnrtMemTypeUnregistered */
    attr->type = a.pinned ? 1 : 2;
    attr->device = a.pinned ? -1 : a.device;
    attr->size = a.size;
    if (a.pinned) {
        attr->hostPointer = (void *)ptr;
    } else {
        attr->devicePointer = (void *)ptr;
        attr->deviceBasePointer = (void *)a.base;
    }
    return cnrtSuccess;
}

#ifndef OMIT_cnrtMemcpyAsync_V2
cnrtRet_t cnrtMemcpyAsync_V2(void *dst, void *src, size_t n, cnrtQueue_t q, int dir) {
    init();
    struct dm_stream *st = dm_stream_of("cnrtMemcpyAsync_V2", q);
    void *to;
    const void *from, *host;
    if (dir == 2) { /* cnrtMemcpyDevToHost */
        dm_host_range("cnrtMemcpyAsync_V2(DevToHost) dst", dst, n);
        from = dm_dev_range("cnrtMemcpyAsync_V2(DevToHost) src", src, n);
        to = dst;
        host = dst;
    } else if (dir == 0) { /* cnrtMemcpyHostToDev */
        dm_host_range("cnrtMemcpyAsync_V2(HostToDev) src", src, n);
        to = dm_dev_range("cnrtMemcpyAsync_V2(HostToDev) dst", dst, n);
        from = src;
        host = src;
    } else {
        dm_die("cnrtMemcpyAsync_V2", "only HostToDev (0) and DevToHost (2) are expected", dst);
        return cnrtErrorArgsInvalid;
    }
    if (dm_is_pinned(host, n)) dm_enqueue(st, to, from, n);
    else dm_copy_sync(st, to, from, n); /* pageable host memory: synchronous */
    return cnrtSuccess;
}
#endif

cnrtRet_t cnrtQueueCreate(cnrtQueue_t *q) {
    init();
    if (!q) return cnrtErrorArgsInvalid;
    *q = dm_stream_new(current);
    return cnrtSuccess;
}

cnrtRet_t cnrtQueueDestroy(cnrtQueue_t q) {
    if (!q) return cnrtErrorArgsInvalid;
    dm_stream_destroy("cnrtQueueDestroy", q);
    return cnrtSuccess;
}

cnrtRet_t cnrtQueueSync(cnrtQueue_t q) {
    struct dm_stream *st = dm_stream_of("cnrtQueueSync", q);
    if (dm_fail("cnrtQueueSync")) {
        dm_discard(st);
        return cnrtErrorQueue;
    }
    dm_sync(st);
    return cnrtSuccess;
}

cnrtRet_t cnrtNotifierCreate(cnrtNotifier_t *n) {
    init();
    if (!n) return cnrtErrorArgsInvalid;
    *n = dm_event_new(current);
    return cnrtSuccess;
}

cnrtRet_t cnrtNotifierDestroy(cnrtNotifier_t n) {
    if (!n) return cnrtErrorArgsInvalid;
    dm_event_destroy("cnrtNotifierDestroy", n);
    return cnrtSuccess;
}

cnrtRet_t cnrtPlaceNotifier(cnrtNotifier_t n, cnrtQueue_t q) {
    if (!n) return cnrtErrorArgsInvalid;
    dm_event_record(dm_stream_of("cnrtPlaceNotifier", q), dm_event_of("cnrtPlaceNotifier", n));
    return cnrtSuccess;
}

cnrtRet_t cnrtQueryNotifier(cnrtNotifier_t n) {
    if (!n) return cnrtErrorArgsInvalid;
    return dm_event_done(dm_event_of("cnrtQueryNotifier", n)) ? cnrtSuccess : cnrtErrorNotReady;
}

cnrtRet_t cnrtQueueWaitNotifier(cnrtNotifier_t n, cnrtQueue_t q, unsigned flag) {
    if (!n || flag != 0) return cnrtErrorArgsInvalid;
    dm_stream_wait(dm_stream_of("cnrtQueueWaitNotifier", q), dm_event_of("cnrtQueueWaitNotifier", n));
    return cnrtSuccess;
}

cnrtRet_t cnrtInvokeHostFunc(cnrtQueue_t q, cnrtHostFn_t fn, void *userData) {
    if (!fn) return cnrtErrorArgsInvalid;
    dm_enqueue_host_fn(dm_stream_of("cnrtInvokeHostFunc", q), fn, userData);
    return cnrtSuccess;
}

cnrtRet_t cnrtHostMalloc(void **p, size_t n) {
    init();
    if (!p) return cnrtErrorArgsInvalid;
    if (dm_fail("cnrtHostMalloc")) return cnrtErrorSysNoMem;
    *p = dm_alloc_pinned(n);
    return *p ? cnrtSuccess : cnrtErrorSysNoMem;
}

cnrtRet_t cnrtFreeHost(void *p) {
    if (!p) return cnrtErrorArgsInvalid;
    return dm_free("cnrtFreeHost", p, 1);
}

cnrtRet_t cnrtMalloc(void **p, size_t n) {
    init();
    if (!p || n == 0) return cnrtErrorArgsInvalid;
    if (dm_fail("cnrtMalloc")) return cnrtErrorNoMem;
    *p = dm_alloc(n, current);
    return *p ? cnrtSuccess : cnrtErrorNoMem;
}

cnrtRet_t cnrtFree(void *p) {
    if (!p) return cnrtErrorArgsInvalid;
    return dm_free("cnrtFree", p, 0);
}

const char *cnrtGetErrorStr(cnrtRet_t e) {
    switch (e) {
    case cnrtSuccess: return "Success.";
    case cnrtErrorNotReady: return "The device or resource requested is busy now.";
    case cnrtErrorDeviceInvalid: return "Invalid device ordinal.";
    case cnrtErrorArgsInvalid: return "Invalid argument.";
    case cnrtErrorSysNoMem: return "Insufficient host memory.";
    case cnrtErrorQueue: return "Failure on the queue.";
    case cnrtErrorNoMem: return "Insufficient MLU device memory.";
    default: return "Unknown error.";
    }
}
