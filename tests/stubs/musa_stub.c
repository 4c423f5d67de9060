/* A stub of the Moore Threads MUSA runtime (libmusart.so) for mixccl's tests: the
 * symbols src/device/musa.rs loads, behaving as the CUDA runtime API the MUSA
 * runtime mirrors, and failing loudly on misuse (see devmem.h).
 *
 * - musaPointerGetAttributes on plain host memory succeeds with type
 *   musaMemoryTypeUnregistered (0), as cudaPointerGetAttributes does since CUDA 11;
 *   pinned memory is Host (1), device memory Device (2).
 * - The current device is per thread (default 0), checked against
 *   STUB_MUSA_DEVICES (default 2); allocations land on it.
 * - Streams run their work (async copies, host functions, event records and
 *   waits) in order on a worker thread each (devmem.h); musaEventQuery answers
 *   musaErrorNotReady until the work before the event's last record has run.
 * - STUB_FAIL (devmem.h): musaMalloc/musaMallocHost fail with
 *   musaErrorMemoryAllocation, musaStreamSynchronize with musaErrorLaunchFailure. */
#include "devmem.h"

typedef int musaError_t;
typedef void *musaStream_t;
typedef void *musaEvent_t;
typedef void (*musaHostFn_t)(void *userData);

enum { musaSuccess = 0, musaErrorInvalidValue = 1, musaErrorMemoryAllocation = 2,
       musaErrorInvalidDevice = 101, musaErrorInvalidResourceHandle = 400, musaErrorNotReady = 600,
       musaErrorLaunchFailure = 719 };

struct musaPointerAttributes {
    int type; /* enum musaMemoryType */
    int device;
    void *devicePointer;
    void *hostPointer;
};

static __thread int current = 0;

static void init(void) { dm_init("musa"); }

musaError_t musaGetDevice(int *dev) {
    if (!dev) return musaErrorInvalidValue;
    *dev = current;
    return musaSuccess;
}

musaError_t musaSetDevice(int dev) {
    if (dev < 0 || dev >= dm_ndevices("STUB_MUSA_DEVICES")) return musaErrorInvalidDevice;
    current = dev;
    return musaSuccess;
}

musaError_t musaPointerGetAttributes(struct musaPointerAttributes *attr, const void *ptr) {
    init();
    if (!attr) return musaErrorInvalidValue;
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    memset(attr, 0, sizeof *attr);
    if (!d) {
        attr->type = 0; /* musaMemoryTypeUnregistered */
        attr->device = -2;
        attr->hostPointer = (void *)ptr;
        return musaSuccess;
    }
    attr->type = a.pinned ? 1 : 2;
    attr->device = a.device;
    if (a.pinned) attr->hostPointer = (void *)ptr; else attr->devicePointer = (void *)ptr;
    return musaSuccess;
}

musaError_t musaMemcpyAsync(void *dst, const void *src, size_t n, int kind, musaStream_t s) {
    init();
    struct dm_stream *st = dm_stream_of("musaMemcpyAsync", s);
    if (kind == 2) { /* musaMemcpyDeviceToHost */
        dm_host_range("musaMemcpyAsync(DeviceToHost) dst", dst, n);
        dm_enqueue(st, dst, dm_dev_range("musaMemcpyAsync(DeviceToHost) src", src, n), n);
    } else if (kind == 1) { /* musaMemcpyHostToDevice */
        dm_host_range("musaMemcpyAsync(HostToDevice) src", src, n);
        dm_enqueue(st, dm_dev_range("musaMemcpyAsync(HostToDevice) dst", dst, n), src, n);
    } else {
        dm_die("musaMemcpyAsync", "only HostToDevice (1) and DeviceToHost (2) are expected", dst);
    }
    return musaSuccess;
}

musaError_t musaStreamCreateWithFlags(musaStream_t *s, unsigned flags) {
    init();
    (void)flags;
    if (!s) return musaErrorInvalidValue;
    *s = dm_stream_new(current);
    return musaSuccess;
}

musaError_t musaStreamDestroy(musaStream_t s) {
    if (!s) return musaErrorInvalidValue;
    dm_stream_destroy("musaStreamDestroy", s);
    return musaSuccess;
}

