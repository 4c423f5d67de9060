/* Shared by the stub device runtimes in this folder: "device memory" that the
 * library under test can never touch directly.
 *
 * One memfd is mapped twice: the addresses handed out as device pointers are a
 * PROT_NONE view (any direct load or store from the library faults at once), and
 * the stub's own copy functions go through a private read-write alias. Allocations
 * are bump-allocated and recorded, so a copy that runs past an allocation's end, a
 * device pointer passed where host memory belongs, or a freed pointer aborts the
 * process with a message naming the call. Pinned host allocations are recorded too.
 * All state is behind one mutex, so ranks on several threads can share a stub.
 *
 * Every function and variable here is static, so each stub library has its own
 * arena (its own memfd, mapped wherever the kernel puts it) and claims only the
 * pointers it handed out; several stubs load side by side into one process. A host
 * pointer is also checked to be readable, so another stub's device pointer passed
 * as host memory is reported instead of faulting inside a copy.
 *
 * Freed device ranges are released (MADV_REMOVE) and reused by later allocations of
 * at most their size, so a long test does not run out of arena.
 *
 * STUB_FAIL=call1,call2 makes the named calls fail with the vendor's error code
 * (each stub decides which code), for error-path tests. */
#ifndef STUB_DEVMEM_H
#define STUB_DEVMEM_H
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define DEV_ARENA (1ull << 31) /* 2 GiB of address space, sparse */
#define MAX_ALLOCS 4096

struct dev_alloc { uintptr_t base; size_t size; int device; int live; int pinned; size_t span; };
/* A released device range [base, base + span) that a later allocation may reuse. */
struct dev_hole { uintptr_t base; size_t span; };

static pthread_mutex_t dm_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *dm_view;  /* PROT_NONE: what callers see */
static unsigned char *dm_alias; /* read-write: what the stub copies through */
static size_t dm_next;
static struct dev_alloc dm_allocs[MAX_ALLOCS];
static struct dev_hole dm_holes[MAX_ALLOCS];
static int dm_nholes;
static const char *dm_name = "stub";

static void dm_die(const char *call, const char *what, const void *p) {
    fprintf(stderr, "%s stub: MISUSE in %s: %s (%p)\n", dm_name, call, what, p);
    abort();
}

/* Maps the arena once. Under the lock: ranks on several threads make their first
 * call at once (a pointer query from every rank), and a second mapping racing the
 * first would reset dm_next after an allocation and hand out its address again. */
static void dm_init(const char *name) {
    pthread_mutex_lock(&dm_lock);
    if (!dm_view) {
        dm_name = name;
        int fd = memfd_create(name, 0);
        if (fd < 0 || ftruncate(fd, DEV_ARENA) != 0) { perror("stub memfd"); abort(); }
        unsigned char *view = mmap(NULL, DEV_ARENA, PROT_NONE, MAP_SHARED, fd, 0);
        dm_alias = mmap(NULL, DEV_ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (view == MAP_FAILED || dm_alias == MAP_FAILED) { perror("stub mmap"); abort(); }
        close(fd);
        dm_next = 4096;
        dm_view = view;
    }
    pthread_mutex_unlock(&dm_lock);
}

static int dm_is_device(const void *p) {
    uintptr_t a = (uintptr_t)p;
    return dm_view && a >= (uintptr_t)dm_view && a < (uintptr_t)dm_view + DEV_ARENA;
}

/* The live allocation (device or pinned) holding p, or NULL. Lock held. */
static struct dev_alloc *dm_find(const void *p) {
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < MAX_ALLOCS; i++) {
        struct dev_alloc *d = &dm_allocs[i];
        if (d->live && a >= d->base && a < d->base + (d->size ? d->size : 1)) return d;
    }
    return NULL;
}

static struct dev_alloc *dm_record(uintptr_t base, size_t size, int device, int pinned) {
    for (int i = 0; i < MAX_ALLOCS; i++) {
        if (!dm_allocs[i].live) {
            dm_allocs[i] = (struct dev_alloc){base, size, device, 1, pinned, 0};
            return &dm_allocs[i];
        }
    }
    dm_die("alloc", "too many allocations", NULL);
    return NULL;
}

/* Device allocation of size bytes on device; NULL when the arena is full. */
static void *dm_alloc(size_t size, int device) {
    pthread_mutex_lock(&dm_lock);
    size_t rounded = (size + 4095) & ~(size_t)4095;
    if (rounded == 0) rounded = 4096;
    int best = -1;
    for (int i = 0; i < dm_nholes; i++)
        if (dm_holes[i].span >= rounded && (best < 0 || dm_holes[i].span < dm_holes[best].span)) best = i;
    uintptr_t base;
    size_t span;
    if (best >= 0) {
        base = dm_holes[best].base;
        span = dm_holes[best].span;
        dm_holes[best] = dm_holes[--dm_nholes];
    } else {
        if (size > DEV_ARENA || dm_next + rounded > DEV_ARENA) { pthread_mutex_unlock(&dm_lock); return NULL; }
        base = (uintptr_t)dm_view + dm_next;
        span = rounded;
        dm_next += rounded + 4096; /* a guard page between allocations */
    }
    dm_record(base, size, device, 0)->span = span;
    pthread_mutex_unlock(&dm_lock);
    return (void *)base;
}

static int dm_free(const char *call, void *p, int pinned) {
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(p);
    if (!d || d->base != (uintptr_t)p || d->pinned != pinned) dm_die(call, "not a live allocation of this kind", p);
    d->live = 0;
    if (!pinned) {
        unsigned char *alias = dm_alias + (d->base - (uintptr_t)dm_view);
        madvise(alias, d->span, MADV_REMOVE); /* give the pages back; reads see zeros */
        if (dm_nholes < MAX_ALLOCS) dm_holes[dm_nholes++] = (struct dev_hole){d->base, d->span};
    }
    pthread_mutex_unlock(&dm_lock);
    if (pinned) free(p);
    return 0;
}

