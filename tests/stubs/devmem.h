/* Shared by the stub device runtimes in this folder: "device memory" that the
 * library under test can never touch directly.
 *
 * One memfd is mapped twice: the addresses handed out as device pointers are a
 * PROT_NONE view (any direct load or store from the library faults at once), and
 * the stub's own copy functions go through a private read-write alias. Allocations
 * are bump-allocated and recorded, so a copy that runs past an allocation's end, a
 * device pointer passed where host memory belongs, or a freed pointer aborts the
 * process with a message naming the call. Pinned host allocations are recorded too.
 * Allocation state is behind one mutex and stream state behind another, so ranks on
 * several threads can share a stub. Streams run their work on worker threads (see
 * "Streams" below).
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
#include <time.h>
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

/* ---- Streams ----
 *
 * Each stream is a FIFO of items served by a worker thread of its own (started on
 * the stream's first item), so stream work runs later than it was enqueued, off the
 * caller's thread, and in order: a caller that reads a copy's destination before
 * synchronising, or a missing dependency between streams, sees stale bytes. Items:
 * - COPY: memcpy(dst, src, n);
 * - HOST_FN: fn(arg) on the worker; later items wait until it returns (a host
 *   function that blocks holds its stream);
 * - RECORD: marks an event's record as reached (event done once every record
 *   placed on it so far has run);
 * - WAIT: holds the stream until the event's last record placed before the wait
 *   has run (waiting on an event never recorded waits for nothing).
 * Synchronising waits until the stream's FIFO is empty. STUB_STREAM_DELAY_US
 * (default 50) makes the worker sleep that long before each item, so ordering bugs
 * show as wrong data rather than as rare races. One mutex and one condition
 * variable serve every stream and event of the stub. */
enum dm_kind { DM_COPY, DM_HOST_FN, DM_RECORD, DM_WAIT };

struct dm_event { uint64_t magic; int live; int device; unsigned flags; uint64_t recorded, done; };
#define DM_EVENT_MAGIC 0x4556454e54455654ull

struct dm_item {
    int kind;
    void *dst;
    const void *src;
    size_t n;
    void (*fn)(void *);
    void *arg;
    struct dm_event *ev;
    uint64_t seq;
    uint64_t gseq; /* position among the items of all streams */
    struct dm_item *next;
};

struct dm_stream {
    uint64_t magic;
    int live;
    int device;
    struct dm_item *head, *tail; /* head stays queued while it runs */
    int running;                 /* the worker is running head */
    int started;                 /* the worker thread exists */
    int destroyed;               /* the worker exits once the FIFO drains */
};
#define DM_STREAM_MAGIC 0x53545245414d5354ull

static pthread_mutex_t dm_q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t dm_q_cond = PTHREAD_COND_INITIALIZER;
static struct dm_stream dm_default_stream = {DM_STREAM_MAGIC, 1, 0, NULL, NULL, 0, 0, 0};

/* Device-wide synchronisation points (STUB_IMPLICIT_SYNC=1), as the CUDA guide's
 * "implicit synchronization" describes for memory allocation and free: the call
 * returns once every item queued on any stream before it has run, and items queued
 * on any stream while it waits start only after it returns. A host function that
 * waits for device work queued after it then deadlocks, as it does on a GPU. */
#define DM_MAX_STREAMS 4096
static struct dm_stream *dm_streams[DM_MAX_STREAMS]; /* every stream with a worker */
static int dm_nstreams;
static uint64_t dm_gseq;      /* items queued so far, on all streams */
static uint64_t dm_sync_seq;  /* while dm_syncing: items numbered above it wait */
static int dm_syncing;

static struct dm_stream *dm_stream_of(const char *call, void *s) {
    struct dm_stream *st = s ? (struct dm_stream *)s : &dm_default_stream;
    if (st->magic != DM_STREAM_MAGIC) dm_die(call, "not a stream", s);
    if (!st->live) dm_die(call, "stream used after destroy", s);
    return st;
}

static void dm_delay(void) {
    static int us = -1;
    if (us < 0) {
        const char *s = getenv("STUB_STREAM_DELAY_US");
        us = s ? atoi(s) : 50;
        if (us < 0) us = 0;
    }
    if (us) usleep((useconds_t)us);
}

