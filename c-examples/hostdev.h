/*
 * hostdev.h: a host-supplied block device for lunsnap_device_callbacks, the way a
 * firmware simulator would write one: a malloc'd C buffer of blocks, a volatile
 * write cache in front of it (writes land in the cache; only a successful flush
 * makes them durable; a power cut drops or tears what is still in the cache), and
 * fault injection (fail the Nth read, write, flush or discard; fail every one; or
 * lose power at the Nth write, after which every call fails until power returns).
 *
 * Header-only (static inline functions) so that each example stays one program;
 * shared by custom_device.c and test_suite.c.
 */

#ifndef HOSTDEV_H
#define HOSTDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lunsnap.h"

/* What a callback returns on failure by default (any non-zero value means failure;
 * a negative errno also says why, in the failed call's message). */
#define HOSTDEV_EIO (-5)

/* What a power cut does to the writes still in the volatile cache. */
typedef enum {
    HOSTDEV_CUT_DROP_ALL, /* none of them reach the medium */
    HOSTDEV_CUT_KEEP_ALL, /* all of them do (the cache was written back in time) */
    HOSTDEV_CUT_TORN      /* each 512-byte sector of each one independently, at random */
} hostdev_cut;

typedef struct {
    uint32_t block_size;
    uint64_t block_count;
    uint8_t *durable;   /* the medium: what survives a power cut */
    uint8_t *cache;     /* the volatile write cache: block contents not yet durable */
    uint8_t *dirty;     /* per block: 1 when `cache` holds a pending write for it */
    uint64_t *pending;  /* the dirty blocks, in first-written order */
    uint64_t npending;
    bool write_through; /* true: no volatile cache (writes are durable at once) */

    /* Statistics. */
    uint64_t reads, writes, flushes, discards;
    uint64_t bytes_read, bytes_written;

    /* Fault injection. `*_at` = N > 0: the Nth call from now fails (once), then
     * the counter is off again. `fail_*`: every call fails while set. */
    uint64_t fail_read_at, fail_write_at, fail_flush_at, fail_discard_at;
    bool fail_reads, fail_writes, fail_flushes, fail_discards;
    uint64_t injected; /* how many calls failed on purpose */
    int32_t fail_code; /* what an injected fault returns (0: HOSTDEV_EIO) */

    /* Power: `cut_at_write` = N > 0 loses power at the Nth write from now (that
     * write is lost with the cache); while `powered` is false every call fails. */
    uint64_t cut_at_write;
    hostdev_cut cut_mode;
    bool powered;
    uint64_t rng; /* xorshift state for torn writes */
} hostdev;

static inline uint64_t hostdev_rand(hostdev *d) {
    uint64_t x = d->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    d->rng = x;
    return x;
}

/* Allocates a zeroed device; false if out of memory. */
static inline bool hostdev_init(hostdev *d, uint32_t block_size, uint64_t block_count) {
    memset(d, 0, sizeof *d);
    d->block_size = block_size;
    d->block_count = block_count;
    size_t bytes = (size_t)block_size * (size_t)block_count;
    d->durable = calloc(1, bytes);
    d->cache = malloc(bytes);
    d->dirty = calloc(1, (size_t)block_count);
    d->pending = malloc(sizeof *d->pending * (size_t)block_count);
    d->powered = true;
    d->rng = 0x9e3779b97f4a7c15ull;
    d->cut_mode = HOSTDEV_CUT_DROP_ALL;
    return d->durable && d->cache && d->dirty && d->pending;
}

static inline void hostdev_destroy(hostdev *d) {
    free(d->durable);
    free(d->cache);
    free(d->dirty);
    free(d->pending);
    memset(d, 0, sizeof *d);
}

/* What an injected fault returns. */
static inline int32_t hostdev_fault(hostdev *d) {
    d->injected++;
    return d->fail_code != 0 ? d->fail_code : HOSTDEV_EIO;
}

/* Counts down a one-shot fault; true when this call must fail. */
static inline bool hostdev_shot(uint64_t *at) {
    if (*at == 0) {
        return false;
    }
    if (--*at == 0) {
        return true;
    }
    return false;
}

static inline bool hostdev_range_ok(const hostdev *d, uint64_t lba, size_t len) {
    if (len % d->block_size != 0 || lba > d->block_count) {
        return false;
    }
    return len / d->block_size <= d->block_count - lba;
}

static inline void hostdev_write_back(hostdev *d) {
    for (uint64_t i = 0; i < d->npending; i++) {
        uint64_t b = d->pending[i];
        size_t off = (size_t)b * d->block_size;
        memcpy(d->durable + off, d->cache + off, d->block_size);
        d->dirty[b] = 0;
    }
    d->npending = 0;
}

/* A power cut: the cache is lost (all of it, none of it, or torn sectors), and the
 * device stays off until hostdev_power_on. */
