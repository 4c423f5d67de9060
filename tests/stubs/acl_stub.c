/* A stub of Huawei AscendCL (libascendcl.so) for mixccl's tests: the symbols
 * src/device/acl.rs loads, with ACL's documented behaviour where mixccl depends on
 * it, and loud failure on misuse (see devmem.h).
 *
 * - aclInit once: a second call returns ACL_ERROR_REPEAT_INITIALIZE (100002); any
 *   other call before aclInit aborts.
 * - No default device: aclrtGetDevice fails with ACL_ERROR_RT_CONTEXT_NULL (107002)
 *   until the thread calls aclrtSetDevice; streams, copies and allocations on such
 *   a thread abort. A stream used on a thread whose device is not the stream's
 *   aborts too (streams belong to a device's context).
 * - aclrtPointerGetAttributes knows only memory ACL allocated (other pointers fail
 *   with ACL_ERROR_INVALID_PARAM): device memory is location type DEVICE (1) with
 *   the device id, aclrtMallocHost memory HOST (0).
 * - aclrtMemcpyAsync checks count <= destMax (ACL_ERROR_INVALID_PARAM otherwise).
 *   With pinned host memory (aclrtMallocHost) it is asynchronous and runs at
 *   aclrtSynchronizeStream; with other host memory it copies before returning, as
 *   CANN 8+ documents.
 * - aclGetRecentErrMsg returns the calling thread's last failure's text, then clears it.
 * - STUB_FAIL (devmem.h): aclrtMalloc/aclrtMallocHost fail with
 *   ACL_ERROR_RT_MEMORY_ALLOCATION (207001), aclrtSynchronizeStream with
 *   ACL_ERROR_RT_AICORE_EXCEPTION (507015). STUB_ACL_DEVICES (default 2). */
#include "devmem.h"

typedef int aclError;
typedef void *aclrtStream;

enum { ACL_SUCCESS = 0, ACL_ERROR_INVALID_PARAM = 100000, ACL_ERROR_REPEAT_INITIALIZE = 100002,
       ACL_ERROR_RT_CONTEXT_NULL = 107002, ACL_ERROR_RT_INVALID_DEVICEID = 107001,
       ACL_ERROR_RT_MEMORY_ALLOCATION = 207001, ACL_ERROR_RT_AICORE_EXCEPTION = 507015 };

typedef struct {
    uint32_t id;
    int type; /* aclrtMemLocationType */
} aclrtMemLocation;

typedef struct {
    aclrtMemLocation location;
    uint32_t pageSize;
    uint32_t rsv[4];
} aclrtPtrAttributes;

static int initialised;
static __thread int current = -1;
static __thread char errmsg[256];

static aclError fail(aclError rc, const char *fmt, const char *what) {
    snprintf(errmsg, sizeof errmsg, fmt, what);
    return rc;
}

static void need_init(const char *call) {
    if (!initialised) dm_die(call, "called before aclInit", NULL);
}

static void need_device(const char *call) {
    need_init(call);
    if (current < 0) dm_die(call, "device call on a thread with no device set (aclrtSetDevice first)", NULL);
}

/* The stream, checked to belong to this thread's device (NULL: the default stream). */
static struct dm_stream *stream_here(const char *call, aclrtStream s) {
    struct dm_stream *st = dm_stream_of(call, s);
    if (s && st->device != current) {
        fprintf(stderr, "acl stub: MISUSE in %s: stream of device %d used on a thread whose device is %d\n",
                call, st->device, current);
        abort();
    }
    return st;
}

aclError aclInit(const char *config) {
    (void)config;
    if (initialised) return fail(ACL_ERROR_REPEAT_INITIALIZE, "%s", "EH9999: repeated initialization");
    dm_init("acl");
    initialised = 1;
    return ACL_SUCCESS;
}

aclError aclrtGetDevice(int32_t *dev) {
    need_init("aclrtGetDevice");
    if (!dev) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: deviceId is NULL");
    if (current < 0) return fail(ACL_ERROR_RT_CONTEXT_NULL, "%s", "EE1001: no device set on this thread");
    *dev = current;
    return ACL_SUCCESS;
}

aclError aclrtSetDevice(int32_t dev) {
    need_init("aclrtSetDevice");
    if (dev < 0 || dev >= dm_ndevices("STUB_ACL_DEVICES"))
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "%s", "EE1001: invalid device id");
    current = dev;
    return ACL_SUCCESS;
}

aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attr) {
    need_init("aclrtPointerGetAttributes");
    if (!attr) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: attributes is NULL");
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    if (!d) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: the pointer was not allocated by ACL");
    memset(attr, 0, sizeof *attr);
    attr->location.type = a.pinned ? 0 : 1;
    attr->location.id = a.pinned ? 0 : (uint32_t)a.device;
    attr->pageSize = 4096;
    return ACL_SUCCESS;
}

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, int kind, aclrtStream s) {
    need_device("aclrtMemcpyAsync");
    struct dm_stream *st = stream_here("aclrtMemcpyAsync", s);
    if (count > destMax) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: count is larger than destMax");
    void *to;
    const void *from;
    const void *host;
    if (kind == 2) { /* ACL_MEMCPY_DEVICE_TO_HOST */
        dm_host_range("aclrtMemcpyAsync(DEVICE_TO_HOST) dst", dst, count);
        from = dm_dev_range("aclrtMemcpyAsync(DEVICE_TO_HOST) src", src, count);
        to = dst;
        host = dst;
    } else if (kind == 1) { /* ACL_MEMCPY_HOST_TO_DEVICE */
        dm_host_range("aclrtMemcpyAsync(HOST_TO_DEVICE) src", src, count);
        to = dm_dev_range("aclrtMemcpyAsync(HOST_TO_DEVICE) dst", dst, count);
        from = src;
        host = src;
    } else {
        dm_die("aclrtMemcpyAsync", "only HOST_TO_DEVICE (1) and DEVICE_TO_HOST (2) are expected", dst);
        return ACL_ERROR_INVALID_PARAM;
    }
    if (dm_is_pinned(host, count)) dm_enqueue(st, to, from, count);
    else if (count) memcpy(to, from, count); /* pageable host memory: synchronous */
    return ACL_SUCCESS;
}

aclError aclrtCreateStream(aclrtStream *s) {
    need_device("aclrtCreateStream");
    if (!s) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: stream is NULL");
    *s = dm_stream_new(current);
    return ACL_SUCCESS;
}

aclError aclrtDestroyStream(aclrtStream s) {
    need_device("aclrtDestroyStream");
    if (!s) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: stream is NULL");
    stream_here("aclrtDestroyStream", s);
    dm_stream_destroy("aclrtDestroyStream", s);
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeStream(aclrtStream s) {
    need_device("aclrtSynchronizeStream");
    struct dm_stream *st = stream_here("aclrtSynchronizeStream", s);
    if (dm_fail("aclrtSynchronizeStream")) {
        dm_discard(st);
        return fail(ACL_ERROR_RT_AICORE_EXCEPTION, "%s", "EZ9999: aicore exception (stub fault injection)");
    }
    dm_sync(st);
    return ACL_SUCCESS;
}

aclError aclrtMallocHost(void **p, size_t n) {
    need_device("aclrtMallocHost");
    if (!p || n == 0) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: invalid hostPtr or size");
    if (dm_fail("aclrtMallocHost"))
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s", "EL0004: failed to allocate host memory");
    *p = dm_alloc_pinned(n);
    return *p ? ACL_SUCCESS : fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s", "EL0004: out of host memory");
}

aclError aclrtFreeHost(void *p) {
    need_device("aclrtFreeHost");
    if (!p) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: hostPtr is NULL");
    return dm_free("aclrtFreeHost", p, 1);
}

aclError aclrtMalloc(void **p, size_t n, int policy) {
    need_device("aclrtMalloc");
    (void)policy;
    if (!p || n == 0) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: invalid devPtr or size");
    if (dm_fail("aclrtMalloc"))
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s", "EL0004: failed to allocate device memory");
    *p = dm_alloc(n, current);
    return *p ? ACL_SUCCESS : fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s", "EL0004: out of device memory");
}

aclError aclrtFree(void *p) {
    need_device("aclrtFree");
    if (!p) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: devPtr is NULL");
    return dm_free("aclrtFree", p, 0);
}

const char *aclGetRecentErrMsg(void) {
    static __thread char out[256];
    if (!errmsg[0]) return NULL;
    memcpy(out, errmsg, sizeof out);
    errmsg[0] = 0;
    return out;
}
