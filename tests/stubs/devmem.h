/* Shared by the stub device runtimes in this folder: "device memory" that the
 * library under test can never touch directly.
 *
 * One memfd is mapped twice: the addresses handed out as device pointers are a
 * PROT_NONE view (any direct load or store from the library faults at once), and
 * the stub's own copy functions go through a private read-write alias. Allocations
 * are bump-allocated and recorded, so a copy that runs past an allocation's end, a
 * device pointer passed where host memory belongs, or a freed pointer aborts the
 * process with a message naming the call. Pinned host allocations are recorded too.
 * All state is behind one mutex, so ranks on several threads can share a stub. */
#ifndef STUB_DEVMEM_H
#define STUB_DEVMEM_H
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DEV_ARENA (1ull << 31) /* 2 GiB of address space, sparse */
#define MAX_ALLOCS 4096

struct dev_alloc { uintptr_t base; size_t size; int device; int live; int pinned; };

static pthread_mutex_t dm_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *dm_view;  /* PROT_NONE: what callers see */
static unsigned char *dm_alias; /* read-write: what the stub copies through */
static size_t dm_next;
static struct dev_alloc dm_allocs[MAX_ALLOCS];
static const char *dm_name = "stub";

static void dm_die(const char *call, const char *what, const void *p) {
    fprintf(stderr, "%s stub: MISUSE in %s: %s (%p)\n", dm_name, call, what, p);
    abort();
}

static void dm_init(const char *name) {
    if (dm_view) return;
    dm_name = name;
    int fd = memfd_create(name, 0);
    if (fd < 0 || ftruncate(fd, DEV_ARENA) != 0) { perror("stub memfd"); abort(); }
    dm_view = mmap(NULL, DEV_ARENA, PROT_NONE, MAP_SHARED, fd, 0);
    dm_alias = mmap(NULL, DEV_ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (dm_view == MAP_FAILED || dm_alias == MAP_FAILED) { perror("stub mmap"); abort(); }
    close(fd);
    dm_next = 4096;
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
            dm_allocs[i] = (struct dev_alloc){base, size, device, 1, pinned};
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
    if (dm_next + rounded > DEV_ARENA) { pthread_mutex_unlock(&dm_lock); return NULL; }
    uintptr_t base = (uintptr_t)dm_view + dm_next;
    dm_next += rounded + 4096; /* a guard page between allocations */
    dm_record(base, size, device, 0);
    pthread_mutex_unlock(&dm_lock);
    return (void *)base;
}

static int dm_free(const char *call, void *p, int pinned) {
    pthread_mutex_lock(&dm_lock);
    struct dev_alloc *d = dm_find(p);
    if (!d || d->base != (uintptr_t)p || d->pinned != pinned) dm_die(call, "not a live allocation of this kind", p);
    d->live = 0;
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

/* Checks [p, p+n) is host memory (not in the device arena). */
static void dm_host_range(const char *call, const void *p, size_t n) {
    if (dm_is_device(p) || (n && dm_is_device((const char *)p + n - 1)))
        dm_die(call, "host pointer expected, got a device pointer", p);
    if (n && !p) dm_die(call, "NULL host pointer", p);
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
