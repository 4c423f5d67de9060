/* A stub of the HIP runtime (libamdhip64.so) for mixccl's tests: the symbols
 * src/device/hip.rs loads, with HIP's documented behaviour where mixccl depends on
 * it, and loud failure on misuse (see devmem.h).
 *
 * - STUB_HIP_VERSION (default 60200000, ROCm 6.2) is what hipRuntimeGetVersion
 *   reports, and picks the hipMemoryType values: ROCm 6 (Unregistered 0, Host 1,
 *   Device 2, Managed 3, Array 10, Unified 11) or ROCm 5 (Host 0, Device 1, Array 2,
 *   Unified 3, Managed 4).
 * - hipPointerGetAttributes on plain host memory: ROCm 5 fails with
 *   hipErrorInvalidValue; ROCm 6 does too unless STUB_HIP_UNREGISTERED=1, when it
 *   succeeds with hipMemoryTypeUnregistered (both happen across real versions).
 * - The current device is per thread (default 0); hipSetDevice checks the ordinal
 *   against STUB_HIP_DEVICES (default 2). Allocations land on the current device,
 *   streams belong to it.
 * - Streams run their work (async copies, host functions, event records and
 *   waits) in order on a worker thread each (devmem.h); hipEventQuery answers
 *   hipErrorNotReady until the work before the event's last record has run.
 * - STUB_FAIL (devmem.h): hipMalloc/hipHostMalloc fail with hipErrorOutOfMemory,
 *   hipStreamSynchronize with hipErrorLaunchFailure.
 * - -DOMIT_hipMemcpyAsync builds it without hipMemcpyAsync. */
#include "devmem.h"

typedef int hipError_t;
typedef void *hipStream_t;
typedef void *hipEvent_t;
typedef void (*hipHostFn_t)(void *userData);

enum { hipSuccess = 0, hipErrorInvalidValue = 1, hipErrorOutOfMemory = 2, hipErrorInvalidDevice = 101,
       hipErrorInvalidHandle = 400, hipErrorNotReady = 600, hipErrorLaunchFailure = 719 };

typedef struct {
    int type; /* enum hipMemoryType */
    int device;
    void *devicePointer;
    void *hostPointer;
    int isManaged;
    unsigned allocationFlags;
} hipPointerAttribute_t;

static __thread int current = 0;

static int version(void) {
    const char *s = getenv("STUB_HIP_VERSION");
    return s ? atoi(s) : 60200000;
}

static int rocm6(void) { return version() / 10000000 >= 6; }

static void init(void) { dm_init("hip"); }

hipError_t hipInit(unsigned flags) {
    if (flags != 0) return hipErrorInvalidValue;
    init();
    return hipSuccess;
}

hipError_t hipRuntimeGetVersion(int *v) {
    if (!v) return hipErrorInvalidValue;
    *v = version();
    return hipSuccess;
}

hipError_t hipGetDevice(int *dev) {
    if (!dev) return hipErrorInvalidValue;
    *dev = current;
    return hipSuccess;
}

hipError_t hipSetDevice(int dev) {
    if (dev < 0 || dev >= dm_ndevices("STUB_HIP_DEVICES")) return hipErrorInvalidDevice;
    current = dev;
    return hipSuccess;
}

hipError_t hipPointerGetAttributes(hipPointerAttribute_t *attr, const void *ptr) {
    init();
    if (!attr) return hipErrorInvalidValue;
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    memset(attr, 0, sizeof *attr);
    if (!d) {
        if (rocm6() && getenv("STUB_HIP_UNREGISTERED") && atoi(getenv("STUB_HIP_UNREGISTERED"))) {
            attr->type = 0; /* hipMemoryTypeUnregistered */
            attr->device = -2;
            return hipSuccess;
        }
        return hipErrorInvalidValue;
    }
    if (a.pinned) {
        attr->type = rocm6() ? 1 : 0; /* hipMemoryTypeHost */
        attr->hostPointer = (void *)ptr;
    } else {
        attr->type = rocm6() ? 2 : 1; /* hipMemoryTypeDevice */
        attr->devicePointer = (void *)ptr;
    }
    attr->device = a.device;
    return hipSuccess;
}

hipError_t hipMemGetAddressRange(void **base, size_t *size, void *ptr) {
    init();
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    if (!d || a.pinned) return hipErrorInvalidValue;
    if (base) *base = (void *)a.base;
    if (size) *size = a.size;
    return hipSuccess;
}

#ifndef OMIT_hipMemcpyAsync
hipError_t hipMemcpyAsync(void *dst, const void *src, size_t n, int kind, hipStream_t s) {
    init();
    struct dm_stream *st = dm_stream_of("hipMemcpyAsync", s);
    if (kind == 2) { /* hipMemcpyDeviceToHost */
        dm_host_range("hipMemcpyAsync(DeviceToHost) dst", dst, n);
        dm_enqueue(st, dst, dm_dev_range("hipMemcpyAsync(DeviceToHost) src", src, n), n);
    } else if (kind == 1) { /* hipMemcpyHostToDevice */
        dm_host_range("hipMemcpyAsync(HostToDevice) src", src, n);
        dm_enqueue(st, dm_dev_range("hipMemcpyAsync(HostToDevice) dst", dst, n), src, n);
    } else {
        dm_die("hipMemcpyAsync", "only HostToDevice (1) and DeviceToHost (2) are expected", dst);
    }
    return hipSuccess;
}
#endif