static inline void hostdev_power_cut(hostdev *d, hostdev_cut mode) {
    for (uint64_t i = 0; i < d->npending; i++) {
        uint64_t b = d->pending[i];
        size_t off = (size_t)b * d->block_size;
        for (size_t s = 0; s < d->block_size; s += 512) {
            bool keep = mode == HOSTDEV_CUT_KEEP_ALL ||
                        (mode == HOSTDEV_CUT_TORN && (hostdev_rand(d) & 1));
            if (keep) {
                memcpy(d->durable + off + s, d->cache + off + s, 512);
            }
        }
        d->dirty[b] = 0;
    }
    d->npending = 0;
    d->powered = false;
}

static inline void hostdev_power_on(hostdev *d) {
    d->powered = true;
    d->cut_at_write = 0;
}

/* Clears every injected fault. */
static inline void hostdev_heal(hostdev *d) {
    d->fail_read_at = d->fail_write_at = d->fail_flush_at = d->fail_discard_at = 0;
    d->fail_reads = d->fail_writes = d->fail_flushes = d->fail_discards = false;
    d->cut_at_write = 0;
    d->fail_code = 0;
}

/* ---- the callbacks ---------------------------------------------------------- */

static inline int32_t hostdev_read(void *ctx, uint64_t lba, uint8_t *buf, size_t len) {
    hostdev *d = ctx;
    d->reads++;
    if (!d->powered || d->fail_reads || hostdev_shot(&d->fail_read_at)) {
        return hostdev_fault(d);
    }
    if (!hostdev_range_ok(d, lba, len)) {
        return HOSTDEV_EIO;
    }
    for (size_t done = 0; done < len; done += d->block_size) {
        uint64_t b = lba + done / d->block_size;
        const uint8_t *src = (d->dirty[b] ? d->cache : d->durable) + (size_t)b * d->block_size;
        memcpy(buf + done, src, d->block_size);
    }
    d->bytes_read += len;
    return 0;
}

static inline int32_t hostdev_write(void *ctx, uint64_t lba, const uint8_t *buf, size_t len) {
    hostdev *d = ctx;
    d->writes++;
    if (!d->powered) {
        return hostdev_fault(d);
    }
    if (hostdev_shot(&d->cut_at_write)) {
        hostdev_power_cut(d, d->cut_mode);
        return hostdev_fault(d);
    }
    if (d->fail_writes || hostdev_shot(&d->fail_write_at)) {
        return hostdev_fault(d);
    }
    if (!hostdev_range_ok(d, lba, len)) {
        return HOSTDEV_EIO;
    }
    for (size_t done = 0; done < len; done += d->block_size) {
        uint64_t b = lba + done / d->block_size;
        size_t off = (size_t)b * d->block_size;
        if (d->write_through) {
            memcpy(d->durable + off, buf + done, d->block_size);
            continue;
        }
        memcpy(d->cache + off, buf + done, d->block_size);
        if (!d->dirty[b]) {
            d->dirty[b] = 1;
            d->pending[d->npending++] = b;
        }
    }
    d->bytes_written += len;
    return 0;
}

static inline int32_t hostdev_flush(void *ctx) {
    hostdev *d = ctx;
    d->flushes++;
    if (!d->powered || d->fail_flushes || hostdev_shot(&d->fail_flush_at)) {
        return hostdev_fault(d);
    }
    hostdev_write_back(d);
    return 0;
}

/* Discard: the host may forget the blocks; this one zeroes them (in the volatile
 * cache, like a write: durable at the next flush). */
static inline int32_t hostdev_discard(void *ctx, uint64_t lba, uint64_t count) {
    hostdev *d = ctx;
    d->discards++;
    if (!d->powered || d->fail_discards || hostdev_shot(&d->fail_discard_at)) {
        return hostdev_fault(d);
    }
    if (lba > d->block_count || count > d->block_count - lba) {
        return HOSTDEV_EIO;
    }
    for (uint64_t b = lba; b < lba + count; b++) {
        size_t off = (size_t)b * d->block_size;
        memset(d->cache + off, 0, d->block_size);
        if (!d->dirty[b]) {
            d->dirty[b] = 1;
            d->pending[d->npending++] = b;
        }
    }
    return 0;
}

/* The callbacks struct for `d` (with discard). */
static inline lunsnap_device_callbacks hostdev_callbacks(hostdev *d) {
    lunsnap_device_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.struct_size = sizeof cb;
    cb.ctx = d;
    cb.block_size = d->block_size;
    cb.block_count = d->block_count;
    cb.read = hostdev_read;
    cb.write = hostdev_write;
    cb.flush = hostdev_flush;
    cb.discard = hostdev_discard;
    return cb;
}

#endif /* HOSTDEV_H */
