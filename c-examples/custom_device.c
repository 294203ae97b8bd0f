/*
 * custom_device.c: lunsnap over a host-supplied block device, as a firmware
 * simulator uses it.
 *
 * The host owns the storage: a malloc'd buffer of 512-byte blocks behind a volatile
 * write cache (hostdev.h). lunsnap reaches it only through lunsnap_device_callbacks
 * (read, write, flush, discard). The host injects faults the way a simulator
 * exercises firmware error paths:
 *
 *   1. a failing read and a failing data write surface as LUNSNAP_RESULT_DEVICE_IO
 *      and leave the array usable;
 *   2. a failing flush inside a commit surfaces as DEVICE_IO, after which the array
 *      refuses changes (LUNSNAP_RESULT_POISONED) but still reads; lunsnap_reopen
 *      recovers the last commit;
 *   3. a failing write inside a management operation's commit: the same, recovered
 *      this time with lunsnap_free + lunsnap_open_callbacks;
 *   4. power cuts between commits: the writes still in the volatile cache are
 *      dropped, kept, or torn sector by sector; reopening gives the last commit;
 *   5. power cuts inside commits: for a management operation and for a data write +
 *      flush, power is lost at the 1st, 2nd, ... write the operation issues, with the
 *      cache dropped, torn or kept; after each cut the array reopens at exactly the
 *      state before the operation, or, once the commit point has passed (the first
 *      copy of the new superblock written and flushed: only its second copy was
 *      left to write), at exactly the state after it, and lunsnap_check finds
 *      nothing wrong;
 *   6. discard: the device calls of a LUN's delete, then of the lunsnap_reclaim that
 *      frees its mapping (a delete only queues it), are traced in order: the delete
 *      discards nothing; in the reclaim the discard callback comes only after the
 *      commit's last flush, in whole extents, once for each extent the LUN held (each
 *      block still holding the LUN's data when it is released), and a power cut right
 *      after it loses nothing committed.
 *
 * Every step verifies the LUNs' contents sector by sector. Exit status 1 on any
 * mismatch.
 */

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "hostdev.h"

#define DEV_BLOCK 512u
#define DEV_BLOCKS 16384u /* 8 MiB */
#define LUN_SIZE (256 * KIB)
#define MAX_LUNS 16u

static hostdev dev;
static uint8_t want_buf[LUN_SIZE], got_buf[LUN_SIZE];

/* What each LUN should hold: the version of each sector (0: never written) of the
 * pattern of LUN source[lun] (a copy holds its parent's pattern). */
static uint32_t versions[MAX_LUNS][LUN_SIZE / SECTOR];
static uint32_t source[MAX_LUNS] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* ---- a trace of the device calls (step 6) -------------------------------------------- */

typedef struct {
    char kind;        /* 'w' write, 'f' flush, 'd' discard */
    uint64_t lba, count; /* blocks */
    uint64_t pending; /* blocks written but not yet flushed when the call came */
} device_call;

#define TRACE_MAX 4096
static device_call trace[TRACE_MAX];
static size_t ntrace;
static bool tracing;
/* What the discards must release: data of LUN `trace_lun`, in whole extents of
 * `trace_bpe` blocks; `released[x]` counts the discards of its logical extent x. */
static uint32_t trace_lun;
static uint64_t trace_bpe;
static uint64_t trace_bad_blocks;
static unsigned released[LUN_SIZE / (16 * KIB)];

static void trace_call(char kind, uint64_t lba, uint64_t count) {
    if (tracing) {
        ENSURE(ntrace < TRACE_MAX, "the trace is full");
        device_call c = {kind, lba, count, dev.npending};
        trace[ntrace++] = c;
    }
}

/* Step 5: where a commit stands. The first copies of the two superblock slots are
 * the device's first two 4 KiB pages (docs/FORMAT.md); a commit is durable once the
 * new superblock's first copy is written and flushed (its second copy comes after). */
#define SUPERBLOCK_FIRST_COPIES_END (2 * 4096 / DEV_BLOCK)
static bool watching_commit;
static enum { NO_SUPERBLOCK, SUPERBLOCK_WRITTEN, COMMITTED } commit_point;