hipError_t hipStreamCreateWithFlags(hipStream_t *s, unsigned flags) {
    init();
    (void)flags;
    if (!s) return hipErrorInvalidValue;
    *s = dm_stream_new(current);
    return hipSuccess;
}

hipError_t hipStreamDestroy(hipStream_t s) {
    if (!s) return hipErrorInvalidValue; /* the null stream cannot be destroyed */
    dm_stream_destroy("hipStreamDestroy", s);
    return hipSuccess;
}

hipError_t hipStreamSynchronize(hipStream_t s) {
    struct dm_stream *st = dm_stream_of("hipStreamSynchronize", s);
    if (dm_fail("hipStreamSynchronize")) {
        dm_discard(st);
        return hipErrorLaunchFailure;
    }
    dm_sync(st);
    return hipSuccess;
}

hipError_t hipEventCreateWithFlags(hipEvent_t *e, unsigned flags) {
    init();
    if (!e || (flags & ~0xfu)) return hipErrorInvalidValue;
    *e = dm_event_new(current);
    return hipSuccess;
}

hipError_t hipEventDestroy(hipEvent_t e) {
    if (!e) return hipErrorInvalidHandle;
    dm_event_destroy("hipEventDestroy", e);
    return hipSuccess;
}

hipError_t hipEventRecord(hipEvent_t e, hipStream_t s) {
    if (!e) return hipErrorInvalidHandle;
    dm_event_record(dm_stream_of("hipEventRecord", s), dm_event_of("hipEventRecord", e));
    return hipSuccess;
}

hipError_t hipEventQuery(hipEvent_t e) {
    if (!e) return hipErrorInvalidHandle;
    return dm_event_done(dm_event_of("hipEventQuery", e)) ? hipSuccess : hipErrorNotReady;
}

hipError_t hipStreamWaitEvent(hipStream_t s, hipEvent_t e, unsigned flags) {
    if (!e) return hipErrorInvalidHandle;
    if (flags != 0) return hipErrorInvalidValue;
    dm_stream_wait(dm_stream_of("hipStreamWaitEvent", s), dm_event_of("hipStreamWaitEvent", e));
    return hipSuccess;
}

hipError_t hipLaunchHostFunc(hipStream_t s, hipHostFn_t fn, void *userData) {
    if (!fn) return hipErrorInvalidValue;
    dm_enqueue_host_fn(dm_stream_of("hipLaunchHostFunc", s), fn, userData);
    return hipSuccess;
}

hipError_t hipHostMalloc(void **p, size_t n, unsigned flags) {
    init();
    (void)flags;
    if (!p) return hipErrorInvalidValue;
    if (dm_fail("hipHostMalloc")) return hipErrorOutOfMemory;
    *p = dm_alloc_pinned(n);
    return *p ? hipSuccess : hipErrorOutOfMemory;
}

hipError_t hipHostFree(void *p) {
    if (!p) return hipSuccess;
    return dm_free("hipHostFree", p, 1);
}

hipError_t hipMalloc(void **p, size_t n) {
    init();
    if (!p) return hipErrorInvalidValue;
    if (dm_fail("hipMalloc")) return hipErrorOutOfMemory;
    *p = dm_alloc(n, current);
    return *p ? hipSuccess : hipErrorOutOfMemory;
}

hipError_t hipFree(void *p) {
    if (!p) return hipSuccess;
    return dm_free("hipFree", p, 0);
}

const char *hipGetErrorName(hipError_t e) {
    switch (e) {
    case hipSuccess: return "hipSuccess";
    case hipErrorInvalidValue: return "hipErrorInvalidValue";
    case hipErrorOutOfMemory: return "hipErrorOutOfMemory";
    case hipErrorInvalidDevice: return "hipErrorInvalidDevice";
    case hipErrorInvalidHandle: return "hipErrorInvalidHandle";
    case hipErrorNotReady: return "hipErrorNotReady";
    case hipErrorLaunchFailure: return "hipErrorLaunchFailure";
    default: return "hipErrorUnknown";
    }
}

const char *hipGetErrorString(hipError_t e) {
    switch (e) {
    case hipSuccess: return "no error";
    case hipErrorInvalidValue: return "invalid argument";
    case hipErrorOutOfMemory: return "out of memory";
    case hipErrorInvalidDevice: return "invalid device ordinal";
    case hipErrorInvalidHandle: return "invalid resource handle";
    case hipErrorNotReady: return "device not ready";
    case hipErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}