static void *dm_worker(void *p) {
    struct dm_stream *st = p;
    pthread_mutex_lock(&dm_q_lock);
    for (;;) {
        struct dm_item *it = st->head;
        if (!it) {
            if (st->destroyed) break;
            pthread_cond_wait(&dm_q_cond, &dm_q_lock);
            continue;
        }
        if ((it->kind == DM_WAIT && it->ev->done < it->seq) || (dm_syncing && it->gseq > dm_sync_seq)) {
            pthread_cond_wait(&dm_q_cond, &dm_q_lock);
            continue;
        }
        st->running = 1;
        pthread_mutex_unlock(&dm_q_lock);
        dm_delay();
        if (it->kind == DM_COPY && it->n) memcpy(it->dst, it->src, it->n);
        if (it->kind == DM_HOST_FN) it->fn(it->arg);
        pthread_mutex_lock(&dm_q_lock);
        if (it->kind == DM_RECORD && it->seq > it->ev->done) it->ev->done = it->seq;
        st->head = it->next;
        if (!st->head) st->tail = NULL;
        st->running = 0;
        free(it);
        pthread_cond_broadcast(&dm_q_cond);
    }
    pthread_mutex_unlock(&dm_q_lock);
    return NULL;
}

/* Appends an item, starting the stream's worker on first use. Queue lock held. */
static void dm_push_locked(struct dm_stream *st, struct dm_item *it) {
    if (!st->started) {
        pthread_t t;
        if (pthread_create(&t, NULL, dm_worker, st) != 0) dm_die("stream", "cannot start the stream worker", st);
        pthread_detach(t);
        st->started = 1;
        if (dm_nstreams == DM_MAX_STREAMS) dm_die("stream", "too many streams", st);
        dm_streams[dm_nstreams++] = st;
    }
    it->gseq = ++dm_gseq;
    it->next = NULL;
    if (st->tail) st->tail->next = it; else st->head = it;
    st->tail = it;
    pthread_cond_broadcast(&dm_q_cond);
}

static struct dm_item *dm_item_new(int kind) {
    struct dm_item *it = calloc(1, sizeof *it);
    if (!it) dm_die("stream", "out of memory for a stream item", NULL);
    it->kind = kind;
    return it;
}

static void dm_enqueue(struct dm_stream *st, void *dst, const void *src, size_t n) {
    struct dm_item *it = dm_item_new(DM_COPY);
    it->dst = dst;
    it->src = src;
    it->n = n;
    pthread_mutex_lock(&dm_q_lock);
    dm_push_locked(st, it);
    pthread_mutex_unlock(&dm_q_lock);
}

/* Queues fn(arg) on the stream's worker. */
__attribute__((unused)) static void dm_enqueue_host_fn(struct dm_stream *st, void (*fn)(void *), void *arg) {
    struct dm_item *it = dm_item_new(DM_HOST_FN);
    it->fn = fn;
    it->arg = arg;
    pthread_mutex_lock(&dm_q_lock);
    dm_push_locked(st, it);
    pthread_mutex_unlock(&dm_q_lock);
}

/* Copies n bytes now, through the alias, outside every stream: dir 1 host to
 * device, 2 device to host (ACL's and cudaMemcpyKind's numbers). For a stub
 * collective library's work running inside a host function on a stream worker,
 * where the stream's own copies cannot be used (they would queue behind the host
 * function itself). Misuse aborts as it does for the queued copies. 0, or -1 for
 * another dir. */
__attribute__((unused)) static int dm_copy_now(const char *call, void *dst, const void *src, size_t n, int dir) {
    if (dir != 1 && dir != 2) return -1;
    if (n == 0) return 0;
    if (dir == 1) {
        dm_host_range(call, src, n);
        memcpy(dm_dev_range(call, dst, n), src, n);
    } else {
        dm_host_range(call, dst, n);
        memcpy(dst, dm_dev_range(call, src, n), n);
    }
    return 0;
}

/* Waits until every item queued on the stream so far has run. */
static void dm_sync(struct dm_stream *st) {
    pthread_mutex_lock(&dm_q_lock);
    while (st->head) pthread_cond_wait(&dm_q_cond, &dm_q_lock);
    pthread_mutex_unlock(&dm_q_lock);
}

/* A device-wide synchronisation point when STUB_IMPLICIT_SYNC=1 (see dm_streams). */
__attribute__((unused)) static void dm_device_sync(void) {
    const char *on = getenv("STUB_IMPLICIT_SYNC");
    if (!on || strcmp(on, "1") != 0) return;
    pthread_mutex_lock(&dm_q_lock);
    uint64_t upto = dm_gseq;
    if (!dm_syncing || upto > dm_sync_seq) dm_sync_seq = upto;
    dm_syncing++;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < dm_nstreams && !busy; i++)
            busy = dm_streams[i]->head && dm_streams[i]->head->gseq <= upto;
        if (!busy) break;
        pthread_cond_wait(&dm_q_cond, &dm_q_lock);
    }
    dm_syncing--;
    pthread_cond_broadcast(&dm_q_cond);
    pthread_mutex_unlock(&dm_q_lock);
}

