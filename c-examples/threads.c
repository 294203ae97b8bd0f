/*
 * threads.c: one lunsnap array shared by several POSIX threads.
 *
 * The header promises that one lunsnap_array may be used from several threads at
 * once (calls are serialised inside). Here:
 *
 *   - WRITERS threads each own one LUN (0, 1, ...) and rewrite it ROUNDS times, front
 *     to back, one 4 KiB chunk per lunsnap_write, round r writing version r of a
 *     deterministic pattern (every 512-byte sector says which LUN, version and
 *     sector it is); each reads back what it wrote, and flushes after each round;
 *   - a copier thread meanwhile makes and refreshes business copies of those LUNs
 *     (lunsnap_create_copy the first time, then lunsnap_attach, sometimes after a
 *     lunsnap_detach), and short-lived extra copies it deletes again;
 *   - a reclaimer thread, as an idle host would, works off the free queue those
 *     operations fill (lunsnap_reclaim with a small budget, lunsnap_pending_bytes)
 *     while the others run.
 *
 * Each copy is verified as soon as it is made, while the writers go on:
 *   - every sector of the copy is exactly some version its parent had at that offset;
 *   - the copy is one point in time of its parent: the writer goes front to back, so
 *     the versions along the copy never increase and span at most two consecutive
 *     rounds (a copy taken mid-round holds round r up to some chunk and r - 1 after);
 *   - a later copy of the same LUN is never older than an earlier one;
 *   - the copy stays frozen: read again after the writers moved on, it is unchanged.
 * At the end every LUN must hold its last round exactly, refreshed copies must equal
 * their parents, lunsnap_check must find nothing wrong, and once the free queue is
 * worked off the pool must hold exactly the LUNs' data (the copies share all of it).
 *
 * Then contention: one thread holds a handle through a slow device flush (the
 * callback sleeps), and WAITERS threads call it meanwhile. Each must wait for the
 * holder, get the right answer, and, in the std build, sleep while it waits (the
 * handle's lock is a mutex): the CPU time it uses is checked against the time it
 * waited. The no_std build spins (no operating system to sleep in): its figures are
 * printed, not checked. Exit status 1 otherwise.
 */

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "hostdev.h"

#define WRITERS 4u
#define ROUNDS 64u
#define LUN_SIZE (128 * KIB)
#define CHUNK (4 * KIB)
#define SECTORS (LUN_SIZE / SECTOR)
#define COPY_BASE 8u   /* copy of LUN i is LUN COPY_BASE + i */
#define SCRATCH_LUN 15u /* short-lived extra copies */
#define MIN_COPIES 40u  /* the copier makes at least this many copies */

static lunsnap_array *array;
static atomic_int failures;
static atomic_uint writers_done;
static atomic_bool copier_done;
static atomic_uint progress[WRITERS]; /* chunks written so far, per writer */

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "threads: FAILED: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    atomic_fetch_add(&failures, 1);
}

static bool ok(lunsnap_result r, const char *what, uint32_t lun) {
    if (r == LUNSNAP_RESULT_OK) {
        return true;
    }
    fail("%s (LUN %u): %s (code %u)", what, lun, lunsnap_strerror(r), (unsigned)r);
    return false;
}

/* ---- the writers ----------------------------------------------------------------- */

static void *writer(void *arg) {
    uint32_t lun = (uint32_t)(uintptr_t)arg;
    static _Thread_local uint8_t buf[CHUNK], back[CHUNK];
    for (uint32_t round = 1; round <= ROUNDS && atomic_load(&failures) == 0; round++) {
        for (uint64_t off = 0; off < LUN_SIZE; off += CHUNK) {
            fill(buf, CHUNK, lun, round, off);
            if (!ok(lunsnap_write(array, lun, off, buf, CHUNK), "write", lun)) {
                return NULL;
            }
            if (!ok(lunsnap_read(array, lun, off, back, CHUNK), "read back", lun)) {
                return NULL;
            }
            if (memcmp(buf, back, CHUNK) != 0) {
                fail("LUN %u: read back at %" PRIu64 " differs from what was just written (round %u)", lun, off,
                     round);
                return NULL;
            }
            atomic_fetch_add(&progress[lun], 1);
        }
        if (!ok(lunsnap_flush(array), "flush", lun)) {
            return NULL;
        }
    }
    atomic_fetch_add(&writers_done, 1);
    return NULL;
}