static void *dm_alloc_pinned(size_t size) {
    void *p = NULL;
    if (posix_memalign(&p, 4096, size ? size : 1) != 0) return NULL;
    pthread_mutex_lock(&dm_lock);
    dm_record((uintptr_t)p, size, 0, 1);
    pthread_mutex_unlock(&dm_lock);
    return p;
}

/* Checks [p, p+n) is inside one live device allocation; returns its alias address. */
static unsigned char *dm_dev_range(const char *call, const void *p, size_t n) {
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(p);
    if (!d || d->pinned) dm_die(call, "device pointer expected, got something else", p);
    if ((uintptr_t)p + n > d->base + d->size) dm_die(call, "copy runs past the end of the device allocation", p);
    pthread_mutex_unlock(&dm_lock);
    return dm_alias + ((uintptr_t)p - (uintptr_t)dm_view);
}

/* Can this process read the byte at p? (process_vm_readv fails with EFAULT on
 * unmapped or PROT_NONE memory, such as another stub's device arena.) */
static int dm_readable(const void *p) {
    unsigned char b;
    struct iovec local = {&b, 1}, remote = {(void *)p, 1};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == 1;
}

/* Checks [p, p+n) is host memory (not in the device arena, readable). */
static void dm_host_range(const char *call, const void *p, size_t n) {
    if (dm_is_device(p) || (n && dm_is_device((const char *)p + n - 1)))
        dm_die(call, "host pointer expected, got a device pointer", p);
    if (n && !p) dm_die(call, "NULL host pointer", p);
    if (n && (!dm_readable(p) || !dm_readable((const char *)p + n - 1)))
        dm_die(call, "host pointer expected, got memory the process cannot read "
                     "(another runtime's device memory?)", p);
}

/* Is [p, p+n) inside one live pinned allocation of this stub? */
__attribute__((unused)) static int dm_is_pinned(const void *p, size_t n) {
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(p);
    int pinned = d && d->pinned && (uintptr_t)p + n <= d->base + (d->size ? d->size : 1);
    pthread_mutex_unlock(&dm_lock);
    return pinned;
}

/* Is `call` listed in STUB_FAIL (comma-separated)? */
__attribute__((unused)) static int dm_fail(const char *call) {
    const char *list = getenv("STUB_FAIL");
    size_t n = strlen(call);
    for (const char *s = list; s && *s;) {
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len == n && strncmp(s, call, n) == 0) return 1;
        s = end ? end + 1 : NULL;
    }
    return 0;
}

/* The device count from environment variable `var` (default 2, 1..16). */
__attribute__((unused)) static int dm_ndevices(const char *var) {
    const char *s = getenv(var);
    int n = s ? atoi(s) : 2;
    return n < 1 ? 1 : n > 16 ? 16 : n;
}

/* A queued copy: run when its stream is synchronised, so a caller that reads the
 * destination before synchronising sees stale bytes (and the tests catch it). */
struct dm_copy { void *dst; const void *src; size_t n; struct dm_copy *next; };
struct dm_stream { uint64_t magic; int live; int device; struct dm_copy *head, *tail; };
#define DM_STREAM_MAGIC 0x53545245414d5354ull

static struct dm_stream dm_default_stream = {DM_STREAM_MAGIC, 1, 0, NULL, NULL};

static struct dm_stream *dm_stream_of(const char *call, void *s) {
    struct dm_stream *st = s ? (struct dm_stream *)s : &dm_default_stream;
    if (st->magic != DM_STREAM_MAGIC) dm_die(call, "not a stream", s);
    if (!st->live) dm_die(call, "stream used after destroy", s);
    return st;
}

static void dm_enqueue(struct dm_stream *st, void *dst, const void *src, size_t n) {
    struct dm_copy *c = malloc(sizeof *c);
    *c = (struct dm_copy){dst, src, n, NULL};
    pthread_mutex_lock(&dm_lock);
    if (st->tail) st->tail->next = c; else st->head = c;
    st->tail = c;
    pthread_mutex_unlock(&dm_lock);
}

static void dm_sync(struct dm_stream *st) {
    pthread_mutex_lock(&dm_lock);
    struct dm_copy *c = st->head;
    st->head = st->tail = NULL;
    pthread_mutex_unlock(&dm_lock);
    while (c) {
        memcpy(c->dst, c->src, c->n);
        struct dm_copy *next = c->next;
        free(c);
        c = next;
    }
}

/* Drops the copies queued on a stream without running them: what a stub does when
 * it reports a failed synchronisation (the work is lost, as on a faulted device). */
__attribute__((unused)) static void dm_discard(struct dm_stream *st) {
    pthread_mutex_lock(&dm_lock);
    struct dm_copy *c = st->head;
    st->head = st->tail = NULL;
    pthread_mutex_unlock(&dm_lock);
    while (c) {
        struct dm_copy *next = c->next;
        free(c);
        c = next;
    }
}

static struct dm_stream *dm_stream_new(int device) {
    struct dm_stream *st = calloc(1, sizeof *st);
    st->magic = DM_STREAM_MAGIC;
    st->live = 1;
    st->device = device;
    return st;
}

static void dm_stream_destroy(const char *call, void *s) {
    struct dm_stream *st = dm_stream_of(call, s);
    if (st->head) dm_die(call, "stream destroyed with copies never synchronised", s);
    st->live = 0; /* never freed: a later use is caught by `live` */
}
#endif