/* A copy with pageable host memory: queued behind the stream's earlier work and
 * waited for, so it is synchronous for the caller yet still in stream order. */
__attribute__((unused)) static void dm_copy_sync(struct dm_stream *st, void *dst, const void *src, size_t n) {
    dm_enqueue(st, dst, src, n);
    dm_sync(st);
}

/* Drops the copies queued on a stream and not yet running, then waits for the rest:
 * what a stub does when it reports a failed synchronisation (the copies are lost,
 * as on a faulted device; host functions and event records still run, so nothing
 * waiting on them hangs). */
__attribute__((unused)) static void dm_discard(struct dm_stream *st) {
    pthread_mutex_lock(&dm_q_lock);
    struct dm_item **link = &st->head;
    struct dm_item *prev = NULL;
    for (struct dm_item *it = st->head; it;) {
        struct dm_item *next = it->next;
        int running = it == st->head && st->running;
        if (it->kind == DM_COPY && !running) {
            *link = next;
            free(it);
        } else {
            prev = it;
            link = &it->next;
        }
        it = next;
    }
    st->tail = prev;
    pthread_cond_broadcast(&dm_q_cond);
    while (st->head) pthread_cond_wait(&dm_q_cond, &dm_q_lock);
    pthread_mutex_unlock(&dm_q_lock);
}

static struct dm_stream *dm_stream_new(int device) {
    struct dm_stream *st = calloc(1, sizeof *st);
    st->magic = DM_STREAM_MAGIC;
    st->live = 1;
    st->device = device;
    return st;
}

/* Destroys a stream. Work still queued runs to the end first (as the runtimes
 * document), except that queued copies mean the caller never synchronised what it
 * staged: that aborts. */
static void dm_stream_destroy(const char *call, void *s) {
    struct dm_stream *st = dm_stream_of(call, s);
    pthread_mutex_lock(&dm_q_lock);
    for (struct dm_item *it = st->head; it; it = it->next)
        if (it->kind == DM_COPY) {
            pthread_mutex_unlock(&dm_q_lock);
            dm_die(call, "stream destroyed with copies never synchronised", s);
        }
    st->live = 0; /* never freed: a later use is caught by `live` */
    st->destroyed = 1;
    pthread_cond_broadcast(&dm_q_cond);
    pthread_mutex_unlock(&dm_q_lock);
}

/* ---- Events ---- */

__attribute__((unused)) static struct dm_event *dm_event_new(int device) {
    struct dm_event *ev = calloc(1, sizeof *ev);
    ev->magic = DM_EVENT_MAGIC;
    ev->live = 1;
    ev->device = device;
    return ev;
}

static struct dm_event *dm_event_of(const char *call, void *e) {
    struct dm_event *ev = e;
    if (!ev || ev->magic != DM_EVENT_MAGIC) dm_die(call, "not an event", e);
    if (!ev->live) dm_die(call, "event used after destroy", e);
    return ev;
}

/* Destroys an event; a record still queued completes harmlessly (never freed). */
__attribute__((unused)) static void dm_event_destroy(const char *call, void *e) {
    struct dm_event *ev = dm_event_of(call, e);
    pthread_mutex_lock(&dm_q_lock);
    ev->live = 0;
    pthread_mutex_unlock(&dm_q_lock);
}

/* Records the event at the current end of the stream. */
__attribute__((unused)) static void dm_event_record(struct dm_stream *st, struct dm_event *ev) {
    struct dm_item *it = dm_item_new(DM_RECORD);
    it->ev = ev;
    pthread_mutex_lock(&dm_q_lock);
    it->seq = ++ev->recorded;
    dm_push_locked(st, it);
    pthread_mutex_unlock(&dm_q_lock);
}

/* Has every record placed on the event so far run? (Never recorded: yes.) */
__attribute__((unused)) static int dm_event_done(struct dm_event *ev) {
    pthread_mutex_lock(&dm_q_lock);
    int done = ev->done >= ev->recorded;
    pthread_mutex_unlock(&dm_q_lock);
    return done;
}

/* Makes later work on the stream wait for the event's last record so far. */
__attribute__((unused)) static void dm_stream_wait(struct dm_stream *st, struct dm_event *ev) {
    struct dm_item *it = dm_item_new(DM_WAIT);
    it->ev = ev;
    pthread_mutex_lock(&dm_q_lock);
    it->seq = ev->recorded;
    dm_push_locked(st, it);
    pthread_mutex_unlock(&dm_q_lock);
}
#endif