static int32_t traced_write(void *ctx, uint64_t lba, const uint8_t *buf, size_t len) {
    trace_call('w', lba, len / DEV_BLOCK);
    int32_t r = hostdev_write(ctx, lba, buf, len);
    if (watching_commit && r == 0 && lba < SUPERBLOCK_FIRST_COPIES_END && commit_point == NO_SUPERBLOCK) {
        commit_point = SUPERBLOCK_WRITTEN;
    }
    return r;
}

static int32_t traced_flush(void *ctx) {
    trace_call('f', 0, 0);
    int32_t r = hostdev_flush(ctx);
    if (watching_commit && r == 0 && commit_point == SUPERBLOCK_WRITTEN) {
        commit_point = COMMITTED;
    }
    return r;
}

static int32_t traced_discard(void *ctx, uint64_t lba, uint64_t count) {
    trace_call('d', lba, count);
    if (tracing) {
        /* Each extent released must start at the start of one of the LUN's logical extents
         * and hold that extent's sectors, in order. */
        uint64_t first = 0;
        for (uint64_t k = 0; k < count && lba + k < dev.block_count; k++) {
            uint64_t b = lba + k;
            const uint8_t *blk = (dev.dirty[b] ? dev.cache : dev.durable) + (size_t)b * DEV_BLOCK;
            uint32_t hdr[4];
            memcpy(hdr, blk, sizeof hdr);
            uint64_t sector = hdr[3];
            if (k % trace_bpe == 0) {
                first = sector;
                if (sector % trace_bpe == 0 && sector / trace_bpe < sizeof released / sizeof released[0]) {
                    released[sector / trace_bpe]++;
                } else {
                    trace_bad_blocks++;
                    continue;
                }
            }
            if (sector != first + k % trace_bpe || sector_version(blk, trace_lun, sector) <= 0) {
                trace_bad_blocks++;
            }
        }
    }
    return hostdev_discard(ctx, lba, count);
}

/* The trace as runs of calls, e.g. "w x2, f, w, f, d (512 blocks)". */
static void describe_trace(char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ntrace && used < cap;) {
        size_t j = i;
        uint64_t blocks = 0;
        while (j < ntrace && trace[j].kind == trace[i].kind) {
            blocks += trace[j].count;
            j++;
        }
        const char *sep = i ? ", " : "";
        if (trace[i].kind == 'f') {
            used += (size_t)snprintf(out + used, cap - used, "%sflush%s", sep, j - i > 1 ? " (several)" : "");
        } else {
            used += (size_t)snprintf(out + used, cap - used, "%s%zu %s%s (%" PRIu64 " blocks)", sep, j - i,
                                     trace[i].kind == 'w' ? "write" : "discard", j - i > 1 ? "s" : "", blocks);
        }
        i = j;
    }
}

static void stats(const char *what) {
    printf("    device: %" PRIu64 " reads, %" PRIu64 " writes, %" PRIu64 " flushes, %" PRIu64 " discards, %" PRIu64
           " injected faults, %" PRIu64 " blocks in the volatile cache%s%s\n",
           dev.reads, dev.writes, dev.flushes, dev.discards, dev.injected, dev.npending, *what ? "; " : "", what);
}

/* Writes version `v` over sectors [first, first + count) of `lun` (no flush). */
static lunsnap_result write_version(lunsnap_array *a, uint32_t lun, uint64_t first, uint64_t count, uint32_t v) {
    size_t len = (size_t)(count * SECTOR);
    fill(want_buf, len, lun, v, first * SECTOR);
    return lunsnap_write(a, lun, first * SECTOR, want_buf, len);
}

static void note_version(uint32_t lun, uint64_t first, uint64_t count, uint32_t v) {
    for (uint64_t s = first; s < first + count; s++) {
        versions[lun][s] = v;
    }
}