/* ---- the copier ------------------------------------------------------------------------ */

typedef struct {
    unsigned copies, refreshes, reattaches, scratch, mid_round, frozen_checks, while_writing;
    uint32_t last_min[WRITERS]; /* oldest version in the previous copy of each LUN */
} copier_stats;

/* Verifies that `img` (a copy's contents) is one point in time of LUN `parent`.
 * Returns the oldest version in it (or -1 after a failure). */
static int64_t verify_image(const uint8_t *img, uint32_t parent, uint32_t copy, copier_stats *st) {
    int64_t first = -1, prev = -1, min = -1;
    for (uint64_t s = 0; s < SECTORS; s++) {
        int64_t v = sector_version(img + s * SECTOR, parent, s);
        if (v < 0) {
            fail("copy %u of LUN %u: sector %" PRIu64 " is not any version of its parent's data", copy, parent, s);
            return -1;
        }
        if (s == 0) {
            first = v;
        } else if (v > prev) {
            fail("copy %u of LUN %u: sector %" PRIu64 " has version %" PRId64 " after %" PRId64
                 ": not one point in time",
                 copy, parent, s, v, prev);
            return -1;
        }
        prev = v;
        min = v;
    }
    if (first - min > 1) {
        fail("copy %u of LUN %u: versions %" PRId64 " to %" PRId64 ": not one point in time", copy, parent, min, first);
        return -1;
    }
    if (first != min) {
        st->mid_round++;
    }
    return min;
}

static void pause_briefly(void) {
    struct timespec t = {0, 200 * 1000}; /* 0.2 ms */
    nanosleep(&t, NULL);
    sched_yield();
}

static void *copier(void *arg) {
    copier_stats *st = arg;
    uint8_t *img = malloc(LUN_SIZE), *again = malloc(LUN_SIZE);
    bool made[WRITERS] = {false};
    if (!img || !again) {
        fail("out of memory");
        free(img);
        free(again);
        return NULL;
    }
    for (unsigned k = 0; atomic_load(&failures) == 0; k++) {
        bool writing = atomic_load(&writers_done) < WRITERS;
        if (!writing && k >= MIN_COPIES) {
            break;
        }
        uint32_t parent = k % WRITERS;
        uint32_t copy = COPY_BASE + parent;
        lunsnap_result r;
        if (k % 5 == 4) {
            /* A short-lived extra copy, deleted after its check. */
            copy = SCRATCH_LUN;
            r = lunsnap_create_copy(array, parent, copy, true);
            st->scratch++;
        } else if (!made[parent]) {
            r = lunsnap_create_copy(array, parent, copy, true);
            made[parent] = true;
            st->copies++;
        } else if (k % 3 == 0) {
            /* Discard, then make it again. */
            if (!ok(lunsnap_detach(array, copy), "detach", copy)) {
                break;
            }
            r = lunsnap_attach(array, copy);
            st->reattaches++;
        } else {
            r = lunsnap_attach(array, copy);
            st->refreshes++;
        }
        if (!ok(r, "create_copy/attach", copy)) {
            break;
        }
        if (writing) {
            st->while_writing++;
        }
        if (!ok(lunsnap_read(array, copy, 0, img, LUN_SIZE), "read copy", copy)) {
            break;
        }
        int64_t min = verify_image(img, parent, copy, st);
        if (min < 0) {
            break;
        }
        if ((uint32_t)min < st->last_min[parent]) {
            fail("copy of LUN %u went back in time: version %" PRId64 " after %u", parent, min, st->last_min[parent]);
            break;
        }
        st->last_min[parent] = (uint32_t)min;
        /* Let the writers move on, then the copy must read the same. */
        unsigned before = atomic_load(&progress[parent]);
        pause_briefly();
        if (!ok(lunsnap_read(array, copy, 0, again, LUN_SIZE), "re-read copy", copy)) {
            break;
        }
        if (memcmp(img, again, LUN_SIZE) != 0) {
            fail("copy %u of LUN %u changed while its parent was written", copy, parent);
            break;
        }
        if (atomic_load(&progress[parent]) != before) {
            st->frozen_checks++;
        }
        if (copy == SCRATCH_LUN && !ok(lunsnap_delete(array, copy, false), "delete", copy)) {
            break;
        }
    }
    free(img);
    free(again);
    atomic_store(&copier_done, true);
    return NULL;
}

