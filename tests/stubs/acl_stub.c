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
 *   CANN 8+ documents (queued behind the stream's earlier work, then waited for).
 * - Streams run their work in order on a worker thread each (devmem.h).
 * - Events: aclrtCreateEventExWithFlag (re-recordable; only ACL_EVENT_SYNC events
 *   may be waited on), aclrtRecordEvent, aclrtQueryEventStatus (NOT_READY 0 until
 *   the work before the last record has run, then COMPLETE 1), aclrtStreamWaitEvent,
 *   aclrtDestroyEvent.
 * - Callbacks: aclrtLaunchCallback needs the stream subscribed to a thread
 *   (aclrtSubscribeReport; ACL_ERROR_RT_STREAM_SUBSCRIBE 107011 otherwise). When
 *   the stream reaches the callback it is handed to that thread, which runs it
 *   inside aclrtProcessReport(timeout ms; ACL_ERROR_RT_REPORT_TIMEOUT 507012 when
 *   none came; ACL_ERROR_RT_THREAD_SUBSCRIBE 107012 for a thread with no stream);
 *   with ACL_CALLBACK_BLOCK the stream waits until the callback has returned.
 * - stubLaunchHostFunc and stubCopyNow (not ACL's): what the stub HCCL queues its
 *   collectives with (see there).
 * - aclGetRecentErrMsg returns the calling thread's last failure's text, then clears it.
 * - STUB_FAIL (devmem.h): aclrtMalloc/aclrtMallocHost fail with
 *   ACL_ERROR_RT_MEMORY_ALLOCATION (207001), aclrtSynchronizeStream with
 *   ACL_ERROR_RT_AICORE_EXCEPTION (507015). STUB_ACL_DEVICES (default 2). */
#include "devmem.h"

typedef int aclError;
typedef void *aclrtStream;
typedef void *aclrtEvent;
typedef void (*aclrtCallback)(void *userData);

enum { ACL_SUCCESS = 0, ACL_ERROR_INVALID_PARAM = 100000, ACL_ERROR_REPEAT_INITIALIZE = 100002,
       ACL_ERROR_RT_CONTEXT_NULL = 107002, ACL_ERROR_RT_INVALID_DEVICEID = 107001,
       ACL_ERROR_RT_STREAM_SUBSCRIBE = 107011, ACL_ERROR_RT_THREAD_SUBSCRIBE = 107012,
       ACL_ERROR_RT_MEMORY_ALLOCATION = 207001, ACL_ERROR_RT_REPORT_TIMEOUT = 507012,
       ACL_ERROR_RT_AICORE_EXCEPTION = 507015 };

enum { ACL_EVENT_SYNC = 1, ACL_EVENT_RECORDED_STATUS_NOT_READY = 0, ACL_EVENT_RECORDED_STATUS_COMPLETE = 1,
       ACL_CALLBACK_NO_BLOCK = 0, ACL_CALLBACK_BLOCK = 1 };

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
    else dm_copy_sync(st, to, from, count); /* pageable host memory: synchronous */
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

aclError aclrtCreateEventExWithFlag(aclrtEvent *e, uint32_t flag) {
    need_device("aclrtCreateEventExWithFlag");
    if (!e || (flag & ~0x7fu)) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: invalid event or flag");
    struct dm_event *ev = dm_event_new(current);
    ev->flags = flag;
    *e = ev;
    return ACL_SUCCESS;
}

aclError aclrtDestroyEvent(aclrtEvent e) {
    need_init("aclrtDestroyEvent");
    if (!e) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: event is NULL");
    dm_event_destroy("aclrtDestroyEvent", e);
    return ACL_SUCCESS;
}

aclError aclrtRecordEvent(aclrtEvent e, aclrtStream s) {
    need_device("aclrtRecordEvent");
    if (!e) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: event is NULL");
    dm_event_record(stream_here("aclrtRecordEvent", s), dm_event_of("aclrtRecordEvent", e));
    return ACL_SUCCESS;
}

aclError aclrtQueryEventStatus(aclrtEvent e, int *status) {
    need_init("aclrtQueryEventStatus");
    if (!e || !status) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: event or status is NULL");
    *status = dm_event_done(dm_event_of("aclrtQueryEventStatus", e)) ? ACL_EVENT_RECORDED_STATUS_COMPLETE
                                                                     : ACL_EVENT_RECORDED_STATUS_NOT_READY;
    return ACL_SUCCESS;
}

aclError aclrtStreamWaitEvent(aclrtStream s, aclrtEvent e) {
    need_device("aclrtStreamWaitEvent");
    if (!e) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: event is NULL");
    struct dm_event *ev = dm_event_of("aclrtStreamWaitEvent", e);
    if (!(ev->flags & ACL_EVENT_SYNC))
        return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: the event was created without ACL_EVENT_SYNC");
    dm_stream_wait(stream_here("aclrtStreamWaitEvent", s), ev);
    return ACL_SUCCESS;
}

/* Stream -> report thread subscriptions, and callbacks handed to report threads. */
#define MAX_SUBS 256
static struct { struct dm_stream *stream; uint64_t tid; } subs[MAX_SUBS];
static int nsubs;
struct report { aclrtCallback fn; void *data; uint64_t tid; int block; int done; struct report *next; };
static struct report *reports;
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_cond = PTHREAD_COND_INITIALIZER;

aclError aclrtSubscribeReport(uint64_t tid, aclrtStream s) {
    need_device("aclrtSubscribeReport");
    struct dm_stream *st = stream_here("aclrtSubscribeReport", s);
    pthread_mutex_lock(&cb_lock);
    for (int i = 0; i < nsubs; i++)
        if (subs[i].stream == st) {
            pthread_mutex_unlock(&cb_lock);
            return fail(ACL_ERROR_RT_STREAM_SUBSCRIBE, "%s", "EE9999: the stream is already subscribed");
        }
    if (nsubs == MAX_SUBS) dm_die("aclrtSubscribeReport", "too many subscriptions", s);
    subs[nsubs].stream = st;
    subs[nsubs].tid = tid;
    nsubs++;
    pthread_mutex_unlock(&cb_lock);
    return ACL_SUCCESS;
}

aclError aclrtUnSubscribeReport(uint64_t tid, aclrtStream s) {
    need_device("aclrtUnSubscribeReport");
    struct dm_stream *st = stream_here("aclrtUnSubscribeReport", s);
    pthread_mutex_lock(&cb_lock);
    for (int i = 0; i < nsubs; i++)
        if (subs[i].stream == st && subs[i].tid == tid) {
            subs[i] = subs[--nsubs];
            pthread_mutex_unlock(&cb_lock);
            return ACL_SUCCESS;
        }
    pthread_mutex_unlock(&cb_lock);
    return fail(ACL_ERROR_RT_STREAM_SUBSCRIBE, "%s", "EE9999: the stream is not subscribed to this thread");
}

/* Runs on the stream's worker when the stream reaches a callback: hands it to its
 * report thread and, for ACL_CALLBACK_BLOCK, holds the stream until it has run. */
static void deliver(void *arg) {
    struct report *r = arg;
    pthread_mutex_lock(&cb_lock);
    r->next = reports;
    reports = r;
    pthread_cond_broadcast(&cb_cond);
    if (r->block) {
        while (!r->done) pthread_cond_wait(&cb_cond, &cb_lock);
        free(r);
    }
    pthread_mutex_unlock(&cb_lock);
}

aclError aclrtLaunchCallback(aclrtCallback fn, void *userData, int blockType, aclrtStream s) {
    need_device("aclrtLaunchCallback");
    struct dm_stream *st = stream_here("aclrtLaunchCallback", s);
    if (!fn || (blockType != ACL_CALLBACK_BLOCK && blockType != ACL_CALLBACK_NO_BLOCK))
        return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: invalid callback or block type");
    uint64_t tid = 0;
    int found = 0;
    pthread_mutex_lock(&cb_lock);
    for (int i = 0; i < nsubs; i++)
        if (subs[i].stream == st) { tid = subs[i].tid; found = 1; }
    pthread_mutex_unlock(&cb_lock);
    if (!found) return fail(ACL_ERROR_RT_STREAM_SUBSCRIBE, "%s", "EE9999: the stream has no subscribed report thread");
    struct report *r = calloc(1, sizeof *r);
    *r = (struct report){fn, userData, tid, blockType == ACL_CALLBACK_BLOCK, 0, NULL};
    dm_enqueue_host_fn(st, deliver, r);
    return ACL_SUCCESS;
}

aclError aclrtProcessReport(int32_t timeout) {
    need_init("aclrtProcessReport");
    if (timeout == 0 || timeout < -1) return fail(ACL_ERROR_INVALID_PARAM, "%s", "EE1001: timeout must be -1 or > 0");
    uint64_t me = (uint64_t)pthread_self();
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout / 1000;
    until.tv_nsec += (long)(timeout % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&cb_lock);
    for (;;) {
        int subscribed = 0;
        for (int i = 0; i < nsubs; i++) subscribed |= subs[i].tid == me;
        struct report **link = &reports;
        while (*link && (*link)->tid != me) link = &(*link)->next;
        struct report *r = *link;
        if (r) {
            *link = r->next;
            pthread_mutex_unlock(&cb_lock);
            r->fn(r->data);
            pthread_mutex_lock(&cb_lock);
            if (r->block) r->done = 1; else free(r);
            pthread_cond_broadcast(&cb_cond);
            pthread_mutex_unlock(&cb_lock);
            return ACL_SUCCESS;
        }
        if (!subscribed) {
            pthread_mutex_unlock(&cb_lock);
            return fail(ACL_ERROR_RT_THREAD_SUBSCRIBE, "%s", "EE9999: no stream is subscribed to this thread");
        }
        if (timeout == -1) {
            pthread_cond_wait(&cb_cond, &cb_lock);
        } else if (pthread_cond_timedwait(&cb_cond, &cb_lock, &until) != 0) {
            pthread_mutex_unlock(&cb_lock);
            return fail(ACL_ERROR_RT_REPORT_TIMEOUT, "%s", "EE9999: no callback reported before the timeout");
        }
    }
}

/* Test-only entry points for the stub HCCL (hccl_stub.c), which models a library
 * that enqueues its own work on the caller's stream: fn(arg) queued on stream `s`
 * (NULL: the default stream) with no subscription or device rules (HCCL's own
 * tasks need neither), and a copy that runs at once outside every stream, for use
 * inside such a function (dir 1 host to device, 2 device to host). 0 on success. */
int stubLaunchHostFunc(void *s, void (*fn)(void *), void *arg) {
    need_init("stubLaunchHostFunc");
    if (!fn) return ACL_ERROR_INVALID_PARAM;
    dm_enqueue_host_fn(dm_stream_of("stubLaunchHostFunc", s), fn, arg);
    return ACL_SUCCESS;
}

int stubCopyNow(void *dst, const void *src, size_t n, int dir) {
    need_init("stubCopyNow");
    return dm_copy_now(dir == 1 ? "stubCopyNow(host to device)" : "stubCopyNow(device to host)", dst, src, n, dir)
               ? ACL_ERROR_INVALID_PARAM : ACL_SUCCESS;
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