/* The whole of `lun` must read as `versions[lun]`. */
static void verify_lun(lunsnap_array *a, uint32_t lun, const char *when) {
    TRY(lunsnap_read(a, lun, 0, got_buf, LUN_SIZE));
    for (uint64_t s = 0; s < LUN_SIZE / SECTOR; s++) {
        int64_t v = sector_version(got_buf + s * SECTOR, source[lun], s);
        ENSURE(v == (int64_t)versions[lun][s], "%s: LUN %u sector %" PRIu64 " holds version %" PRId64
               ", expected %u", when, lun, s, v, versions[lun][s]);
    }
}

/* The array must hold exactly the LUNs listed (ascending), each with its contents. */
static void verify_state(lunsnap_array *a, const uint32_t *luns, size_t n, const char *when) {
    uint32_t got[MAX_LUNS];
    size_t count = 0;
    TRY(lunsnap_luns(a, got, MAX_LUNS, &count));
    ENSURE(count == n, "%s: %zu LUNs, expected %zu", when, count, n);
    for (size_t i = 0; i < n; i++) {
        ENSURE(got[i] == luns[i], "%s: LUN #%zu is %u, expected %u", when, i, got[i], luns[i]);
        verify_lun(a, luns[i], when);
    }
}

static void verify_clean(lunsnap_array *a, const char *when) {
    size_t violations = 0;
    TRY(lunsnap_check(a, &violations));
    for (size_t i = 0; i < violations; i++) {
        char msg[256];
        size_t len = 0;
        TRY(lunsnap_check_message(a, i, msg, sizeof msg, &len));
        fprintf(stderr, "  violation: %s\n", msg);
    }
    ENSURE(violations == 0, "%s: lunsnap_check found %zu violations", when, violations);
}

static const char *cut_name(hostdev_cut m) {
    return m == HOSTDEV_CUT_DROP_ALL ? "cache dropped" : m == HOSTDEV_CUT_KEEP_ALL ? "cache kept" : "cache torn";
}

/* An operation, the LUNs before and after it, and what it does to their contents
 * (`apply` updates versions[]). */
typedef lunsnap_result (*operation)(lunsnap_array *a);
typedef struct {
    operation op;
    const char *name;
    const uint32_t *before;
    size_t nbefore;
    const uint32_t *after;
    size_t nafter;
    void (*apply)(void);
} sweep_case;

/* Cuts power at the 1st, 2nd, ... device write of the operation until it completes
 * without reaching the cut; after each cut, reopens and requires the state before it,
 * or the state after it when the cut came past its commit point (the operation then
 * reports DEVICE_IO, but its commit is durable: the sweep ends there). Returns the
 * number of cuts. */
static unsigned sweep(lunsnap_array *a, const sweep_case *c) {
    static const hostdev_cut modes[] = {HOSTDEV_CUT_DROP_ALL, HOSTDEV_CUT_TORN, HOSTDEV_CUT_KEEP_ALL};
    unsigned cuts = 0, committed = 0;
    unsigned by_mode[3] = {0, 0, 0};
    for (uint64_t n = 1;; n++) {
        size_t m = (size_t)(n % 3);
        dev.cut_mode = modes[m];
        dev.cut_at_write = n;
        commit_point = NO_SUPERBLOCK;
        watching_commit = true;
        lunsnap_result r = c->op(a);
        watching_commit = false;
        if (dev.powered) {
            /* The operation issued fewer than n writes: it completed. */
            ENSURE(r == LUNSNAP_RESULT_OK, "%s without a cut: %s", c->name, lunsnap_strerror(r));
            ENSURE(commit_point == COMMITTED, "%s completed without a commit", c->name);
            dev.cut_at_write = 0;
            c->apply();
            break;
        }
        EXPECT_CODE(r, LUNSNAP_RESULT_DEVICE_IO);
        cuts++;
        by_mode[m]++;
        hostdev_power_on(&dev);
        TRY(lunsnap_reopen(a));
        char when[128];
        bool durable = commit_point == COMMITTED;
        snprintf(when, sizeof when, "%s, power cut at write %" PRIu64 " (%s, %s the commit point)", c->name, n,
                 cut_name(modes[m]), durable ? "after" : "before");
        if (durable) {
            c->apply();
            verify_state(a, c->after, c->nafter, when);
            verify_clean(a, when);
            committed++;
            break;
        }
        verify_state(a, c->before, c->nbefore, when);
        verify_clean(a, when);
    }
    printf("    %s: power cut at each of its %u writes (%u with the cache dropped, %u torn, %u kept): "
           "each time the array reopened at the state before, and check() was clean%s\n",
           c->name, cuts, by_mode[0], by_mode[1], by_mode[2],
           committed ? "; but at the last (its superblock's second copy, after the commit point) at the state "
                       "after, the commit durable though the call failed"
                     : "");
    return cuts;
}

