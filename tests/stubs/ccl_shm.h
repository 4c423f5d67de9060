/* Shared by the stub collective libraries (nccl_stub.c, hccl_stub.c): collectives
 * that really run across the island's processes, over one POSIX shared-memory
 * segment named in the unique id.
 *
 * Each member copies its input from device memory (through the stub runtime the
 * library was built for, so device pointers stay opaque here) into its slot of the
 * segment, waits at a barrier, computes its own result from every slot in member
 * order, copies it to device memory and waits at a second barrier. Waits are
 * bounded (STUB_CCL_TIMEOUT_S, default 60) and end at once when this communicator
 * is aborted or another member aborted its own (the segment's `dead` flag). Every
 * entry point counts its calls; `stubCclCount(name)` returns a count, so tests can
 * prove which phases went through the library. STUB_FAIL=name1,name2 makes the
 * named entry points fail.
 *
 * Collectives are stream-ordered, as the real libraries' are: a call checks its
 * arguments (errors returned at once) and queues one host function on the caller's
 * stream (the runtime's stubLaunchHostFunc), which runs the collective when the
 * stream reaches it, copying with the runtime's stubCopyNow, and holds the stream
 * until every member's work has arrived. A failure there (abort, a member gone, a
 * barrier timeout) cannot be returned: it is kept as the communicator's async error
 * (ncclCommGetAsyncError, HcclGetCommAsyncError) and marks the segment dead, so the
 * other members stop too. STUB_CCL_SYNC=1 (or a runtime without those two entry
 * points) runs them host-synchronously instead, on the caller's thread, through the
 * stream's own copies: the stream is synchronised before and after, and failures
 * are returned.
 *
 * A communicator is freed by the last of its owner (destroy) and its queued host
 * functions, so destroy never unmaps a segment that queued work still touches. */
#ifndef STUB_CCL_SHM_H
#define STUB_CCL_SHM_H
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Element types, numbered as NCCL numbers them. */
enum { T_I8, T_U8, T_I32, T_U32, T_I64, T_U64, T_F16, T_F32, T_F64, T_BF16, T_NONE = -1 };
enum { OP_SUM, OP_PROD, OP_MAX, OP_MIN };

struct shm_hdr {
    _Atomic int joined;
    _Atomic unsigned count;
    _Atomic unsigned gen;
    _Atomic int dead;
    int nranks;
};

struct ccl_comm {
    struct shm_hdr *hdr;
    unsigned char *slots;
    size_t slot;
    size_t map_len;
    int rank, nranks;
    _Atomic int aborted;
    _Atomic int async_rc; /* 0, or -1: a queued collective failed */
    _Atomic int refs;     /* the owner, plus each call or queued collective in flight */
};

/* How the library reaches device memory: set by each stub. Through the stream
 * (host-synchronous mode): */
static int (*ccl_to_host)(void *dst, const void *dev, size_t n, void *stream);
static int (*ccl_to_dev)(void *dev, const void *src, size_t n, void *stream);
/* Stream-ordered mode (the runtime's stubLaunchHostFunc and stubCopyNow; NULL when
 * the runtime lacks them): */
static int (*ccl_launch)(void *stream, void (*fn)(void *), void *arg);
static int (*ccl_copy_now)(void *dst, const void *src, size_t n, int dir);
enum { DIR_TO_DEV = 1, DIR_TO_HOST = 2 };

static _Atomic long ccl_counts[8];
static const char *ccl_names[8] = {"init", "all_reduce", "reduce_scatter", "all_gather", "broadcast", "abort", "destroy", "unique_id"};
enum { C_INIT, C_AR, C_RS, C_AG, C_BC, C_ABORT, C_DESTROY, C_ID };

long stubCclCount(const char *name) {
    for (int i = 0; i < 8; i++)
        if (strcmp(name, ccl_names[i]) == 0) return atomic_load(&ccl_counts[i]);
    return -1;
}

