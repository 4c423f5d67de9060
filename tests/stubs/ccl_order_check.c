/* Checks that the stub collective libraries are stream-ordered, as NCCL and HCCL
 * are: two ranks on threads of this process, each with its own stream, over the
 * stub runtime and library named by MIXCCL_CUDA_LIB and MIXCCL_NCCL_LIB
 * (`ccl_order_check nccl`) or MIXCCL_ACL_LIB and MIXCCL_HCCL_LIB (`... hccl`).
 *
 * - order: rank 0 queues a host function that sleeps 200 ms, then an all-reduce
 *   (rank + 1, summed: 3). The call returns before the sleep ends, its output is
 *   still untouched then (read with the runtime's stubCopyNow), and is right after
 *   the stream is synchronised. Rank 1's stream is held until rank 0's work arrives.
 * - sync: the same with STUB_CCL_SYNC=1: the call itself waits out the sleep.
 * - abort (nccl): rank 0 queues an all-reduce rank 1 never joins and aborts after
 *   100 ms; its stream drains at once (not after STUB_CCL_TIMEOUT_S), the async
 *   error is ncclRemoteError, and rank 1's next call fails at the call.
 * - destroy (nccl): both ranks queue the sleep and an all-reduce and destroy the
 *   communicator before synchronising; destroy waits for the queued work, which
 *   completes with the right result.
 * Prints "ccl order check OK" at the end; any failure exits 1 naming it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int is_nccl;
static void *rt, *lib;

static void *sym(void *h, const char *name) {
    void *f = dlsym(h, name);
    if (!f) { fprintf(stderr, "FAILED: no symbol %s\n", name); exit(1); }
    return f;
}

#define CALL(T, h, name, ...) ((T)sym(h, name))(__VA_ARGS__)
#define CHECK(what, cond)                                                     \
    do {                                                                      \
        if (!(cond)) { fprintf(stderr, "FAILED: %s (%s:%d)\n", what, __FILE__, __LINE__); exit(1); } \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the runtime, CUDA or ACL, through the few calls used here ---- */

typedef int (*i_v)(void);
typedef int (*i_u)(unsigned);
typedef int (*i_pi)(void **, int);
typedef int (*i_p)(void *);
typedef int (*i_pu)(void **, unsigned);
typedef int (*i_pz)(void *, size_t);
typedef int (*i_ppz)(void **, size_t);
typedef int (*i_ppzi)(void **, size_t, int);
typedef int (*i_i)(int);
typedef int (*htod_t)(uintptr_t, const void *, size_t, void *);
typedef int (*acl_cpy_t)(void *, size_t, const void *, size_t, int, void *);
typedef int (*launch_t)(void *, void (*)(void *), void *);
typedef int (*now_t)(void *, const void *, size_t, int);

/* Sets the calling thread up for device 0. */
static void rt_thread(void) {
    if (is_nccl) {
        void *ctx;
        CHECK("cuDevicePrimaryCtxRetain", CALL(i_pi, rt, "cuDevicePrimaryCtxRetain", &ctx, 0) == 0);
        CHECK("cuCtxPushCurrent", CALL(i_p, rt, "cuCtxPushCurrent_v2", ctx) == 0);
    } else {
        CHECK("aclrtSetDevice", CALL(i_i, rt, "aclrtSetDevice", 0) == 0);
    }
}

static void *rt_stream(void) {
    void *s = NULL;
    if (is_nccl) CHECK("cuStreamCreate", CALL(i_pu, rt, "cuStreamCreate", &s, 0) == 0);
    else CHECK("aclrtCreateStream", ((int (*)(void **))sym(rt, "aclrtCreateStream"))(&s) == 0);
    return s;
}

static void *rt_alloc(size_t n) {
    void *p = NULL;
    if (is_nccl) CHECK("cuMemAlloc", CALL(i_ppz, rt, "cuMemAlloc_v2", &p, n) == 0);
    else CHECK("aclrtMalloc", CALL(i_ppzi, rt, "aclrtMalloc", &p, n, 0) == 0);
    return p;
}

static void rt_sync(void *s) {
    if (is_nccl) CHECK("cuStreamSynchronize", CALL(i_p, rt, "cuStreamSynchronize", s) == 0);
    else CHECK("aclrtSynchronizeStream", CALL(i_p, rt, "aclrtSynchronizeStream", s) == 0);
}