static lunsnap_result op_create_copy(lunsnap_array *a) {
    return lunsnap_create_copy(a, 1, 3, true);
}

static lunsnap_result op_restore(lunsnap_array *a) {
    return lunsnap_restore(a, 3);
}

static lunsnap_result op_delete(lunsnap_array *a) {
    return lunsnap_delete(a, 3, false);
}

static lunsnap_result op_write_flush(lunsnap_array *a) {
    /* 64 sectors over two extents of LUN 2, version 9, then flush (a commit). */
    lunsnap_result r = write_version(a, 2, 24, 64, 9);
    if (r != LUNSNAP_RESULT_OK) {
        return r;
    }
    return lunsnap_flush(a);
}

/* What each operation does to the contents. */
static void after_create_copy(void) {
    memcpy(versions[3], versions[1], sizeof versions[1]); /* copy 3 := LUN 1's image */
}

static void after_restore(void) {
    memcpy(versions[1], versions[3], sizeof versions[1]); /* LUN 1 := copy 3 */
}

static void after_delete(void) {
}

static void after_write_flush(void) {
    note_version(2, 24, 64, 9);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("custom_device: lunsnap over a host-supplied block device with injected faults\n");
    ENSURE(hostdev_init(&dev, DEV_BLOCK, DEV_BLOCKS), "out of memory");
    lunsnap_device_callbacks cb = hostdev_callbacks(&dev);
    cb.write = traced_write; /* the same callbacks, traced in step 6 */
    cb.flush = traced_flush;
    cb.discard = traced_discard;
    lunsnap_format_options fo;
    TRY(lunsnap_format_options_init(&fo, sizeof fo));
    fo.extent_size = 16 * KIB;
    fo.max_luns = MAX_LUNS;
    memcpy(fo.array_id, "firmware-sim-001", 16);
    printf("device: %u blocks of %u bytes in a malloc'd buffer, behind a volatile write cache\n", DEV_BLOCKS,
           DEV_BLOCK);

    /* ---- 0. format and load ------------------------------------------------- */
    printf("0. format over the callbacks, create LUNs 1 and 2 (%" PRIu64 " KiB each), write, flush\n",
           LUN_SIZE / KIB);
    lunsnap_array *a = NULL;
    dev.fail_write_at = 3;
    EXPECT_CODE(lunsnap_format_callbacks(&cb, &fo, &a), LUNSNAP_RESULT_DEVICE_IO);
    printf("    format with the 3rd write failing -> DEVICE_IO (no handle)\n");
    hostdev_heal(&dev);
    ENSURE(a == NULL, "a failed format returned a handle");
    TRY(lunsnap_format_callbacks(&cb, &fo, &a));
    TRY(lunsnap_create_lun(a, 1, LUN_SIZE));
    TRY(lunsnap_create_lun(a, 2, LUN_SIZE));
    TRY(write_version(a, 1, 0, LUN_SIZE / SECTOR, 1));
    note_version(1, 0, LUN_SIZE / SECTOR, 1);
    TRY(write_version(a, 2, 0, 128, 1));
    note_version(2, 0, 128, 1);
    TRY(lunsnap_flush(a));
    static const uint32_t two[] = {1, 2};
    verify_state(a, two, 2, "after load");
    stats("everything flushed");

    /* ---- 1. failing read, failing data write ----------------------------------- */
    printf("1. a failing read and a failing data write\n");
    dev.fail_read_at = 1;
    EXPECT_CODE(lunsnap_read(a, 1, 0, got_buf, 4096), LUNSNAP_RESULT_DEVICE_IO);
    verify_lun(a, 1, "after a failed read");
    printf("    read with the device's next read failing -> DEVICE_IO; the retry reads the data\n");
    dev.fail_write_at = 1;
    EXPECT_CODE(write_version(a, 1, 8, 8, 2), LUNSNAP_RESULT_DEVICE_IO);
    verify_lun(a, 1, "after a failed write");
    TRY(write_version(a, 1, 8, 8, 2));
    note_version(1, 8, 8, 2);
    TRY(lunsnap_flush(a));
    verify_lun(a, 1, "after the rewrite");
    printf("    write with the device's next write failing -> DEVICE_IO; the LUN kept its data, the "
           "array stayed usable: the retry and a flush succeeded\n");
    stats("");

    /* ---- 2. failing flush inside a commit: POISONED, lunsnap_reopen -------------- */
    printf("2. a failing flush inside a commit\n");
    TRY(write_version(a, 1, 0, 64, 3)); /* not committed: lost at the reopen */
    dev.fail_flush_at = 1;
    dev.fail_code = -121; /* -EREMOTEIO: the callback says why, and the message carries it */
    EXPECT_CODE(lunsnap_flush(a), LUNSNAP_RESULT_DEVICE_IO);
    printf("    lunsnap_flush with the device's flush failing -> DEVICE_IO: \"%s\"\n", last_error());
    ENSURE(strstr(last_error(), "the callback returned -121") != NULL, "the message lacks the callback's errno");
    dev.fail_code = 0;
    bool poisoned = false;
    TRY(lunsnap_is_poisoned(a, &poisoned));
    ENSURE(poisoned, "a failed commit did not poison the handle");
    EXPECT_CODE(write_version(a, 2, 0, 8, 3), LUNSNAP_RESULT_POISONED);
    EXPECT_CODE(lunsnap_create_lun(a, 4, LUN_SIZE), LUNSNAP_RESULT_POISONED);
    EXPECT_CODE(lunsnap_flush(a), LUNSNAP_RESULT_POISONED);
    TRY(lunsnap_read(a, 2, 0, got_buf, 4096));
    printf("    then write, create_lun and flush -> POISONED (%s); reads still work\n",
           lunsnap_strerror(LUNSNAP_RESULT_POISONED));
    TRY(lunsnap_reopen(a));
    TRY(lunsnap_is_poisoned(a, &poisoned));
    ENSURE(!poisoned, "still poisoned after lunsnap_reopen");
    verify_state(a, two, 2, "after reopen");
    verify_clean(a, "after reopen");
    printf("    lunsnap_reopen -> OK: the last commit is back (the uncommitted write is gone), check clean\n");
    stats("");

    /* ---- 3. failing write inside a management commit: free + open_callbacks ----- */
    printf("3. a failing write inside create_copy's commit\n");
    dev.fail_write_at = 2;
    EXPECT_CODE(lunsnap_create_copy(a, 1, 3, true), LUNSNAP_RESULT_DEVICE_IO);
    EXPECT_CODE(lunsnap_create_lun(a, 4, LUN_SIZE), LUNSNAP_RESULT_POISONED);
    printf("    create_copy(1, 3) with the 2nd write failing -> DEVICE_IO; create_lun -> POISONED\n");
    lunsnap_free(a);
    a = NULL;
    lunsnap_open_options oo;
    TRY(lunsnap_open_options_init(&oo, sizeof oo));
    oo.cache_bytes = 256 * KIB;
    TRY(lunsnap_open_callbacks(&cb, &oo, &a));
    verify_state(a, two, 2, "after free + open_callbacks");
    TRY(lunsnap_create_copy(a, 1, 3, true));
    source[3] = 1; /* copy 3 holds LUN 1's image: its sectors carry LUN 1's pattern */
    memcpy(versions[3], versions[1], sizeof versions[1]);
    static const uint32_t three[] = {1, 2, 3};
    verify_state(a, three, 3, "after the retried create_copy");
    TRY(lunsnap_delete(a, 3, false));
    printf("    lunsnap_free + lunsnap_open_callbacks -> the last commit (LUNs 1 and 2, data verified); "
           "the retried create_copy works\n");
    stats("");

    /* ---- 4. power cuts between commits ---------------------------------------- */
    printf("4. power cuts with unflushed writes in the volatile cache\n");
    static const hostdev_cut modes[] = {HOSTDEV_CUT_DROP_ALL, HOSTDEV_CUT_TORN, HOSTDEV_CUT_KEEP_ALL};
    for (size_t m = 0; m < 3; m++) {
        TRY(write_version(a, 1, 0, LUN_SIZE / SECTOR, 10 + (uint32_t)m));
        TRY(write_version(a, 2, 100, 50, 10 + (uint32_t)m));
        uint64_t pending = dev.npending;
        hostdev_power_cut(&dev, modes[m]);
        hostdev_power_on(&dev);
        TRY(lunsnap_reopen(a));
        verify_state(a, two, 2, cut_name(modes[m]));
        verify_clean(a, cut_name(modes[m]));
        printf("    wrote LUN 1 whole and 50 sectors of LUN 2 without flush (%" PRIu64
               " blocks pending), cut power (%s), reopened: the last commit, exactly\n",
               pending, cut_name(modes[m]));
    }
    /* And what was flushed survives a cut. */
    TRY(write_version(a, 2, 100, 50, 20));
    note_version(2, 100, 50, 20);
    TRY(lunsnap_flush(a));
    hostdev_power_cut(&dev, HOSTDEV_CUT_DROP_ALL);
    hostdev_power_on(&dev);
    TRY(lunsnap_reopen(a));
    verify_state(a, two, 2, "flushed, then cut");
    printf("    wrote 50 sectors of LUN 2 and flushed, cut power: the new data is there\n");

    /* ---- 5. power cuts inside commits ------------------------------------------- */
    printf("5. power cuts at every write of an operation\n");
    const sweep_case create_copy = {op_create_copy, "create_copy(1, 3, attached)", two, 2, three, 3,
                                    after_create_copy};
    sweep(a, &create_copy);
    verify_state(a, three, 3, "after create_copy");
    /* LUN 1 moves on; copy 3 keeps the old image. */
    TRY(write_version(a, 1, 0, 200, 30));
    note_version(1, 0, 200, 30);
    TRY(lunsnap_flush(a));
    verify_state(a, three, 3, "LUN 1 changed");
    const sweep_case restore = {op_restore, "restore(3) (LUN 1 := copy 3)", three, 3, three, 3, after_restore};
    sweep(a, &restore);
    verify_state(a, three, 3, "after restore");
    const sweep_case del = {op_delete, "delete(3)", three, 3, two, 2, after_delete};
    sweep(a, &del);
    verify_state(a, two, 2, "after delete");
    const sweep_case write_flush = {op_write_flush, "write 32 KiB to LUN 2 + flush", two, 2, two, 2,
                                    after_write_flush};
    sweep(a, &write_flush);
    verify_state(a, two, 2, "after the write sweep");

    /* ---- 6. discard after the commit ---------------------------------------------------- */
    printf("6. discard: the extents a delete frees are released after the commit that frees them is durable\n");
    TRY(lunsnap_create_lun(a, 4, LUN_SIZE));
    TRY(write_version(a, 4, 0, LUN_SIZE / SECTOR, 1));
    TRY(lunsnap_flush(a));
    trace_lun = 4;
    trace_bpe = fo.extent_size / DEV_BLOCK;
    ntrace = 0;
    tracing = true;
    TRY(lunsnap_delete(a, 4, false));
    tracing = false;
    char calls[256];
    describe_trace(calls, sizeof calls);
    for (size_t i = 0; i < ntrace; i++) {
        ENSURE(trace[i].kind != 'd', "delete(4) called discard before its mapping was reclaimed: %s", calls);
    }
    uint64_t waiting = 0;
    TRY(lunsnap_pending_bytes(a, &waiting));
    ENSURE(waiting == LUN_SIZE, "after delete(4): %" PRIu64 " bytes wait to be freed, LUN 4 held %" PRIu64, waiting,
           (uint64_t)LUN_SIZE);
    printf("    delete(4): %s, no discard: LUN 4's %" PRIu64 " KiB wait in the free queue\n", calls, waiting / KIB);
    lunsnap_reclaim_stats rs = {.struct_size = sizeof rs};
    ntrace = 0;
    tracing = true;
    TRY(lunsnap_reclaim(a, LUNSNAP_RECLAIM_PER_FLUSH, &rs));
    tracing = false;
    ENSURE(rs.remaining == 0 && rs.extent_refs == LUN_SIZE / fo.extent_size,
           "reclaim: %" PRIu64 " extent references released, %" PRIu64 " queue entries left", rs.extent_refs,
           rs.remaining);
    size_t first_discard = ntrace, last_write = ntrace, last_flush = ntrace;
    uint64_t discarded = 0;
    for (size_t i = 0; i < ntrace; i++) {
        if (trace[i].kind == 'd') {
            first_discard = first_discard == ntrace ? i : first_discard;
            discarded += trace[i].count;
            ENSURE(trace[i].count % trace_bpe == 0, "discard of %" PRIu64 " blocks: not whole extents of %" PRIu64,
                   trace[i].count, trace_bpe);
            ENSURE(trace[i].pending == 0, "discard with %" PRIu64 " written blocks not yet flushed",
                   trace[i].pending);
        } else if (first_discard == ntrace) {
            if (trace[i].kind == 'w') {
                last_write = i;
            } else {
                last_flush = i;
            }
        }
    }
    describe_trace(calls, sizeof calls);
    ENSURE(first_discard < ntrace, "the reclaim of delete(4) never called discard: %s", calls);
    ENSURE(last_write < ntrace && last_flush < ntrace && last_write < last_flush && last_flush + 1 == first_discard,
           "the reclaim of delete(4): a discard before the commit's final flush: %s", calls);
    ENSURE(discarded == LUN_SIZE / DEV_BLOCK && trace_bad_blocks == 0,
           "the reclaim of delete(4) discarded %" PRIu64 " blocks (LUN 4 held %" PRIu64 "), %" PRIu64
           " of them not LUN 4's data",
           discarded, LUN_SIZE / DEV_BLOCK, trace_bad_blocks);
    for (size_t x = 0; x < sizeof released / sizeof released[0]; x++) {
        ENSURE(released[x] == 1, "LUN 4's extent %zu was discarded %u times", x, released[x]);
    }
    printf("    lunsnap_reclaim: %s; the discards came after the final flush with nothing pending, in whole "
           "extents of %" PRIu64 " blocks, each of LUN 4's %zu extents once\n",
           calls, trace_bpe, sizeof released / sizeof released[0]);
    verify_state(a, two, 2, "after the discards");
    hostdev_power_cut(&dev, HOSTDEV_CUT_KEEP_ALL); /* the zeroed blocks reach the medium */
    hostdev_power_on(&dev);
    TRY(lunsnap_reopen(a));
    verify_state(a, two, 2, "after the discards, a power cut and a reopen");
    verify_clean(a, "after the discards");
    printf("    power cut right after (the discarded blocks' zeros kept): the array reopens with LUNs 1 and 2 "
           "intact, check clean\n");

    /* ---- the end ---------------------------------------------------------------------- */
    TRY(lunsnap_close(a));
    a = NULL;
    hostdev_power_cut(&dev, HOSTDEV_CUT_DROP_ALL);
    hostdev_power_on(&dev);
    TRY(lunsnap_open_callbacks(&cb, NULL, &a));
    verify_state(a, two, 2, "after close, cut and open");
    verify_clean(a, "at the end");
    TRY(lunsnap_close(a));
    stats("closed");
    printf("custom_device: all checks passed (%" PRIu64 " faults injected)\n", dev.injected);
    hostdev_destroy(&dev);
    return 0;
}