musaError_t musaStreamSynchronize(musaStream_t s) {
    struct dm_stream *st = dm_stream_of("musaStreamSynchronize", s);
    if (dm_fail("musaStreamSynchronize")) {
        dm_discard(st);
        return musaErrorLaunchFailure;
    }
    dm_sync(st);
    return musaSuccess;
}

musaError_t musaEventCreateWithFlags(musaEvent_t *e, unsigned flags) {
    init();
    if (!e || (flags & ~0xfu)) return musaErrorInvalidValue;
    *e = dm_event_new(current);
    return musaSuccess;
}

musaError_t musaEventDestroy(musaEvent_t e) {
    if (!e) return musaErrorInvalidResourceHandle;
    dm_event_destroy("musaEventDestroy", e);
    return musaSuccess;
}

musaError_t musaEventRecord(musaEvent_t e, musaStream_t s) {
    if (!e) return musaErrorInvalidResourceHandle;
    dm_event_record(dm_stream_of("musaEventRecord", s), dm_event_of("musaEventRecord", e));
    return musaSuccess;
}

musaError_t musaEventQuery(musaEvent_t e) {
    if (!e) return musaErrorInvalidResourceHandle;
    return dm_event_done(dm_event_of("musaEventQuery", e)) ? musaSuccess : musaErrorNotReady;
}

musaError_t musaStreamWaitEvent(musaStream_t s, musaEvent_t e, unsigned flags) {
    if (!e) return musaErrorInvalidResourceHandle;
    if (flags != 0) return musaErrorInvalidValue;
    dm_stream_wait(dm_stream_of("musaStreamWaitEvent", s), dm_event_of("musaStreamWaitEvent", e));
    return musaSuccess;
}

musaError_t musaLaunchHostFunc(musaStream_t s, musaHostFn_t fn, void *userData) {
    if (!fn) return musaErrorInvalidValue;
    dm_enqueue_host_fn(dm_stream_of("musaLaunchHostFunc", s), fn, userData);
    return musaSuccess;
}

musaError_t musaMallocHost(void **p, size_t n) {
    init();
    if (!p) return musaErrorInvalidValue;
    if (dm_fail("musaMallocHost")) return musaErrorMemoryAllocation;
    *p = dm_alloc_pinned(n);
    return *p ? musaSuccess : musaErrorMemoryAllocation;
}

musaError_t musaFreeHost(void *p) {
    if (!p) return musaSuccess;
    return dm_free("musaFreeHost", p, 1);
}

musaError_t musaMalloc(void **p, size_t n) {
    init();
    if (!p) return musaErrorInvalidValue;
    if (dm_fail("musaMalloc")) return musaErrorMemoryAllocation;
    *p = dm_alloc(n, current);
    return *p ? musaSuccess : musaErrorMemoryAllocation;
}

musaError_t musaFree(void *p) {
    if (!p) return musaSuccess;
    return dm_free("musaFree", p, 0);
}

const char *musaGetErrorName(musaError_t e) {
    switch (e) {
    case musaSuccess: return "musaSuccess";
    case musaErrorInvalidValue: return "musaErrorInvalidValue";
    case musaErrorMemoryAllocation: return "musaErrorMemoryAllocation";
    case musaErrorInvalidDevice: return "musaErrorInvalidDevice";
    case musaErrorInvalidResourceHandle: return "musaErrorInvalidResourceHandle";
    case musaErrorNotReady: return "musaErrorNotReady";
    case musaErrorLaunchFailure: return "musaErrorLaunchFailure";
    default: return "musaErrorUnknown";
    }
}

const char *musaGetErrorString(musaError_t e) {
    switch (e) {
    case musaSuccess: return "no error";
    case musaErrorInvalidValue: return "invalid argument";
    case musaErrorMemoryAllocation: return "out of memory";
    case musaErrorInvalidDevice: return "invalid device ordinal";
    case musaErrorInvalidResourceHandle: return "invalid resource handle";
    case musaErrorNotReady: return "device not ready";
    case musaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}
