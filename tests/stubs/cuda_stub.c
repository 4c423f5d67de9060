/* A stub of the CUDA driver API (libcuda.so.1) for mixccl's tests: the symbols
 * src/device/cuda.rs loads, with the driver's documented behaviour where mixccl
 * depends on it, and loud failure on misuse (see devmem.h).
 *
 * - cuInit must come first (CUDA_ERROR_NOT_INITIALIZED otherwise).
 * - Calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT unless one is
 *   current on the calling thread (cuCtxPushCurrent / cuDevicePrimaryCtxRetain).
 * - cuPointerGetAttribute on memory the driver does not know (plain host memory)
 *   fails with CUDA_ERROR_INVALID_VALUE, as the driver API documents; pinned memory
 *   from cuMemAllocHost is CU_MEMORYTYPE_HOST.
 * - Streams run their work (async copies, host functions, event records and
 *   waits) in order on a worker thread each (devmem.h); cuEventQuery answers
 *   CUDA_ERROR_NOT_READY until the work before the event's last record has run.
 * - STUB_IMPLICIT_SYNC=1 makes cuMemAlloc, cuMemFree, cuMemAllocHost and
 *   cuMemFreeHost device-wide synchronisation points (dm_device_sync).
 * - stubLaunchHostFunc and stubCopyNow (not CUDA's): what the stub NCCL queues
 *   its collectives with (see there).
 * STUB_CUDA_DEVICES (default 2) sets the device count. -DOMIT_STREAM_PRIMITIVES builds
 * it without events and cuLaunchHostFunc (a driver older than the shim wants). */
#include "devmem.h"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUevent;
typedef void (*CUhostFn)(void *userData);

enum { OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_INITIALIZED = 3, INVALID_DEVICE = 101,
       INVALID_CONTEXT = 201,
       INVALID_HANDLE = 400, NOT_READY = 600 };

static int initialised;
static int contexts[16]; /* primary context of device i is &contexts[i] */
static __thread CUcontext ctx_stack[16];
static __thread int ctx_depth;

static int ndevices(void) {
    const char *s = getenv("STUB_CUDA_DEVICES");
    int n = s ? atoi(s) : 2;
    return n < 1 ? 1 : n > 16 ? 16 : n;
}

static int current_device(void) {
    if (ctx_depth == 0) return -1;
    return (int)((int *)ctx_stack[ctx_depth - 1] - contexts);
}

#define NEED_INIT() do { if (!initialised) return NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { NEED_INIT(); if (ctx_depth == 0) return INVALID_CONTEXT; } while (0)

CUresult cuInit(unsigned flags) {
    if (flags != 0) return INVALID_VALUE;
    dm_init("cuda");
    initialised = 1;
    return OK;
}

CUresult cuDeviceGet(int *dev, int ordinal) {
    NEED_INIT();
    if (ordinal < 0 || ordinal >= ndevices()) return INVALID_DEVICE;
    *dev = ordinal;
    return OK;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, int dev) {
    NEED_INIT();
    if (dev < 0 || dev >= ndevices()) return INVALID_DEVICE;
    *ctx = &contexts[dev];
    return OK;
}

CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
    NEED_INIT();
    if ((int *)ctx < contexts || (int *)ctx >= contexts + ndevices()) dm_die("cuCtxPushCurrent", "not a context", ctx);
    if (ctx_depth == 16) dm_die("cuCtxPushCurrent", "context stack overflow (pushes without pops?)", ctx);
    ctx_stack[ctx_depth++] = ctx;
    return OK;
}

CUresult cuCtxPopCurrent_v2(CUcontext *ctx) {
    NEED_INIT();
    if (ctx_depth == 0) dm_die("cuCtxPopCurrent", "pop without push", NULL);
    CUcontext c = ctx_stack[--ctx_depth];
    if (ctx) *ctx = c;
    return OK;
}

CUresult cuCtxGetDevice(int *dev) {
    NEED_CTX();
    *dev = current_device();
    return OK;
}