/* ---- the reclaimer ------------------------------------------------------------------------ */

typedef struct {
    unsigned calls, busy, pending_checks;
    uint64_t work, extent_refs;
} reclaimer_stats;

/* Frees what the copier's attach, detach and delete queue, a small budget at a time,
 * until the copier is done. */
static void *reclaimer(void *arg) {
    reclaimer_stats *st = arg;
    while (!atomic_load(&copier_done) && atomic_load(&failures) == 0) {
        lunsnap_reclaim_stats r = {.struct_size = sizeof r};
        if (!ok(lunsnap_reclaim(array, 32, &r), "reclaim", 0)) {
            break;
        }
        st->calls++;
        st->work += r.work;
        st->extent_refs += r.extent_refs;
        if (r.work > 32 + (uint64_t)(LUN_SIZE / 4096)) {
            fail("reclaim with budget 32 did %" PRIu64 " units of work", r.work);
            break;
        }
        if (r.work > 0) {
            st->busy++;
        }
        if (st->calls % 16 == 0) {
            uint64_t pending = 0;
            if (!ok(lunsnap_pending_bytes(array, &pending), "pending_bytes", 0)) {
                break;
            }
            if (pending > 2 * (WRITERS + 1) * LUN_SIZE) {
                fail("%" PRIu64 " bytes pending: more than the LUNs and copies ever held", pending);
                break;
            }
            st->pending_checks++;
        }
        if (r.remaining == 0) {
            pause_briefly();
        }
    }
    return NULL;
}

/* ---- contention: waiters sleep while the holder is in device I/O ---------------- */

#define WAITERS 3u
#define SLOW_MS 150 /* each flush callback of the slow phase sleeps this long */

typedef struct {
    hostdev d; /* first: the hostdev callbacks take the same context */
    atomic_bool slow;
    atomic_uint in_flush;
} slowdev;

static int32_t slow_flush(void *ctx) {
    slowdev *s = ctx;
    if (atomic_load(&s->slow)) {
        atomic_fetch_add(&s->in_flush, 1);
        struct timespec t = {0, SLOW_MS * 1000000L};
        nanosleep(&t, NULL);
    }
    return hostdev_flush(&s->d);
}

static double seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static lunsnap_array *slow_array;

typedef struct {
    double waited, cpu;
    uint32_t luns;
    lunsnap_result r;
} waiter_result;

static void *holder(void *arg) {
    (void)arg;
    static uint8_t buf[CHUNK];
    fill(buf, CHUNK, 0, 2, 0);
    lunsnap_result r = lunsnap_write(slow_array, 0, 0, buf, CHUNK);
    if (r == LUNSNAP_RESULT_OK) {
        r = lunsnap_flush(slow_array); /* the slow callbacks run here, the handle held */
    }
    ok(r, "slow flush", 0);
    return NULL;
}

static void *waiter(void *arg) {
    waiter_result *w = arg;
    double wall = seconds(CLOCK_MONOTONIC), cpu = seconds(CLOCK_THREAD_CPUTIME_ID);
    lunsnap_pool_info p = {.struct_size = sizeof p};
    w->r = lunsnap_get_pool_info(slow_array, &p);
    w->cpu = seconds(CLOCK_THREAD_CPUTIME_ID) - cpu;
    w->waited = seconds(CLOCK_MONOTONIC) - wall;
    w->luns = p.luns;
    return NULL;
}