/* Writes n floats of value v to dev and waits for it. */
static void rt_fill(void *dev, float v, size_t n, void *s) {
    float host[16];
    for (size_t i = 0; i < n; i++) host[i] = v;
    if (is_nccl) CHECK("cuMemcpyHtoDAsync", CALL(htod_t, rt, "cuMemcpyHtoDAsync_v2", (uintptr_t)dev, host, n * 4, s) == 0);
    else CHECK("aclrtMemcpyAsync", CALL(acl_cpy_t, rt, "aclrtMemcpyAsync", dev, n * 4, host, n * 4, 1, s) == 0);
    rt_sync(s);
}

/* The first float at dev, read now (outside the stream). */
static float peek(const void *dev) {
    float v;
    CHECK("stubCopyNow", CALL(now_t, rt, "stubCopyNow", &v, dev, 4, 2) == 0);
    return v;
}

static void sleep_200ms(void *arg) {
    (void)arg;
    usleep(200000);
}

/* Queues the 200 ms sleep on s: cuLaunchHostFunc for CUDA; ACL's callbacks need a
 * report thread, so the stub's own launcher there. */
static void queue_sleep(void *s) {
    if (is_nccl) CHECK("cuLaunchHostFunc", CALL(launch_t, rt, "cuLaunchHostFunc", s, sleep_200ms, NULL) == 0);
    else CHECK("stubLaunchHostFunc", CALL(launch_t, rt, "stubLaunchHostFunc", s, sleep_200ms, NULL) == 0);
}

/* ---- the library, NCCL or HCCL ---- */

static char id[4108];

static void get_id(void) {
    CHECK("get unique id", CALL(i_p, lib, is_nccl ? "ncclGetUniqueId" : "HcclGetRootInfo", id) == 0);
}

static void *init(int rank) {
    void *c = NULL;
    int rc;
    if (is_nccl) {
        struct { char b[128]; } u;
        memcpy(u.b, id, 128);
        rc = ((int (*)(void **, int, __typeof__(u), int))sym(lib, "ncclCommInitRank"))(&c, 2, u, rank);
    } else {
        rc = ((int (*)(uint32_t, const void *, uint32_t, void **))sym(lib, "HcclCommInitRootInfo"))(2, id, (uint32_t)rank, &c);
    }
    CHECK("init", rc == 0 && c);
    return c;
}

/* A float sum all-reduce of n elements. */
static int all_reduce(void *send, void *recv, size_t n, void *c, void *s) {
    if (is_nccl)
        return ((int (*)(const void *, void *, size_t, int, int, void *, void *))sym(lib, "ncclAllReduce"))(send, recv, n, 7, 0, c, s);
    return ((int (*)(void *, void *, uint64_t, int, int, void *, void *))sym(lib, "HcclAllReduce"))(send, recv, n, 4, 0, c, s);
}

static int async_error(void *c) {
    int e = -1;
    CHECK("get async error", CALL(int (*)(void *, int *), lib, is_nccl ? "ncclCommGetAsyncError" : "HcclGetCommAsyncError", c, &e) == 0);
    return e;
}

static void destroy(void *c) {
    CHECK("destroy", CALL(i_p, lib, is_nccl ? "ncclCommDestroy" : "HcclCommDestroy", c) == 0);
}

/* ---- the cases ---- */

enum { ORDER, SYNC, ABORT, DESTROY };
static const char *names[] = {"order", "sync", "abort", "destroy"};
static int scase;
static pthread_barrier_t both;