static int ccl_should_fail(const char *call) {
    const char *f = getenv("STUB_FAIL");
    if (!f) return 0;
    size_t n = strlen(call);
    for (const char *p = f; (p = strstr(p, call)); p += n)
        if ((p == f || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

static size_t ccl_size(int t) {
    switch (t) {
    case T_I8: case T_U8: return 1;
    case T_F16: case T_BF16: return 2;
    case T_I32: case T_U32: case T_F32: return 4;
    default: return 8;
    }
}

static double ccl_timeout(void) {
    const char *s = getenv("STUB_CCL_TIMEOUT_S");
    return s ? atof(s) : 60.0;
}

static double ccl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A fresh segment name, written into the unique id. */
static void ccl_new_id(char *id, size_t len) {
    static _Atomic unsigned seq;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    memset(id, 0, len);
    snprintf(id, len, "/mixccl-stubccl-%d-%u-%ld", (int)getpid(), atomic_fetch_add(&seq, 1),
             (long)ts.tv_nsec);
}

/* Waits for every member; 0, or -1 when aborted, a member died or time ran out. */
static int ccl_barrier(struct ccl_comm *c) {
    struct shm_hdr *h = c->hdr;
    unsigned gen = atomic_load(&h->gen);
    if (atomic_fetch_add(&h->count, 1) == (unsigned)c->nranks - 1) {
        atomic_store(&h->count, 0);
        atomic_fetch_add(&h->gen, 1);
        return 0;
    }
    double end = ccl_now() + ccl_timeout();
    while (atomic_load(&h->gen) == gen) {
        if (atomic_load(&c->aborted) || atomic_load(&h->dead)) return -1;
        if (ccl_now() > end) {
            fprintf(stderr, "ccl stub: rank %d timed out at a barrier\n", c->rank);
            return -1;
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Joins segment `name` as `rank` of `nranks`; NULL on failure. */
static struct ccl_comm *ccl_join(const char *name, int nranks, int rank) {
    const char *s = getenv("STUB_CCL_SLOT");
    size_t slot = s ? (size_t)atol(s) : (size_t)16 << 20;
    size_t len = 4096 + (size_t)nranks * slot;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    if (fd < 0) { perror("ccl stub: shm_open"); return NULL; }
    if (ftruncate(fd, (off_t)len) != 0) { perror("ccl stub: ftruncate"); close(fd); return NULL; }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) { perror("ccl stub: mmap"); return NULL; }
    struct ccl_comm *c = calloc(1, sizeof *c);
    c->hdr = p;
    c->slots = (unsigned char *)p + 4096;
    c->slot = slot;
    c->map_len = len;
    c->rank = rank;
    c->nranks = nranks;
    c->refs = 1;
    c->hdr->nranks = nranks;
    atomic_fetch_add(&c->hdr->joined, 1);
    double end = ccl_now() + ccl_timeout();
    while (atomic_load(&c->hdr->joined) < nranks) {
        if (ccl_now() > end) {
            fprintf(stderr, "ccl stub: rank %d of %d: not every member joined\n", rank, nranks);
            munmap(p, len);
            free(c);
            return NULL;
        }
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    /* Everyone has it mapped: the name can go. */
    if (ccl_barrier(c) != 0) { munmap(p, len); free(c); return NULL; }
    if (rank == 0) shm_unlink(name);
    atomic_fetch_add(&ccl_counts[C_INIT], 1);
    return c;
}

static float h2f(uint16_t h) {
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, bits;
    if (e == 0) {
        float f = (float)m / 1024.0f / 16384.0f;
        return s ? -f : f;
    } else if (e == 31) bits = s | 0x7f800000u | (m << 13);
    else bits = s | ((e + 112) << 23) | (m << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t f2h(float f) {
    /* Exact for the small integers the tests use; round to nearest otherwise. */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t s = (x >> 16) & 0x8000;
    int e = (int)((x >> 23) & 255) - 127 + 15;
    uint32_t m = x & 0x7fffff;
    if (((x >> 23) & 255) == 255) return (uint16_t)(s | 0x7c00 | (m ? 0x200 : 0));
    if (e >= 31) return (uint16_t)(s | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)s;
        m |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(s | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(s | r);
}

static float b2f(uint16_t b) {
    uint32_t x = (uint32_t)b << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static uint16_t f2b(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t r = x + 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(r >> 16);
}

#define RED(T, a, b, op)                                                           \
    do {                                                                           \
        T x_ = *(T *)(a), y_ = *(const T *)(b);                                    \
        T z_ = op == OP_SUM ? (T)(x_ + y_) : op == OP_PROD ? (T)(x_ * y_)          \
             : op == OP_MAX ? (x_ > y_ ? x_ : y_) : (x_ < y_ ? x_ : y_);           \
        *(T *)(a) = z_;                                                            \
    } while (0)

/* acc[i] = acc[i] op in[i] for n elements of type t. */
static void ccl_reduce(void *acc, const void *in, size_t n, int t, int op) {
    size_t e = ccl_size(t);
    unsigned char *a = acc;
    const unsigned char *b = in;
    for (size_t i = 0; i < n; i++, a += e, b += e) {
        switch (t) {
        case T_I8: RED(int8_t, a, b, op); break;
        case T_U8: RED(uint8_t, a, b, op); break;
        case T_I32: RED(int32_t, a, b, op); break;
        case T_U32: RED(uint32_t, a, b, op); break;
        case T_I64: RED(int64_t, a, b, op); break;
        case T_U64: RED(uint64_t, a, b, op); break;
        case T_F32: RED(float, a, b, op); break;
        case T_F64: RED(double, a, b, op); break;
        case T_F16: case T_BF16: {
            uint16_t x, y;
            memcpy(&x, a, 2);
            memcpy(&y, b, 2);
            float fx = t == T_F16 ? h2f(x) : b2f(x), fy = t == T_F16 ? h2f(y) : b2f(y);
            RED(float, &fx, &fy, op);
            x = t == T_F16 ? f2h(fx) : f2b(fx);
            memcpy(a, &x, 2);
            break;
        }
        }
    }
}

enum { K_AR, K_RS, K_AG, K_BC };

/* One collective call, as made. */
struct ccl_op {
    struct ccl_comm *c;
    int kind;
    const void *send;
    void *recv;
    size_t count;
    int t, op, root;
    void *stream;
    int now; /* copy with ccl_copy_now (inside a host function), not on the stream */
};

static size_t ccl_in_bytes(const struct ccl_op *o) {
    size_t e = ccl_size(o->t);
    return o->kind == K_RS ? (size_t)o->c->nranks * o->count * e : o->count * e;
}

static int ccl_in(const struct ccl_op *o, void *dst, const void *dev, size_t n) {
    return o->now ? ccl_copy_now(dst, dev, n, DIR_TO_HOST) : ccl_to_host(dst, dev, n, o->stream);
}

static int ccl_out(const struct ccl_op *o, void *dev, const void *src, size_t n) {
    return o->now ? ccl_copy_now(dev, src, n, DIR_TO_DEV) : ccl_to_dev(dev, src, n, o->stream);
}

/* One collective: `in_bytes` from `send` into this member's slot, a barrier, this
 * member's `out_bytes` computed into `recv`, a barrier. 0, or -1 (failed), -2 (too
 * large for a slot). */
static int ccl_run(const struct ccl_op *o) {
    struct ccl_comm *c = o->c;
    int kind = o->kind, t = o->t;
    size_t count = o->count, e = ccl_size(t), n = (size_t)c->nranks;
    size_t in_bytes = ccl_in_bytes(o);
    size_t out_bytes = kind == K_AG ? n * count * e : count * e;
    if (in_bytes > c->slot) return -2;
    if (atomic_load(&c->aborted) || atomic_load(&c->hdr->dead)) return -1;
    unsigned char *mine = c->slots + (size_t)c->rank * c->slot;
    if ((kind != K_BC || c->rank == o->root) && in_bytes && ccl_in(o, mine, o->send, in_bytes) != 0) return -1;
    if (ccl_barrier(c) != 0) return -1;
    unsigned char *out = malloc(out_bytes ? out_bytes : 1);
    switch (kind) {
    case K_AR:
    case K_RS: {
        size_t off = kind == K_RS ? (size_t)c->rank * count * e : 0;
        memcpy(out, c->slots + off, out_bytes);
        for (size_t r = 1; r < n; r++) ccl_reduce(out, c->slots + r * c->slot + off, count, t, o->op);
        break;
    }
    case K_AG:
        for (size_t r = 0; r < n; r++) memcpy(out + r * count * e, c->slots + r * c->slot, count * e);
        break;
    case K_BC:
        memcpy(out, c->slots + (size_t)o->root * c->slot, out_bytes);
        break;
    }
    int rc = out_bytes ? ccl_out(o, o->recv, out, out_bytes) : 0;
    free(out);
    if (rc != 0) return -1;
    return ccl_barrier(c) != 0 ? -1 : 0;
}

static void ccl_hold(struct ccl_comm *c) { atomic_fetch_add(&c->refs, 1); }

/* Drops one reference; the last unmaps the segment and frees the communicator. */
static void ccl_release(struct ccl_comm *c) {
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        munmap(c->hdr, c->map_len);
        free(c);
    }
}

static int ccl_sync_mode(void) {
    const char *s = getenv("STUB_CCL_SYNC");
    return (s && strcmp(s, "1") == 0) || !ccl_launch || !ccl_copy_now;
}

/* A queued collective, run by the stream's worker when the stream reaches it. It
 * touches no stream: its copies go through ccl_copy_now. */
static void ccl_queued(void *arg) {
    struct ccl_op *o = arg;
    struct ccl_comm *c = o->c;
    if (ccl_run(o) != 0) {
        int none = 0;
        atomic_compare_exchange_strong(&c->async_rc, &none, -1);
        atomic_store(&c->hdr->dead, 1); /* the other members stop instead of timing out */
    }
    free(o);
    ccl_release(c);
}

/* Makes call `o` after its library checked the type, op and root: 0 (queued, or
 * done when host-synchronous), -1 (failed) or -2 (too large for a slot). */
static int ccl_submit(struct ccl_op o) {
    struct ccl_comm *c = o.c;
    if (ccl_in_bytes(&o) > c->slot) return -2;
    if (ccl_sync_mode()) {
        ccl_hold(c);
        o.now = 0;
        int rc = ccl_run(&o);
        ccl_release(c);
        return rc;
    }
    /* Known dead already: say so now rather than only through the async error. */
    if (atomic_load(&c->aborted) || atomic_load(&c->hdr->dead)) return -1;
    struct ccl_op *q = malloc(sizeof *q);
    if (!q) return -1;
    *q = o;
    q->now = 1;
    ccl_hold(c);
    if (ccl_launch(o.stream, ccl_queued, q) != 0) {
        free(q);
        ccl_release(c);
        return -1;
    }
    return 0;
}

/* 0, or -1 when a queued collective of `c` failed. */
static int ccl_async_error(struct ccl_comm *c) { return atomic_load(&c->async_rc); }

static inline void ccl_abort(struct ccl_comm *c) {
    atomic_fetch_add(&ccl_counts[C_ABORT], 1);
    atomic_store(&c->aborted, 1);
    atomic_store(&c->hdr->dead, 1);
    /* Left mapped and never freed: another thread may still be inside a call on it,
     * and queued work ends at once now that `aborted` is set. */
}

/* Frees `c` once its queued collectives have run: waits for them (bounded by
 * STUB_CCL_TIMEOUT_S, as the real libraries flush a communicator's work at
 * destroy); past that, aborts them and leaves the unmap to the last one. */
static inline void ccl_destroy(struct ccl_comm *c) {
    atomic_fetch_add(&ccl_counts[C_DESTROY], 1);
    double end = ccl_now() + ccl_timeout();
    while (atomic_load(&c->refs) > 1 && ccl_now() < end) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&c->refs) > 1) {
        fprintf(stderr, "ccl stub: rank %d: destroyed with collectives still queued; aborting them\n", c->rank);
        atomic_store(&c->aborted, 1);
        atomic_store(&c->hdr->dead, 1);
    }
    ccl_release(c);
}

/* Opens the stub runtime this library runs on (the path in `var`) and returns
 * symbol `name` of it, or NULL when it lacks one. */
static void *ccl_runtime_sym_or_null(const char *var, const char *name) {
    static void *lib;
    if (!lib) {
        const char *path = getenv(var);
        lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        if (!lib) { fprintf(stderr, "ccl stub: cannot open the runtime named by %s\n", var); abort(); }
    }
    return dlsym(lib, name);
}

/* As ccl_runtime_sym_or_null, aborting when the runtime lacks `name`. */
static void *ccl_runtime_sym(const char *var, const char *name) {
    void *f = ccl_runtime_sym_or_null(var, name);
    if (!f) { fprintf(stderr, "ccl stub: runtime lacks %s\n", name); abort(); }
    return f;
}

/* Finds the runtime's entry points for stream-ordered collectives. */
static void ccl_bind_stream_order(const char *var) {
    ccl_launch = (int (*)(void *, void (*)(void *), void *))ccl_runtime_sym_or_null(var, "stubLaunchHostFunc");
    ccl_copy_now = (int (*)(void *, const void *, size_t, int))ccl_runtime_sym_or_null(var, "stubCopyNow");
}
#endif