static void contention(void) {
    static slowdev s;
    ENSURE(hostdev_init(&s.d, 4096, 2048), "out of memory");
    lunsnap_device_callbacks cb = hostdev_callbacks(&s.d);
    cb.ctx = &s;
    cb.flush = slow_flush;
    lunsnap_format_options fo;
    TRY(lunsnap_format_options_init(&fo, sizeof fo));
    fo.extent_size = 4096;
    fo.max_luns = 16;
    TRY(lunsnap_format_callbacks(&cb, &fo, &slow_array));
    TRY(lunsnap_create_lun(slow_array, 0, LUN_SIZE));
    atomic_store(&s.slow, true);
    pthread_t h, w[WAITERS];
    waiter_result res[WAITERS];
    memset(res, 0, sizeof res);
    ENSURE(pthread_create(&h, NULL, holder, NULL) == 0, "pthread_create failed");
    while (atomic_load(&s.in_flush) == 0) {
        struct timespec t = {0, 1000000L};
        nanosleep(&t, NULL);
    }
    for (unsigned i = 0; i < WAITERS; i++) {
        ENSURE(pthread_create(&w[i], NULL, waiter, &res[i]) == 0, "pthread_create failed");
    }
    pthread_join(h, NULL);
    for (unsigned i = 0; i < WAITERS; i++) {
        pthread_join(w[i], NULL);
    }
    atomic_store(&s.slow, false);
    double waited = 0, cpu = 0;
    for (unsigned i = 0; i < WAITERS; i++) {
        ENSURE(res[i].r == LUNSNAP_RESULT_OK && res[i].luns == 1, "waiter %u: %s, %u LUNs", i,
               lunsnap_strerror(res[i].r), res[i].luns);
        waited += res[i].waited;
        cpu += res[i].cpu;
    }
    ENSURE(atomic_load(&failures) == 0, "the holder failed");
    ENSURE(waited / WAITERS >= SLOW_MS / 3 / 1000.0, "the waiters did not wait for the holder (%.0f ms each)",
           waited / WAITERS * 1000);
#if defined(LUNSNAP_FEATURE_STD)
    /* Sleeping: a waiter's CPU time is a small part of its wait (generous bound: CI
     * machines are noisy; a spinning lock uses about all of it). */
    ENSURE(cpu <= 0.25 * waited + 0.010 * WAITERS,
           "waiters used %.0f ms of CPU while waiting %.0f ms: they spin instead of sleeping", cpu * 1000,
           waited * 1000);
    printf("contention: %u threads waited %.0f ms each for a handle held through %u slow flushes, using %.1f ms of "
           "CPU in all: they slept\n",
           WAITERS, waited / WAITERS * 1000, atomic_load(&s.in_flush), cpu * 1000);
#else
    printf("contention (no_std, spin lock): %u threads waited %.0f ms each, using %.0f ms of CPU in all\n", WAITERS,
           waited / WAITERS * 1000, cpu * 1000);
#endif
    TRY(lunsnap_close(slow_array));
    hostdev_destroy(&s.d);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("threads: %u writer threads, one LUN each, and a copier thread on one array\n", WRITERS);
    lunsnap_format_options fo;
    TRY(lunsnap_format_options_init(&fo, sizeof fo));
    fo.extent_size = 4096;
    fo.max_luns = 16;
    TRY(lunsnap_format_mem(4096, 2048, &fo, &array)); /* 8 MiB, sparse */
    for (uint32_t i = 0; i < WRITERS; i++) {
        TRY(lunsnap_create_lun(array, i, LUN_SIZE));
    }
    printf("LUNs 0-%u of %" PRIu64 " KiB; each writer writes %u rounds of %" PRIu64 " chunks of %" PRIu64
           " KiB, reading each back, flushing after each round\n",
           WRITERS - 1, LUN_SIZE / KIB, ROUNDS, LUN_SIZE / CHUNK, CHUNK / KIB);

    pthread_t w[WRITERS], c, rc;
    copier_stats st;
    memset(&st, 0, sizeof st);
    reclaimer_stats rst;
    memset(&rst, 0, sizeof rst);
    if (pthread_create(&c, NULL, copier, &st) != 0 || pthread_create(&rc, NULL, reclaimer, &rst) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    for (uint32_t i = 0; i < WRITERS; i++) {
        if (pthread_create(&w[i], NULL, writer, (void *)(uintptr_t)i) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    for (uint32_t i = 0; i < WRITERS; i++) {
        pthread_join(w[i], NULL);
    }
    pthread_join(c, NULL);
    pthread_join(rc, NULL);
    if (atomic_load(&failures) != 0) {
        lunsnap_free(array);
        return 1;
    }
    printf("copier: %u copies created, %u refreshed with attach, %u detached and attached again, "
           "%u extra copies created and deleted\n",
           st.copies, st.refreshes, st.reattaches, st.scratch);
    printf("        %u of them made while the writers were running; every copy was one point in time of its "
           "parent; %u caught a writer mid-round; %u re-read unchanged after their parent had moved on\n",
           st.while_writing, st.mid_round, st.frozen_checks);
    printf("reclaimer: %u lunsnap_reclaim calls of budget 32 meanwhile, %u of them with work to do (%" PRIu64
           " units, %" PRIu64 " extent references released); %u lunsnap_pending_bytes checks\n",
           rst.calls, rst.busy, rst.work, rst.extent_refs, rst.pending_checks);

    /* Final contents: every LUN holds its last round; refreshed copies equal it. */
    uint8_t *buf = malloc(LUN_SIZE), *cp = malloc(LUN_SIZE);
    ENSURE(buf && cp, "out of memory");
    for (uint32_t i = 0; i < WRITERS; i++) {
        TRY(lunsnap_read(array, i, 0, buf, LUN_SIZE));
        for (uint64_t s = 0; s < SECTORS; s++) {
            ENSURE(sector_version(buf + s * SECTOR, i, s) == ROUNDS, "LUN %u sector %" PRIu64 " is not round %u", i,
                   s, ROUNDS);
        }
        lunsnap_lun_info info = {.struct_size = sizeof info};
        lunsnap_result r = lunsnap_get_lun_info(array, COPY_BASE + i, &info);
        if (r == LUNSNAP_RESULT_NO_SUCH_LUN) {
            TRY(lunsnap_create_copy(array, i, COPY_BASE + i, true));
        } else {
            TRY(r);
            ENSURE(info.kind == LUNSNAP_LUN_KIND_COPY && info.has_parent && info.parent == i, "LUN %u is not a copy of %u",
                   COPY_BASE + i, i);
            TRY(lunsnap_attach(array, COPY_BASE + i));
        }
        TRY(lunsnap_read(array, COPY_BASE + i, 0, cp, LUN_SIZE));
        ENSURE(memcmp(buf, cp, LUN_SIZE) == 0, "refreshed copy %u differs from LUN %u", COPY_BASE + i, i);
    }
    free(buf);
    free(cp);
    size_t violations = 1;
    TRY(lunsnap_check(array, &violations));
    ENSURE(violations == 0, "lunsnap_check: %zu violations", violations);
    /* The free queue worked off, the pool holds the LUNs' data and nothing else: the
     * copies, just refreshed, share all of it. */
    lunsnap_reclaim_stats rs = {.struct_size = sizeof rs};
    do {
        TRY(lunsnap_reclaim(array, LUNSNAP_RECLAIM_PER_FLUSH, &rs));
    } while (rs.remaining > 0);
    uint64_t pending = 1;
    TRY(lunsnap_pending_bytes(array, &pending));
    lunsnap_pool_info p = {.struct_size = sizeof p};
    TRY(lunsnap_get_pool_info(array, &p));
    ENSURE(pending == 0 && p.reclaim_queue == 0 && p.allocated_bytes == WRITERS * LUN_SIZE,
           "after the reclaim: %" PRIu64 " bytes pending, %" PRIu64 " queued, %" PRIu64 " allocated (want %" PRIu64 ")",
           pending, p.reclaim_queue, p.allocated_bytes, (uint64_t)(WRITERS * LUN_SIZE));
    TRY(lunsnap_check(array, &violations));
    ENSURE(violations == 0, "lunsnap_check after the reclaim: %zu violations", violations);
    printf("final: every LUN holds round %u exactly, refreshed copies equal their parents, check clean; the free "
           "queue worked off, %" PRIu64 " KiB allocated: the LUNs' data alone (%u LUNs, generation %" PRIu64 ")\n",
           ROUNDS, p.allocated_bytes / KIB, p.luns, p.generation);
    TRY(lunsnap_close(array));
    contention();
    printf("threads: all checks passed\n");
    return 0;
}