CUresult cuPointerGetAttribute(void *data, int attr, CUdeviceptr ptr) {
    NEED_INIT();
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find((void *)(uintptr_t)ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    if (!d) return INVALID_VALUE;
    switch (attr) {
    case 1: *(CUcontext *)data = &contexts[a.device]; return OK;  /* CONTEXT */
    case 2: *(unsigned *)data = a.pinned ? 1 : 2; return OK;        /* MEMORY_TYPE: HOST / DEVICE */
    case 8: *(unsigned char *)data = 0; return OK;                  /* IS_MANAGED (a bool) */
    case 9: *(int *)data = a.device; return OK;                      /* DEVICE_ORDINAL */
    default: return INVALID_VALUE;
    }
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr ptr) {
    NEED_INIT();
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find((void *)(uintptr_t)ptr);
    struct dev_alloc a = d ? *d : (struct dev_alloc){0};
    pthread_mutex_unlock(&dm_lock);
    if (!d || a.pinned) return INVALID_VALUE;
    if (base) *base = a.base;
    if (size) *size = a.size;
    return OK;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, CUstream s) {
    NEED_CTX();
    struct dm_stream *st = dm_stream_of("cuMemcpyDtoHAsync", s);
    dm_host_range("cuMemcpyDtoHAsync dst", dst, n);
    unsigned char *from = dm_dev_range("cuMemcpyDtoHAsync src", (void *)(uintptr_t)src, n);
    dm_enqueue(st, dst, from, n);
    return OK;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, CUstream s) {
    NEED_CTX();
    struct dm_stream *st = dm_stream_of("cuMemcpyHtoDAsync", s);
    dm_host_range("cuMemcpyHtoDAsync src", src, n);
    unsigned char *to = dm_dev_range("cuMemcpyHtoDAsync dst", (void *)(uintptr_t)dst, n);
    dm_enqueue(st, to, src, n);
    return OK;
}

CUresult cuStreamCreate(CUstream *s, unsigned flags) {
    NEED_CTX();
    (void)flags;
    *s = dm_stream_new(current_device());
    return OK;
}

CUresult cuStreamDestroy_v2(CUstream s) {
    NEED_CTX();
    dm_stream_destroy("cuStreamDestroy", s);
    return OK;
}

CUresult cuStreamSynchronize(CUstream s) {
    NEED_CTX();
    dm_sync(dm_stream_of("cuStreamSynchronize", s));
    return OK;
}

#ifndef OMIT_STREAM_PRIMITIVES
CUresult cuEventCreate(CUevent *e, unsigned flags) {
    NEED_CTX();
    if (!e || (flags & ~0xfu)) return INVALID_VALUE;
    *e = dm_event_new(current_device());
    return OK;
}

CUresult cuEventDestroy_v2(CUevent e) {
    NEED_CTX();
    if (!e) return INVALID_HANDLE;
    dm_event_destroy("cuEventDestroy", e);
    return OK;
}

CUresult cuEventRecord(CUevent e, CUstream s) {
    NEED_CTX();
    if (!e) return INVALID_HANDLE;
    dm_event_record(dm_stream_of("cuEventRecord", s), dm_event_of("cuEventRecord", e));
    return OK;
}

CUresult cuEventQuery(CUevent e) {
    NEED_CTX();
    if (!e) return INVALID_HANDLE;
    return dm_event_done(dm_event_of("cuEventQuery", e)) ? OK : NOT_READY;
}

CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned flags) {
    NEED_CTX();
    if (!e) return INVALID_HANDLE;
    if (flags != 0) return INVALID_VALUE;
    dm_stream_wait(dm_stream_of("cuStreamWaitEvent", s), dm_event_of("cuStreamWaitEvent", e));
    return OK;
}

CUresult cuLaunchHostFunc(CUstream s, CUhostFn fn, void *userData) {
    NEED_CTX();
    if (!fn) return INVALID_VALUE;
    dm_enqueue_host_fn(dm_stream_of("cuLaunchHostFunc", s), fn, userData);
    return OK;
}
#endif

/* Test-only entry points for the stub NCCL (nccl_stub.c), which models a library
 * that enqueues its own work on the caller's stream: fn(arg) queued on stream `s`
 * (NULL: the default stream) with no context or driver-version rules, and a copy
 * that runs at once outside every stream, for use inside such a function (dir 1
 * host to device, 2 device to host). 0 on success. */
int stubLaunchHostFunc(void *s, void (*fn)(void *), void *arg) {
    if (!fn) return INVALID_VALUE;
    dm_enqueue_host_fn(dm_stream_of("stubLaunchHostFunc", s), fn, arg);
    return OK;
}

int stubCopyNow(void *dst, const void *src, size_t n, int dir) {
    return dm_copy_now(dir == 1 ? "stubCopyNow(host to device)" : "stubCopyNow(device to host)", dst, src, n, dir)
               ? INVALID_VALUE : OK;
}

CUresult cuMemAllocHost_v2(void **p, size_t n) {
    NEED_CTX();
    dm_device_sync();
    *p = dm_alloc_pinned(n);
    return *p ? OK : OUT_OF_MEMORY;
}

CUresult cuMemFreeHost(void *p) {
    NEED_CTX();
    dm_device_sync();
    return dm_free("cuMemFreeHost", p, 1);
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    NEED_CTX();
    dm_device_sync();
    if (n == 0) return INVALID_VALUE;
    void *d = dm_alloc(n, current_device());
    if (!d) return OUT_OF_MEMORY;
    *p = (CUdeviceptr)(uintptr_t)d;
    return OK;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
    NEED_CTX();
    dm_device_sync();
    return dm_free("cuMemFree", (void *)(uintptr_t)p, 0);
}

static const char *names[] = {"CUDA_SUCCESS", "CUDA_ERROR_INVALID_VALUE", "CUDA_ERROR_OUT_OF_MEMORY",
                              "CUDA_ERROR_NOT_INITIALIZED"};

CUresult cuGetErrorName(CUresult e, const char **s) {
    if (e >= 0 && e < 4) { *s = names[e]; return OK; }
    if (e == INVALID_DEVICE) { *s = "CUDA_ERROR_INVALID_DEVICE"; return OK; }
    if (e == INVALID_CONTEXT) { *s = "CUDA_ERROR_INVALID_CONTEXT"; return OK; }
    if (e == INVALID_HANDLE) { *s = "CUDA_ERROR_INVALID_HANDLE"; return OK; }
    if (e == NOT_READY) { *s = "CUDA_ERROR_NOT_READY"; return OK; }
    *s = NULL;
    return INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult e, const char **s) {
    const char *n = NULL;
    if (cuGetErrorName(e, &n) != OK) { *s = NULL; return INVALID_VALUE; }
    *s = e == INVALID_CONTEXT ? "invalid device context" : e == OUT_OF_MEMORY ? "out of memory" : n;
    return OK;
}