static void *rank_main(void *arg) {
    int rank = (int)(intptr_t)arg;
    const char *what = names[scase];
    char msg[160];
    rt_thread();
    void *s = rt_stream();
    void *c = init(rank);
    float *send = rt_alloc(64), *recv = rt_alloc(64);
    rt_fill(send, (float)(rank + 1), 16, s);
    rt_fill(recv, -1.0f, 16, s);
    pthread_barrier_wait(&both);
    if (scase == ABORT) {
        if (rank == 0) {
            CHECK("abort: the call", all_reduce(send, recv, 16, c, s) == 0);
            usleep(100000);
            double t0 = now();
            CHECK("ncclCommAbort", CALL(i_p, lib, "ncclCommAbort", c) == 0);
            rt_sync(s);
            snprintf(msg, sizeof msg, "abort: the stream drained after %.3f s", now() - t0);
            CHECK(msg, now() - t0 < 2.0);
            CHECK("abort: the output was left alone", peek(recv) == -1.0f);
            CHECK("abort: async error ncclRemoteError", async_error(c) == 6);
        }
        pthread_barrier_wait(&both);
        if (rank == 1) {
            CHECK("abort: a member's next call fails at the call", all_reduce(send, recv, 16, c, s) == 6);
            CHECK("abort: no async error of its own", async_error(c) == 0);
            destroy(c);
        }
        return NULL;
    }
    if (rank == 0) queue_sleep(s);
    double t0 = now();
    CHECK("the call", all_reduce(send, recv, 16, c, s) == 0);
    double call = now() - t0;
    if (scase == SYNC) {
        snprintf(msg, sizeof msg, "sync: rank %d's call returned after %.3f s, before the sleep ended", rank, call);
        CHECK(msg, call > 0.15);
        CHECK("sync: the result is there when the call returns", peek(recv) == 3.0f);
    } else if (rank == 0) {
        snprintf(msg, sizeof msg, "%s: the call took %.3f s: it waited for the stream", what, call);
        CHECK(msg, call < 0.1);
        CHECK("the output is untouched before the stream reaches the call", peek(recv) == -1.0f);
    }
    if (scase == DESTROY) {
        double d0 = now();
        destroy(c);
        snprintf(msg, sizeof msg, "destroy: rank %d's destroy returned after %.3f s", rank, now() - d0);
        CHECK(msg, rank == 1 || now() - d0 > 0.1);
    }
    rt_sync(s);
    double all = now() - t0;
    if (rank == 1 && scase == ORDER) {
        snprintf(msg, sizeof msg, "rank 1's stream drained after %.3f s, before rank 0's work arrived", all);
        CHECK(msg, all > 0.15);
    }
    float out[16];
    for (int i = 0; i < 16; i++) {
        CHECK("stubCopyNow", CALL(now_t, rt, "stubCopyNow", &out[i], recv + i, 4, 2) == 0);
        snprintf(msg, sizeof msg, "%s: rank %d element %d is %g, expected 3", what, rank, i, out[i]);
        CHECK(msg, out[i] == 3.0f);
    }
    if (scase != DESTROY) {
        CHECK("no async error", async_error(c) == 0);
        destroy(c);
    }
    return NULL;
}

int main(int argc, char **argv) {
    CHECK("usage: ccl_order_check nccl|hccl", argc == 2);
    is_nccl = strcmp(argv[1], "nccl") == 0;
    const char *rt_path = getenv(is_nccl ? "MIXCCL_CUDA_LIB" : "MIXCCL_ACL_LIB");
    const char *lib_path = getenv(is_nccl ? "MIXCCL_NCCL_LIB" : "MIXCCL_HCCL_LIB");
    CHECK("the runtime and library paths", rt_path && lib_path);
    rt = dlopen(rt_path, RTLD_NOW | RTLD_LOCAL);
    lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    CHECK("dlopen", rt && lib);
    if (is_nccl) CHECK("cuInit", CALL(i_u, rt, "cuInit", 0) == 0);
    else CHECK("aclInit", ((int (*)(const char *))sym(rt, "aclInit"))(NULL) == 0);
    int last = is_nccl ? DESTROY : SYNC;
    for (scase = ORDER; scase <= last; scase++) {
        if (scase == SYNC) setenv("STUB_CCL_SYNC", "1", 1);
        else unsetenv("STUB_CCL_SYNC");
        get_id();
        pthread_barrier_init(&both, NULL, 2);
        pthread_t t[2];
        for (intptr_t r = 0; r < 2; r++) pthread_create(&t[r], NULL, rank_main, (void *)r);
        for (int r = 0; r < 2; r++) pthread_join(t[r], NULL);
        pthread_barrier_destroy(&both);
        printf("%s %s: ok\n", argv[1], names[scase]);
    }
    printf("ccl order check OK\n");
    return 0;
}
