/*
 * test_suite.c: the C test suite of lunsnap's C ABI (include/lunsnap.h).
 *
 * Calls every exported function, with valid arguments and with every kind of bad
 * one: NULL for each pointer argument, forged, freed and double-freed handles,
 * out-of-range LUN numbers and offsets, misaligned lengths, offset + length
 * overflowing u64, zero lengths, bad options, a blank device, a callbacks struct
 * missing a required callback, and each host callback failing. It checks the
 * documented contract: the exact result code, out-parameters written only on
 * success, lunsnap_free(NULL) and double free harmless, static error messages, the
 * version string, and that the data read back is what was written. For map, diff,
 * write_zeroes and zero detection: the ranges reported (and that holes read as zeros),
 * the capacity/count convention, host security through the *_as forms; and, through a
 * recording host device, that the discard callback releases exactly the freed extents,
 * in whole extents, only once the commit that freed them is durable. For the C ABI of
 * issue 16: the full message of each failure (lunsnap_last_error_message: per handle, per
 * thread, which argument, which sizes and LUNs, a callback's errno), struct_size (refused
 * sizes, a prefix written and nothing past it, a bigger struct's unknown tail zeroed,
 * shorter inputs taking defaults), lunsnap_grants, lunsnap_get_lun_info_as,
 * lunsnap_is_poisoned, lunsnap_min_device_bytes, and BLOCK_SIZE_MISMATCH from the
 * callback and file openers; create_copies' documented order of checks. For the two
 * copies of the metadata: metadata_copies 1 and 2 (pool_info, the space each costs,
 * other values refused, the default for an older struct), on a host device whose
 * pages the suite damages itself: the second copies byte for byte the first ones,
 * reads right over damaged first copies (pending_heals, then healed_pages after the
 * next commit), lunsnap_scrub rewriting damaged second copies (its report, progress,
 * lunsnap_scrub_lost naming the pages a one-copy array lost), the newest superblock
 * damaged in both copies (LUNSNAP_RESULT_COMMIT_LOST naming the generations, then
 * allow_rollback, the rollback in pool_info and as a LUNSNAP_SEVERITY_NOTICE from
 * lunsnap_check, kept across lunsnap_reopen and a commit), also on an image file. For
 * repair: both copies of a mapping page damaged on a host device, lunsnap_repair_callbacks
 * (a dry run that writes nothing, then the repair: its report, lunsnap_repair_lost), the
 * lost range read as LUNSNAP_RESULT_LOST_DATA with the core's message (lunsnap_lost_ranges,
 * lun_info's lost_bytes, check's notices) until written; lunsnap_repair_file. For background
 * freeing: delete, detach, attach and restore queue what they drop (pool_info's
 * reclaim_queue, lunsnap_pending_bytes exact, sharing exact meanwhile), lunsnap_reclaim
 * (budget 0, budget 1 a node at a time, its stats, remaining, a short struct_size, bad
 * arguments, a failed commit poisoning the handle), the queue surviving a power cut and
 * a reopen, a committing flush working it off, a write that needs its space reclaiming
 * it synchronously, the discard callback called by the reclaim's commit; and
 * lunsnap_map_allocation (_as): the map without sharing.
 *
 * Prints one line per failed check, then, as its last line, "N passed, N failed";
 * the exit status is 1 if any check failed.
 */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lunsnap.h"

/* The header must define LUNSNAP_FEATURE_STD in a std build (it says so) unless the
 * host defines LUNSNAP_NO_STD. If it does not, the file-device prototypes are hidden:
 * record that as a failed check, and declare them here so they can still be tested. */
#if defined(LUNSNAP_NO_STD)
#define HEADER_STD 0
#elif defined(LUNSNAP_FEATURE_STD)
#define HEADER_STD 1
#else
#define HEADER_STD 2
#define LUNSNAP_FEATURE_STD 1
lunsnap_result lunsnap_format_file(const char *path, uint32_t block_size, uint64_t block_count,
                                   const lunsnap_format_options *opts, lunsnap_array **out);
lunsnap_result lunsnap_open_file(const char *path, uint32_t block_size,
                                 const lunsnap_open_options *opts, lunsnap_array **out);
lunsnap_result lunsnap_repair_file(const char *path, uint32_t block_size, const lunsnap_open_options *opts,
                                   uint8_t dry_run, lunsnap_repair_report *out);
#endif

#include "hostdev.h"

/* ---- the harness ------------------------------------------------------------ */

static unsigned passed, failed;
static const char *section = "";

static void check_at(bool ok, int line, const char *fmt, ...) {
    if (ok) {
        passed++;
        return;
    }
    failed++;
    printf("FAIL [%s] test_suite.c:%d: ", section, line);
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

#define CHECK(cond, ...) check_at((cond), __LINE__, __VA_ARGS__)

static void expect_at(lunsnap_result got, lunsnap_result want, const char *call, int line) {
    check_at(got == want, line, "%s: got %u (%s), want %u (%s)", call, (unsigned)got,
             lunsnap_strerror(got), (unsigned)want, lunsnap_strerror(want));
}

/* The call must return `want`. */
#define EXPECT(call, want) expect_at((call), (want), #call, __LINE__)
#define EXPECT_OK(call) expect_at((call), LUNSNAP_RESULT_OK, #call, __LINE__)

/* The message of the last failed call: on `a` (a handle), or of this thread (NULL). */
static const char *last_message(lunsnap_array *a) {
    static char buf[2048];
    size_t n = 0;
    lunsnap_result r = lunsnap_last_error_message(a, buf, sizeof buf, &n);
    if (r != LUNSNAP_RESULT_OK) {
        snprintf(buf, sizeof buf, "(lunsnap_last_error_message gave %u)", (unsigned)r);
    }
    return buf;
}

static bool last_message_has(lunsnap_array *a, const char *want) {
    return strstr(last_message(a), want) != NULL;
}

/* The call must return `want`, and the calling thread's message must contain `text`. */
#define EXPECT_MSG(call, want, text)                                                                  \
    do {                                                                                              \
        expect_at((call), (want), #call, __LINE__);                                                   \
        check_at(last_message_has(NULL, (text)), __LINE__, "%s: message \"%s\" lacks \"%s\"", #call, \
                 last_message(NULL), (text));                                                         \
    } while (0)

#define STR_(x) #x
#define STR(x) STR_(x)

/* Every result code the header defines. */
static const uint32_t CODES[] = {
    LUNSNAP_RESULT_OK,
    LUNSNAP_RESULT_NULL_POINTER,
    LUNSNAP_RESULT_INVALID_HANDLE,
    LUNSNAP_RESULT_INVALID_ARGUMENT,
    LUNSNAP_RESULT_INVALID_OPTIONS,
    LUNSNAP_RESULT_INVALID_PATH,
    LUNSNAP_RESULT_DEVICE_IO,
    LUNSNAP_RESULT_DEVICE_OUT_OF_RANGE,
    LUNSNAP_RESULT_DEVICE_NOT_CONNECTED,
    LUNSNAP_RESULT_DEVICE_OTHER,
    LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE,
    LUNSNAP_RESULT_DEVICE_TOO_SMALL,
    LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH,
    LUNSNAP_RESULT_COMMIT_LOST,
    LUNSNAP_RESULT_LOST_DATA,
    LUNSNAP_RESULT_NOT_FORMATTED,
    LUNSNAP_RESULT_NOT_AN_ARRAY,
    LUNSNAP_RESULT_UNSUPPORTED_VERSION,
    LUNSNAP_RESULT_INCOMPATIBLE_FEATURES,
    LUNSNAP_RESULT_CORRUPT,
    LUNSNAP_RESULT_POISONED,
    LUNSNAP_RESULT_METADATA_SPACE_EXHAUSTED,
    LUNSNAP_RESULT_DATA_SPACE_EXHAUSTED,
    LUNSNAP_RESULT_REFCOUNT_OVERFLOW,
    LUNSNAP_RESULT_LUN_OUT_OF_RANGE,
    LUNSNAP_RESULT_NO_SUCH_LUN,
    LUNSNAP_RESULT_LUN_EXISTS,
    LUNSNAP_RESULT_INVALID_LUN_SIZE,
    LUNSNAP_RESULT_NO_SPACE,
    LUNSNAP_RESULT_NOT_A_COPY,
    LUNSNAP_RESULT_DETACHED,
    LUNSNAP_RESULT_PARENT_GONE,
    LUNSNAP_RESULT_PARENT_DETACHED,
    LUNSNAP_RESULT_HAS_COPIES,
    LUNSNAP_RESULT_OUT_OF_RANGE,
    LUNSNAP_RESULT_MISALIGNED,
    LUNSNAP_RESULT_PANIC,
    LUNSNAP_RESULT_OUT_OF_MEMORY,
    LUNSNAP_RESULT_UNUSABLE,
    LUNSNAP_RESULT_NO_SUCH_HOST,
    LUNSNAP_RESULT_HOST_EXISTS,
    LUNSNAP_RESULT_NOT_GRANTED,
    LUNSNAP_RESULT_READ_ONLY_ACCESS,
    LUNSNAP_RESULT_OFFLINE,
    LUNSNAP_RESULT_TOO_MANY_HOSTS,
    LUNSNAP_RESULT_OTHER,
};
#define NCODES (sizeof CODES / sizeof CODES[0])

/* Small arrays: 8 MiB memory devices, 4 KiB extents, 16 LUNs. */
#define BS 4096u
#define BLOCKS 2048u
#define EXTENT 4096u
#define MAX_LUNS 16u
#define LUN_SIZE (256u * 1024u)

/* Options as lunsnap_*_options_init gives them. */
static lunsnap_format_options format_defaults(void) {
    lunsnap_format_options o;
    EXPECT_OK(lunsnap_format_options_init(&o, sizeof o));
    return o;
}

static lunsnap_open_options open_defaults(void) {
    lunsnap_open_options o;
    EXPECT_OK(lunsnap_open_options_init(&o, sizeof o));
    return o;
}

static lunsnap_format_options small_opts(void) {
    lunsnap_format_options o = format_defaults();
    o.extent_size = EXTENT;
    o.max_luns = MAX_LUNS;
    return o;
}

/* A fresh small memory array (NULL, with a failed check, if that fails). */
static lunsnap_array *new_array(int line) {
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    lunsnap_result r = lunsnap_format_mem(BS, BLOCKS, &o, &a);
    check_at(r == LUNSNAP_RESULT_OK && a != NULL, line, "lunsnap_format_mem: %s", lunsnap_strerror(r));
    return r == LUNSNAP_RESULT_OK ? a : NULL;
}

static void fill_bytes(uint8_t *p, size_t n, uint8_t seed) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(seed + i * 31u + (i >> 9));
    }
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != v) {
            return false;
        }
    }
    return true;
}

/* Works off the free queue with lunsnap_reclaim calls of `budget` until nothing waits
 * (each call must make progress, and say what remains as lunsnap_pool_info does);
 * returns the bytes of data that waited (lunsnap_pending_bytes before), which
 * allocated_bytes must have lost. */
static uint64_t reclaim_all_at(lunsnap_array *a, uint64_t budget, int line) {
    uint64_t pending = 0;
    lunsnap_pool_info before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
    lunsnap_result r = lunsnap_pending_bytes(a, &pending);
    check_at(r == LUNSNAP_RESULT_OK, line, "lunsnap_pending_bytes: %s", lunsnap_strerror(r));
    r = lunsnap_get_pool_info(a, &before);
    check_at(r == LUNSNAP_RESULT_OK, line, "lunsnap_get_pool_info: %s", lunsnap_strerror(r));
    lunsnap_reclaim_stats st = {.struct_size = sizeof st};
    unsigned calls = 0;
    const char *bad = NULL;
    do {
        r = lunsnap_reclaim(a, budget, &st);
        calls++;
        if (r != LUNSNAP_RESULT_OK) {
            bad = lunsnap_strerror(r);
        } else if (lunsnap_get_pool_info(a, &after) != LUNSNAP_RESULT_OK || after.reclaim_queue != st.remaining) {
            bad = "remaining is not the pool's reclaim_queue";
        } else if (st.remaining > 0 && (st.work == 0 || (budget > 0 && st.work < budget))) {
            bad = "a call stopped short of its budget with work remaining";
        } else if (calls > 100000) {
            bad = "no end";
        }
    } while (bad == NULL && st.remaining > 0);
    uint64_t left = 99;
    bool waiting = true;
    if (bad == NULL && (lunsnap_pending_bytes(a, &left) != LUNSNAP_RESULT_OK || left != 0 ||
                        lunsnap_reclaim_pending(a, &waiting) != LUNSNAP_RESULT_OK || waiting)) {
        bad = "pending bytes or reclaim_pending after the queue was worked off";
    }
    if (bad == NULL && after.allocated_bytes + pending != before.allocated_bytes) {
        bad = "allocated bytes did not drop by the pending bytes";
    }
    check_at(bad == NULL, line, "reclaim with budget %llu (%u calls; %llu bytes pending, allocated %llu -> %llu): %s",
             (unsigned long long)budget, calls, (unsigned long long)pending,
             (unsigned long long)before.allocated_bytes, (unsigned long long)after.allocated_bytes, bad ? bad : "");
    return pending;
}

#define RECLAIM_ALL(a) reclaim_all_at((a), LUNSNAP_RECLAIM_PER_FLUSH, __LINE__)

/* A pointer that is not a handle: the registry must reject it without touching it. */
static lunsnap_array *forged(void) {
    static uint64_t decoy[8];
    return (lunsnap_array *)(void *)decoy;
}

/* ---- version, messages, defaults ----------------------------------------------- */

static void test_version_and_messages(void) {
    section = "version";
    const char *v = lunsnap_version();
    const char *want = STR(LUNSNAP_VERSION_MAJOR) "." STR(LUNSNAP_VERSION_MINOR) "." STR(LUNSNAP_VERSION_PATCH);
    CHECK(v != NULL, "lunsnap_version() is NULL");
    CHECK(v != NULL && strcmp(v, want) == 0, "lunsnap_version() = \"%s\", header macros say \"%s\"",
          v ? v : "(null)", want);
    CHECK(lunsnap_version() == v, "lunsnap_version() is not one static string");

    section = "strerror";
    const char *unknown = lunsnap_strerror(12345);
    CHECK(unknown != NULL && unknown[0] != '\0', "lunsnap_strerror(12345) is NULL or empty");
    for (size_t i = 0; i < NCODES; i++) {
        const char *m = lunsnap_strerror(CODES[i]);
        CHECK(m != NULL && m[0] != '\0', "lunsnap_strerror(%u) is NULL or empty", CODES[i]);
        if (m == NULL) {
            continue;
        }
        CHECK(unknown == NULL || strcmp(m, unknown) != 0, "lunsnap_strerror(%u) is the unknown-code message",
              CODES[i]);
        CHECK(lunsnap_strerror(CODES[i]) == m, "lunsnap_strerror(%u) is not static", CODES[i]);
        for (size_t j = 0; j < i; j++) {
            const char *o = lunsnap_strerror(CODES[j]);
            CHECK(o == NULL || strcmp(m, o) != 0, "codes %u and %u share the message \"%s\"", CODES[i],
                  CODES[j], m);
        }
    }
    /* Codes the header does not define (between, after, and at the extremes). */
    static const uint32_t odd[] = {6, 9, 19, 29, 42, 49, 53, 59, 66, 98, 100, 1000, 0x7fffffffu, 0xffffffffu};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        bool known = false;
        for (size_t j = 0; j < NCODES; j++) {
            known = known || CODES[j] == odd[i];
        }
        const char *m = lunsnap_strerror(odd[i]);
        CHECK(!known, "code %u is both undefined and defined?", odd[i]);
        CHECK(m != NULL && m[0] != '\0', "lunsnap_strerror(%u) (unknown) is NULL or empty", odd[i]);
    }

    section = "defaults";
    lunsnap_format_options f = format_defaults();
    uint8_t zero_id[16] = {0};
    CHECK(f.extent_size == 16384, "default extent_size %u, want 16384", f.extent_size);
    CHECK(f.max_luns == 1024, "default max_luns %u, want 1024", f.max_luns);
    CHECK(f.cache_bytes == 4 * 1024 * 1024, "default cache_bytes %llu, want 4 MiB",
          (unsigned long long)f.cache_bytes);
    CHECK(memcmp(f.array_id, zero_id, 16) == 0, "default array_id not zero");
    lunsnap_open_options o = open_defaults();
    CHECK(o.cache_bytes == 4 * 1024 * 1024, "default open cache_bytes %llu, want 4 MiB",
          (unsigned long long)o.cache_bytes);
    CHECK(f.metadata_copies == 2, "default metadata_copies %u, want 2", f.metadata_copies);
    CHECK(o.allow_rollback == 0, "default allow_rollback %u, want 0", (unsigned)o.allow_rollback);
    CHECK(LUNSNAP_RESULT_COMMIT_LOST == 17, "LUNSNAP_RESULT_COMMIT_LOST is %u, its stable number is 17",
          (unsigned)LUNSNAP_RESULT_COMMIT_LOST);
    CHECK(LUNSNAP_SEVERITY_NOTICE < LUNSNAP_SEVERITY_LEAK && LUNSNAP_SEVERITY_LEAK < LUNSNAP_SEVERITY_DAMAGE &&
              LUNSNAP_SEVERITY_NOTICE != 0,
          "severities %u, %u, %u do not grow from 1", (unsigned)LUNSNAP_SEVERITY_NOTICE,
          (unsigned)LUNSNAP_SEVERITY_LEAK, (unsigned)LUNSNAP_SEVERITY_DAMAGE);

    section = "header";
    CHECK(HEADER_STD != 2,
          "include/lunsnap.h does not define LUNSNAP_FEATURE_STD in a std build, so "
          "lunsnap_format_file/lunsnap_open_file are hidden from C (ffi/cbindgen.toml: "
          "`after_includes` sits under [defines], so cbindgen never emits it)");
}

/* ---- formatting memory devices --------------------------------------------------- */

static void test_format_mem(void) {
    section = "format_mem";
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    lunsnap_array *const sentinel = forged();

    /* opts NULL = defaults (needs a larger device: 1024 LUNs' worth of metadata). */
    a = NULL;
    EXPECT_OK(lunsnap_format_mem(4096, 16384, NULL, &a));
    CHECK(a != NULL, "format_mem with NULL opts gave no handle");
    if (a) {
        lunsnap_pool_info p = {.struct_size = sizeof p};
        EXPECT_OK(lunsnap_get_pool_info(a, &p));
        CHECK(p.extent_size == 16384 && p.max_luns == 1024, "NULL opts: extent %u, max_luns %u", p.extent_size,
              p.max_luns);
        lunsnap_free(a);
    }

    EXPECT(lunsnap_format_mem(BS, BLOCKS, &o, NULL), LUNSNAP_RESULT_NULL_POINTER);

    /* Block sizes that are not a power of two from 512 to 4096. */
    static const uint32_t bad_bs[] = {0, 1, 256, 1000, 3000, 8192, 65536, 0x80000000u};
    bool all_unsupported = true;
    for (size_t i = 0; i < sizeof bad_bs / sizeof bad_bs[0]; i++) {
        a = sentinel;
        lunsnap_result r = lunsnap_format_mem(bad_bs[i], BLOCKS, &o, &a);
        CHECK(r != LUNSNAP_RESULT_OK, "format_mem(block_size %u) succeeded", bad_bs[i]);
        CHECK(a == sentinel, "format_mem(block_size %u) failed but wrote *out", bad_bs[i]);
        if (r != LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE) {
            all_unsupported = false;
            printf("  note: format_mem(block_size %u) = %u (%s)\n", bad_bs[i], (unsigned)r, lunsnap_strerror(r));
        }
    }
    CHECK(all_unsupported,
          "format_mem with a bad block size must give LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE "
          "(as format_callbacks does), see the notes above");

    a = sentinel;
    lunsnap_result r = lunsnap_format_mem(BS, 0, &o, &a);
    CHECK(r == LUNSNAP_RESULT_DEVICE_TOO_SMALL,
          "format_mem(block_count 0) = %u (%s), want DEVICE_TOO_SMALL (as format_callbacks gives)", (unsigned)r,
          lunsnap_strerror(r));
    CHECK(a == sentinel, "format_mem(block_count 0) wrote *out");

    /* block_size * block_count overflows u64; and a device too small. */
    a = sentinel;
    r = lunsnap_format_mem(4096, UINT64_MAX, &o, &a);
    CHECK(r != LUNSNAP_RESULT_OK && a == sentinel, "format_mem(4096, UINT64_MAX) = %u", (unsigned)r);
    a = sentinel;
    r = lunsnap_format_mem(4096, UINT64_MAX / 4096 + 1, &o, &a);
    CHECK(r != LUNSNAP_RESULT_OK && a == sentinel, "format_mem(4096, 2^52) = %u", (unsigned)r);
    a = sentinel;
    EXPECT(lunsnap_format_mem(4096, 16, &o, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL);
    CHECK(a == sentinel, "format_mem too small wrote *out");
    /* The defaults need lunsnap_min_device_bytes(NULL): a block less is refused,
     * with a message naming the figure; that many blocks format. */
    {
        uint64_t min = 0;
        EXPECT_OK(lunsnap_min_device_bytes(NULL, &min));
        uint64_t fits = (min + 4095) / 4096, short_by_one = (min - 1) / 4096;
        char want[96];
        snprintf(want, sizeof want, "needs %llu bytes, the device has %llu", (unsigned long long)min,
                 (unsigned long long)(short_by_one * 4096));
        a = sentinel;
        EXPECT_MSG(lunsnap_format_mem(4096, short_by_one, NULL, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL, want);
        CHECK(a == sentinel, "format_mem below lunsnap_min_device_bytes wrote *out");
        a = NULL;
        EXPECT_OK(lunsnap_format_mem(4096, fits, NULL, &a));
        lunsnap_free(a);
    }

    /* Bad options. */
    static const uint32_t bad_extent[] = {0, 1, 2048, 5000, 12288, 16385, 2u << 20, 0x80000000u};
    for (size_t i = 0; i < sizeof bad_extent / sizeof bad_extent[0]; i++) {
        lunsnap_format_options b = small_opts();
        b.extent_size = bad_extent[i];
        a = sentinel;
        r = lunsnap_format_mem(BS, BLOCKS, &b, &a);
        CHECK(r == LUNSNAP_RESULT_INVALID_OPTIONS && a == sentinel, "extent_size %u: got %u (%s)", bad_extent[i],
              (unsigned)r, lunsnap_strerror(r));
    }
    static const uint32_t bad_luns[] = {0, (1u << 20) + 1, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_luns / sizeof bad_luns[0]; i++) {
        lunsnap_format_options b = small_opts();
        b.max_luns = bad_luns[i];
        a = sentinel;
        r = lunsnap_format_mem(BS, BLOCKS, &b, &a);
        CHECK(r == LUNSNAP_RESULT_INVALID_OPTIONS && a == sentinel, "max_luns %u: got %u (%s)", bad_luns[i],
              (unsigned)r, lunsnap_strerror(r));
    }
    /* Edge options that are valid: 1 LUN, 4 KiB and 1 MiB extents, a tiny cache, 512 B blocks. */
    {
        lunsnap_format_options b = small_opts();
        b.max_luns = 1;
        a = NULL;
        EXPECT_OK(lunsnap_format_mem(BS, BLOCKS, &b, &a));
        if (a) {
            EXPECT_OK(lunsnap_create_lun(a, 0, 4096));
            EXPECT(lunsnap_create_lun(a, 1, 4096), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
            lunsnap_free(a);
        }
        b = small_opts();
        b.extent_size = 1u << 20;
        a = NULL;
        EXPECT_OK(lunsnap_format_mem(BS, 8192, &b, &a));
        lunsnap_free(a);
        b = small_opts();
        b.cache_bytes = 0;
        memcpy(b.array_id, "0123456789abcdef", 16);
        a = NULL;
        EXPECT_OK(lunsnap_format_mem(512, BLOCKS * 8, &b, &a));
        if (a) {
            EXPECT_OK(lunsnap_create_lun(a, 3, 64 * 1024));
            uint8_t w[1024], rd[1024];
            fill_bytes(w, sizeof w, 3);
            EXPECT_OK(lunsnap_write(a, 3, 512, w, sizeof w));
            EXPECT_OK(lunsnap_read(a, 3, 512, rd, sizeof rd));
            CHECK(memcmp(w, rd, sizeof w) == 0, "512-byte-block device, no cache: data differs");
            lunsnap_free(a);
        }
    }
}

/* ---- host devices: format, open, bad callbacks, failing callbacks ------------------ */

static int32_t never_read(void *ctx, uint64_t lba, uint8_t *buf, size_t len) {
    (void)ctx, (void)lba, (void)buf, (void)len;
    return -1;
}

static void test_callbacks(void) {
    section = "callbacks";
    hostdev d;
    if (!hostdev_init(&d, 512, 16384)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts();
    lunsnap_open_options oo = open_defaults();
    lunsnap_array *const sentinel = forged();
    lunsnap_array *a = sentinel;

    /* A blank device holds no array. */
    EXPECT(lunsnap_open_callbacks(&cb, &oo, &a), LUNSNAP_RESULT_NOT_FORMATTED);
    EXPECT(lunsnap_open_callbacks(&cb, NULL, &a), LUNSNAP_RESULT_NOT_FORMATTED);
    CHECK(a == sentinel, "open of a blank device wrote *out");

    /* NULL pointers (from here on, refused calls must not touch the device). */
    d.reads = d.writes = d.flushes = 0;
    EXPECT(lunsnap_format_callbacks(NULL, &o, &a), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_format_callbacks(&cb, &o, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_open_callbacks(NULL, &oo, &a), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_open_callbacks(&cb, &oo, NULL), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(a == sentinel, "a NULL-pointer failure wrote *out");
    CHECK(d.writes == 0, "a refused format wrote to the device");

    /* A required callback missing (each one), and the optional discard missing. */
    for (int which = 0; which < 3; which++) {
        lunsnap_device_callbacks b = cb;
        const char *name = which == 0 ? "read" : which == 1 ? "write" : "flush";
        if (which == 0) {
            b.read = NULL;
        } else if (which == 1) {
            b.write = NULL;
        } else {
            b.flush = NULL;
        }
        lunsnap_result r = lunsnap_format_callbacks(&b, &o, &a);
        CHECK(r == LUNSNAP_RESULT_NULL_POINTER, "format_callbacks with NULL %s: got %u (%s)", name, (unsigned)r,
              lunsnap_strerror(r));
        r = lunsnap_open_callbacks(&b, &oo, &a);
        CHECK(r == LUNSNAP_RESULT_NULL_POINTER, "open_callbacks with NULL %s: got %u (%s)", name, (unsigned)r,
              lunsnap_strerror(r));
        CHECK(a == sentinel, "NULL %s callback: *out written", name);
    }
    CHECK(d.writes == 0 && d.reads == 0, "refused calls touched the device");

    /* Bad geometry and options. */
    static const uint32_t bad_bs[] = {0, 100, 1000, 256, 8192};
    for (size_t i = 0; i < sizeof bad_bs / sizeof bad_bs[0]; i++) {
        lunsnap_device_callbacks b = cb;
        b.block_size = bad_bs[i];
        EXPECT(lunsnap_format_callbacks(&b, &o, &a), LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE);
        EXPECT(lunsnap_open_callbacks(&b, &oo, &a), LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE);
    }
    {
        lunsnap_device_callbacks b = cb;
        b.block_count = 0;
        EXPECT(lunsnap_format_callbacks(&b, &o, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL);
        b.block_count = 8;
        EXPECT(lunsnap_format_callbacks(&b, &o, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL);
        b.block_count = UINT64_MAX;
        lunsnap_result r = lunsnap_format_callbacks(&b, &o, &a);
        CHECK(r != LUNSNAP_RESULT_OK, "format_callbacks with block_count UINT64_MAX succeeded");
        lunsnap_format_options bo = small_opts();
        bo.extent_size = 6000;
        EXPECT(lunsnap_format_callbacks(&cb, &bo, &a), LUNSNAP_RESULT_INVALID_OPTIONS);
        bo = small_opts();
        bo.max_luns = 0;
        EXPECT(lunsnap_format_callbacks(&cb, &bo, &a), LUNSNAP_RESULT_INVALID_OPTIONS);
        CHECK(a == sentinel, "bad geometry/options wrote *out");
    }
    CHECK(d.writes == 0, "refused formats wrote to the device (%llu writes)", (unsigned long long)d.writes);
    /* NULL options are the defaults: a device below lunsnap_min_device_bytes(NULL)
     * is refused. */
    {
        uint64_t min = 0;
        EXPECT_OK(lunsnap_min_device_bytes(NULL, &min));
        lunsnap_device_callbacks small = cb;
        small.block_count = (min - 1) / BS;
        EXPECT(lunsnap_format_callbacks(&small, NULL, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL);
        CHECK(a == sentinel, "format_callbacks with NULL options wrote *out");
        CHECK(d.writes == 0, "a refused format wrote to the device");
    }

    /* Each callback failing during format: the write and flush ones surface as DEVICE_IO. */
    d.fail_writes = true;
    EXPECT(lunsnap_format_callbacks(&cb, &o, &a), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    d.fail_flushes = true;
    EXPECT(lunsnap_format_callbacks(&cb, &o, &a), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    for (uint64_t n = 1; n <= 3; n++) {
        d.fail_write_at = n;
        EXPECT(lunsnap_format_callbacks(&cb, &o, &a), LUNSNAP_RESULT_DEVICE_IO);
        hostdev_heal(&d);
        d.fail_flush_at = n;
        EXPECT(lunsnap_format_callbacks(&cb, &o, &a), LUNSNAP_RESULT_DEVICE_IO);
        hostdev_heal(&d);
    }
    CHECK(a == sentinel, "failed formats wrote *out");

    /* Format without discard (optional), then open it with each callback failing. */
    {
        lunsnap_device_callbacks b = cb;
        b.discard = NULL;
        a = NULL;
        EXPECT_OK(lunsnap_format_callbacks(&b, &o, &a));
        if (a) {
            EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
            uint8_t w[4096];
            fill_bytes(w, sizeof w, 1);
            EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
            EXPECT_OK(lunsnap_discard(a, 1, 0, 512));
            EXPECT(lunsnap_close(a), LUNSNAP_RESULT_OK);
        }
    }
    a = sentinel;
    d.fail_reads = true;
    EXPECT(lunsnap_open_callbacks(&cb, &oo, &a), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    d.fail_read_at = 1;
    EXPECT(lunsnap_open_callbacks(&cb, &oo, &a), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    {
        lunsnap_device_callbacks b = cb;
        b.read = never_read;
        EXPECT(lunsnap_open_callbacks(&b, &oo, &a), LUNSNAP_RESULT_DEVICE_IO);
    }
    CHECK(a == sentinel, "failed opens wrote *out");
    /* A device of a different size than the one formatted still opens (the array
     * lives at its start) or is refused, never crashes; the real one opens. */
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, &oo, &a));
    if (a) {
        lunsnap_lun_info li = {.struct_size = sizeof li};
        EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
        uint8_t rd[4096], w[4096];
        fill_bytes(w, sizeof w, 1);
        memset(w, 0, 512); /* the discarded sector */
        EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
        CHECK(memcmp(rd, w, sizeof rd) == 0, "data after close/open over callbacks differs");
        lunsnap_free(a);
    }
    hostdev_destroy(&d);
}

/* The callbacks failing while the array is in use. */
static void test_failing_io(void) {
    section = "failing callbacks";
    hostdev d;
    if (!hostdev_init(&d, 512, 16384)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts();
    lunsnap_open_options oo = open_defaults();
    oo.cache_bytes = 0; /* every metadata access reaches the device */
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    lunsnap_free(a);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, &oo, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    uint8_t v1[8192], v2[8192], rd[8192];
    fill_bytes(v1, sizeof v1, 11);
    fill_bytes(v2, sizeof v2, 22);
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
    EXPECT_OK(lunsnap_write(a, 1, 0, v1, sizeof v1));
    EXPECT_OK(lunsnap_flush(a));

    /* A failing read: the read reports DEVICE_IO and leaves the buffer's fate to the
     * host; the next read works. */
    d.fail_read_at = 1;
    EXPECT(lunsnap_read(a, 1, 0, rd, sizeof rd), LUNSNAP_RESULT_DEVICE_IO);
    memset(rd, 0, sizeof rd);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "read after a failed read differs");

    /* A failing data write: DEVICE_IO; the LUN keeps its old contents. */
    d.fail_write_at = 1;
    EXPECT(lunsnap_write(a, 1, 0, v2, sizeof v2), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    lunsnap_result r = lunsnap_read(a, 1, 0, rd, sizeof rd);
    CHECK(r == LUNSNAP_RESULT_OK, "read after a failed write: %s", lunsnap_strerror(r));
    /* Whether the array is now poisoned or not, reopening gives the last commit. */
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "after a failed write and reopen: not the last commit");

    /* A failing flush during a commit: DEVICE_IO, then changes are refused with
     * POISONED, reads still work, reopen brings back the last commit. */
    EXPECT_OK(lunsnap_write(a, 1, 0, v2, sizeof v2));
    d.fail_flushes = true;
    EXPECT(lunsnap_flush(a), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    EXPECT(lunsnap_write(a, 2, 0, v2, 512), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_flush(a), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_create_lun(a, 3, LUN_SIZE), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_create_copy(a, 1, 4, true), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_delete(a, 2, false), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_discard(a, 1, 0, 512), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_write_zeroes(a, 1, 0, 512, true), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_write_zeroes_as(a, 0x10, 1, 0, 512, false), LUNSNAP_RESULT_POISONED);
    {
        /* Reading what is mapped and where LUNs differ still works, as reads do. */
        lunsnap_map_range mr[4];
        lunsnap_diff_range dr[4];
        size_t nr = 0;
        EXPECT_OK(lunsnap_map(a, 1, 0, LUN_SIZE, mr, 4, &nr));
        CHECK(nr == 2 && mr[0].data && mr[0].length == sizeof v1 && !mr[1].data,
              "map of a poisoned array: %zu ranges", nr);
        EXPECT_OK(lunsnap_diff(a, 1, 2, 0, LUN_SIZE, dr, 4, &nr));
        CHECK(nr == 1 && dr[0].offset == 0, "diff of a poisoned array: %zu ranges", nr);
        EXPECT_OK(lunsnap_set_detect_zeros(a, false));
        EXPECT_OK(lunsnap_set_detect_zeros(a, true));
    }
    size_t nv = 77;
    EXPECT(lunsnap_check(a, &nv), LUNSNAP_RESULT_POISONED);
    CHECK(nv == 77, "failed check wrote *out_violations");
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    /* A power cut drops what the failed commit wrote; reopen recovers. */
    hostdev_power_cut(&d, HOSTDEV_CUT_DROP_ALL);
    hostdev_power_on(&d);
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "after a failed flush, cut and reopen: not the last commit");
    nv = 77;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "after recovery: %zu violations", nv);

    /* A failing write in the middle of each management operation's commit. */
    for (int op = 0; op < 6; op++) {
        static const char *names[] = {"create_lun", "create_copy", "attach", "detach", "restore", "delete"};
        /* State before: LUN 1 (v1), LUN 2, copy 5 of LUN 1 attached (made on op >= 2). */
        if (op == 2) {
            EXPECT_OK(lunsnap_create_copy(a, 1, 5, true));
        }
        d.fail_write_at = 1;
        switch (op) {
        case 0: r = lunsnap_create_lun(a, 3, LUN_SIZE); break;
        case 1: r = lunsnap_create_copy(a, 1, 4, true); break;
        case 2: r = lunsnap_attach(a, 5); break;
        case 3: r = lunsnap_detach(a, 5); break;
        case 4: r = lunsnap_restore(a, 5); break;
        default: r = lunsnap_delete(a, 2, false); break;
        }
        hostdev_heal(&d);
        CHECK(r == LUNSNAP_RESULT_DEVICE_IO, "%s with a failing write: got %u (%s)", names[op], (unsigned)r,
              lunsnap_strerror(r));
        EXPECT(lunsnap_create_lun(a, 6, 4096), LUNSNAP_RESULT_POISONED);
        EXPECT_OK(lunsnap_reopen(a));
        size_t n = 0;
        EXPECT_OK(lunsnap_luns(a, NULL, 0, &n));
        CHECK(n == (op >= 2 ? 3u : 2u), "after failed %s and reopen: %zu LUNs", names[op], n);
        EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
        CHECK(memcmp(rd, v1, sizeof rd) == 0, "after failed %s and reopen: LUN 1 differs", names[op]);
        nv = 77;
        EXPECT_OK(lunsnap_check(a, &nv));
        CHECK(nv == 0, "after failed %s and reopen: %zu violations", names[op], nv);
    }

    /* The discard callback failing: it is called after lunsnap_discard's commit (for
     * LUN 2's extent, which no copy shares), and its failure is ignored (the commit has
     * succeeded); the array stays consistent and usable. */
    EXPECT_OK(lunsnap_write(a, 2, 0, v2, sizeof v2));
    EXPECT_OK(lunsnap_flush(a));
    uint64_t discards_before = d.discards;
    d.fail_discards = true;
    EXPECT_OK(lunsnap_discard(a, 2, 4096, 4096));
    memset(v2 + 4096, 0, 4096);
    CHECK(d.discards > discards_before, "the discard callback was not called after lunsnap_discard's commit");
    hostdev_heal(&d);
    EXPECT_OK(lunsnap_write(a, 2, 0, v2, 512));
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v2, sizeof rd) == 0, "after a failing discard callback: LUN 2 differs");
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "after a failing discard callback: LUN 1 differs");
    nv = 77;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "after a failing discard: %zu violations", nv);

    /* check() with unreadable metadata: violations with messages. (Reopened with no
     * metadata cache, so that check reads the device: lunsnap_reopen itself reopens
     * with the default options.) */
    section = "check_message";
    lunsnap_free(a);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, &oo, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    {
        size_t len = 99;
        char buf[16];
        /* No check yet on this handle. */
        EXPECT(lunsnap_check_message(a, 0, buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_ARGUMENT);
        d.fail_reads = true;
        nv = 0;
        r = lunsnap_check(a, &nv);
        hostdev_heal(&d);
        CHECK(r == LUNSNAP_RESULT_OK && nv > 0, "check with every read failing: %u (%s), %zu violations", (unsigned)r,
              lunsnap_strerror(r), nv);
        if (r == LUNSNAP_RESULT_OK && nv > 0) {
            size_t full = 0;
            EXPECT_OK(lunsnap_check_message(a, 0, NULL, 0, &full));
            CHECK(full > 0, "message 0 is empty");
            char *m = malloc(full + 1);
            if (m) {
                memset(m, 'x', full + 1);
                size_t l2 = 0;
                EXPECT_OK(lunsnap_check_message(a, 0, m, full + 1, &l2));
                CHECK(l2 == full && m[full] == '\0' && strlen(m) == full, "full message: len %zu/%zu", l2, full);
                /* Truncation to a small buffer: NUL-terminated prefix, full length reported. */
                memset(buf, 'x', sizeof buf);
                size_t l3 = 0;
                EXPECT_OK(lunsnap_check_message(a, 0, buf, 8, &l3));
                size_t want = full < 7 ? full : 7;
                CHECK(l3 == full && strlen(buf) == want && strncmp(buf, m, want) == 0 && buf[8] == 'x',
                      "truncated message: \"%s\" (len %zu), full \"%s\"", buf, l3, m);
                memset(buf, 'x', sizeof buf);
                EXPECT_OK(lunsnap_check_message(a, 0, buf, 1, &l3));
                CHECK(buf[0] == '\0' && buf[1] == 'x', "buf_len 1: not just a NUL");
                /* buf_len 0 with a non-NULL buf: nothing written. */
                memset(buf, 'x', sizeof buf);
                EXPECT_OK(lunsnap_check_message(a, 0, buf, 0, &l3));
                CHECK(buf[0] == 'x', "buf_len 0: the buffer was written");
                free(m);
            }
            /* Severities: unreadable metadata is damage (the worst); every value is one
             * of the three; refused indexes and a NULL out write nothing. */
            uint32_t worst = 0;
            for (size_t i = 0; i < nv; i++) {
                size_t li = 0;
                EXPECT_OK(lunsnap_check_message(a, i, NULL, 0, &li));
                uint32_t sev = 0;
                EXPECT_OK(lunsnap_check_severity(a, i, &sev));
                CHECK(sev == LUNSNAP_SEVERITY_NOTICE || sev == LUNSNAP_SEVERITY_LEAK || sev == LUNSNAP_SEVERITY_DAMAGE,
                      "violation %zu: severity %u", i, sev);
                worst = sev > worst ? sev : worst;
            }
            CHECK(worst == LUNSNAP_SEVERITY_DAMAGE, "unreadable metadata: the worst severity is %u, want DAMAGE (%u)",
                  worst, (unsigned)LUNSNAP_SEVERITY_DAMAGE);
            uint32_t sev = 77;
            EXPECT_MSG(lunsnap_check_severity(a, nv, &sev), LUNSNAP_RESULT_INVALID_ARGUMENT,
                       "the last lunsnap_check on this handle found");
            EXPECT(lunsnap_check_severity(a, 0, NULL), LUNSNAP_RESULT_NULL_POINTER);
            EXPECT(lunsnap_check_severity(NULL, 0, &sev), LUNSNAP_RESULT_NULL_POINTER);
            EXPECT(lunsnap_check_severity(forged(), 0, &sev), LUNSNAP_RESULT_INVALID_HANDLE);
            CHECK(sev == 77, "a refused lunsnap_check_severity wrote *out");
            len = 99;
            EXPECT(lunsnap_check_message(a, nv, buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_ARGUMENT);
            EXPECT(lunsnap_check_message(a, SIZE_MAX, buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_ARGUMENT);
            CHECK(len == 99, "failed check_message wrote *out_len");
            EXPECT(lunsnap_check_message(a, 0, buf, sizeof buf, NULL), LUNSNAP_RESULT_NULL_POINTER);
            EXPECT(lunsnap_check_message(a, 0, NULL, 8, &len), LUNSNAP_RESULT_NULL_POINTER);
            EXPECT(lunsnap_check_message(NULL, 0, buf, sizeof buf, &len), LUNSNAP_RESULT_NULL_POINTER);
            CHECK(len == 99, "failed check_message wrote *out_len");
        }
        /* A clean check replaces the report. */
        nv = 77;
        EXPECT_OK(lunsnap_check(a, &nv));
        CHECK(nv == 0, "check with the device healed: %zu violations", nv);
        EXPECT(lunsnap_check_message(a, 0, buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_ARGUMENT);
        EXPECT(lunsnap_check_severity(a, 0, &(uint32_t){0}), LUNSNAP_RESULT_INVALID_ARGUMENT);
    }

    /* A failed reopen: the handle refuses further use (until freed). */
    section = "failing callbacks";
    d.fail_reads = true;
    r = lunsnap_reopen(a);
    hostdev_heal(&d);
    CHECK(r == LUNSNAP_RESULT_DEVICE_IO, "reopen with failing reads: %u (%s)", (unsigned)r, lunsnap_strerror(r));
    if (r != LUNSNAP_RESULT_OK) {
        r = lunsnap_read(a, 1, 0, rd, 512);
        CHECK(r != LUNSNAP_RESULT_OK, "a handle whose reopen failed still reads");
        r = lunsnap_create_lun(a, 9, 4096);
        CHECK(r != LUNSNAP_RESULT_OK, "a handle whose reopen failed still changes");
    }
    lunsnap_free(a);

    /* close() whose commit fails: the result says so, the handle is freed anyway, and
     * the device keeps the previous commit. */
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, &oo, &a));
    if (a) {
        EXPECT_OK(lunsnap_write(a, 1, 0, v2, sizeof v2));
        d.fail_flushes = true;
        EXPECT(lunsnap_close(a), LUNSNAP_RESULT_DEVICE_IO);
        hostdev_heal(&d);
        lunsnap_pool_info p = {.struct_size = sizeof p};
        EXPECT(lunsnap_get_pool_info(a, &p), LUNSNAP_RESULT_INVALID_HANDLE);
        lunsnap_free(a); /* already freed by close: harmless */
        hostdev_power_cut(&d, HOSTDEV_CUT_DROP_ALL);
        hostdev_power_on(&d);
        a = NULL;
        EXPECT_OK(lunsnap_open_callbacks(&cb, &oo, &a));
        if (a) {
            EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
            CHECK(memcmp(rd, v1, sizeof rd) == 0, "after a failed close: not the previous commit");
            /* close of a poisoned handle: POISONED, freed. */
            EXPECT_OK(lunsnap_write(a, 1, 0, v2, sizeof v2));
            d.fail_flush_at = 1;
            EXPECT(lunsnap_flush(a), LUNSNAP_RESULT_DEVICE_IO);
            EXPECT(lunsnap_close(a), LUNSNAP_RESULT_POISONED);
            EXPECT(lunsnap_flush(a), LUNSNAP_RESULT_INVALID_HANDLE);
        }
    }
    hostdev_destroy(&d);
}

/* ---- handles: NULL, forged, freed, double free ----------------------------------- */

/* Every function that takes an array handle, called with `h`: each must give `want`
 * (and not touch its out-parameters). */
static void all_calls_give(lunsnap_array *h, lunsnap_result want, const char *what) {
    uint8_t buf[512];
    memset(buf, 0xaa, sizeof buf);
    lunsnap_lun_info li = {.struct_size = sizeof li};
    lunsnap_pool_info pi = {.struct_size = sizeof pi};
    memset(&li, 0x5a, sizeof li);
    li.struct_size = sizeof li;
    memset(&pi, 0x5a, sizeof pi);
    pi.struct_size = sizeof pi;
    lunsnap_lun_info li0 = li;
    lunsnap_pool_info pi0 = pi;
    uint32_t nums[4] = {7, 7, 7, 7}, vis[4] = {7, 7, 7, 7};
    uint64_t ids[4] = {7, 7, 7, 7};
    size_t count = 99, nv = 99, len = 99, nhosts = 99, nvis = 99, name_len = 99;
    char msg[8] = "xxxxxxx", name[8] = "xxxxxxx";
    bool sec = true, poisoned = true;
    lunsnap_host_grant hg[2], hg0;
    memset(hg, 0x5a, sizeof hg);
    hg0 = hg[0];
    size_t ngrants = 99;
    const uint32_t parents[2] = {1, 2}, copies[2] = {3, 4};
    lunsnap_map_range mr[2], mr0;
    lunsnap_diff_range dr[2], dr0;
    memset(mr, 0x5a, sizeof mr);
    memset(dr, 0x5a, sizeof dr);
    memcpy(&mr0, &mr[0], sizeof mr0);
    memcpy(&dr0, &dr[0], sizeof dr0);
    size_t nmap = 99, nmap_as = 99, ndiff = 99, ndiff_as = 99, nalloc = 99, nalloc_as = 99;
    bool dz = true, waiting = true;
    uint64_t pending = 99;
    lunsnap_reclaim_stats rs, rs0;
    memset(&rs, 0x5a, sizeof rs);
    rs.struct_size = sizeof rs;
    rs0 = rs;
    struct {
        const char *name;
        lunsnap_result r;
    } calls[] = {
        {"create_lun", lunsnap_create_lun(h, 1, 4096)},
        {"create_copy", lunsnap_create_copy(h, 1, 2, true)},
        {"attach", lunsnap_attach(h, 2)},
        {"detach", lunsnap_detach(h, 2)},
        {"delete", lunsnap_delete(h, 1, true)},
        {"restore", lunsnap_restore(h, 2)},
        {"read", lunsnap_read(h, 1, 0, buf, sizeof buf)},
        {"write", lunsnap_write(h, 1, 0, buf, sizeof buf)},
        {"discard", lunsnap_discard(h, 1, 0, 512)},
        {"flush", lunsnap_flush(h)},
        {"get_lun_info", lunsnap_get_lun_info(h, 1, &li)},
        {"get_pool_info", lunsnap_get_pool_info(h, &pi)},
        {"luns", lunsnap_luns(h, nums, 4, &count)},
        {"check", lunsnap_check(h, &nv)},
        {"check_message", lunsnap_check_message(h, 0, msg, sizeof msg, &len)},
        {"add_host", lunsnap_add_host(h, 0x10, "host")},
        {"remove_host", lunsnap_remove_host(h, 0x10)},
        {"hosts", lunsnap_hosts(h, ids, 4, &nhosts)},
        {"host_name", lunsnap_host_name(h, 0x10, name, sizeof name, &name_len)},
        {"grant", lunsnap_grant(h, 1, 0x10, LUNSNAP_ACCESS_READ_WRITE)},
        {"revoke", lunsnap_revoke(h, 1, 0x10)},
        {"set_security", lunsnap_set_security(h, true)},
        {"security_enabled", lunsnap_security_enabled(h, &sec)},
        {"read_as", lunsnap_read_as(h, 0x10, 1, 0, buf, sizeof buf)},
        {"write_as", lunsnap_write_as(h, 0x10, 1, 0, buf, sizeof buf)},
        {"discard_as", lunsnap_discard_as(h, 0x10, 1, 0, 512)},
        {"visible_luns", lunsnap_visible_luns(h, 0x10, vis, 4, &nvis)},
        {"set_online", lunsnap_set_online(h, 1, false)},
        {"create_copies", lunsnap_create_copies(h, parents, copies, 2, true)},
        {"attach_many", lunsnap_attach_many(h, copies, 2)},
        {"write_zeroes", lunsnap_write_zeroes(h, 1, 0, 512, true)},
        {"write_zeroes_as", lunsnap_write_zeroes_as(h, 0x10, 1, 0, 512, false)},
        {"map", lunsnap_map(h, 1, 0, 512, mr, 2, &nmap)},
        {"map_as", lunsnap_map_as(h, 0x10, 1, 0, 512, mr, 2, &nmap_as)},
        {"diff", lunsnap_diff(h, 1, 2, 0, 512, dr, 2, &ndiff)},
        {"diff_as", lunsnap_diff_as(h, 0x10, 1, 2, 0, 512, dr, 2, &ndiff_as)},
        {"set_detect_zeros", lunsnap_set_detect_zeros(h, false)},
        {"detect_zeros", lunsnap_detect_zeros(h, &dz)},
        {"get_lun_info_as", lunsnap_get_lun_info_as(h, 0x10, 1, &li)},
        {"grants", lunsnap_grants(h, 1, hg, 2, &ngrants)},
        {"is_poisoned", lunsnap_is_poisoned(h, &poisoned)},
        {"map_allocation", lunsnap_map_allocation(h, 1, 0, 512, mr, 2, &nalloc)},
        {"map_allocation_as", lunsnap_map_allocation_as(h, 0x10, 1, 0, 512, mr, 2, &nalloc_as)},
        {"reclaim", lunsnap_reclaim(h, 100, &rs)},
        {"reclaim (no out)", lunsnap_reclaim(h, 100, NULL)},
        {"reclaim_pending", lunsnap_reclaim_pending(h, &waiting)},
        {"pending_bytes", lunsnap_pending_bytes(h, &pending)},
        {"reopen", lunsnap_reopen(h)},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        CHECK(calls[i].r == want, "%s handle: lunsnap_%s gave %u (%s), want %u (%s)", what, calls[i].name,
              (unsigned)calls[i].r, lunsnap_strerror(calls[i].r), (unsigned)want, lunsnap_strerror(want));
    }
    CHECK(memcmp(&li, &li0, sizeof li) == 0 && memcmp(&pi, &pi0, sizeof pi) == 0, "%s handle: info written",
          what);
    CHECK(nums[0] == 7 && count == 99 && nv == 99 && len == 99 && msg[0] == 'x', "%s handle: out-params written",
          what);
    CHECK(ids[0] == 7 && nhosts == 99 && vis[0] == 7 && nvis == 99 && name_len == 99 && name[0] == 'x' && sec,
          "%s handle: access-control out-params written", what);
    CHECK(all_bytes(buf, sizeof buf, 0xaa), "%s handle: read buffer written", what);
    CHECK(memcmp(&mr[0], &mr0, sizeof mr0) == 0 && memcmp(&dr[0], &dr0, sizeof dr0) == 0 && nmap == 99 &&
              nmap_as == 99 && ndiff == 99 && ndiff_as == 99 && dz,
          "%s handle: map/diff/detect_zeros out-params written", what);
    CHECK(memcmp(&hg[0], &hg0, sizeof hg0) == 0 && ngrants == 99 && poisoned,
          "%s handle: grants/is_poisoned out-params written", what);
    CHECK(memcmp(&mr[0], &mr0, sizeof mr0) == 0 && nalloc == 99 && nalloc_as == 99 &&
              memcmp(&rs, &rs0, sizeof rs) == 0 && waiting && pending == 99,
          "%s handle: map_allocation/reclaim out-params written", what);
    /* The message of the last call (reopen) names it and the handle's trouble; it is
     * the calling thread's, and the handle's when the handle is live. */
    char m[512];
    snprintf(m, sizeof m, "%s", last_message(NULL));
    const char *want_text = want == LUNSNAP_RESULT_NULL_POINTER    ? "lunsnap_reopen: `array` is NULL"
                            : want == LUNSNAP_RESULT_INVALID_HANDLE ? "is not a live array handle"
                                                                    : lunsnap_strerror(want);
    CHECK(strncmp(m, "lunsnap_reopen: ", 16) == 0 && strstr(m, want_text) != NULL,
          "%s handle: thread message \"%s\", want \"%s\"", what, m, want_text);
    char hb[8];
    size_t hl = 99;
    lunsnap_result hr = lunsnap_last_error_message(h, hb, sizeof hb, &hl);
    if (want == LUNSNAP_RESULT_INVALID_HANDLE) {
        CHECK(hr == LUNSNAP_RESULT_INVALID_HANDLE && hl == 99,
              "%s handle: lunsnap_last_error_message gave %u", what, (unsigned)hr);
    } else if (h != NULL) {
        CHECK(hr == LUNSNAP_RESULT_OK && strcmp(last_message(h), m) == 0,
              "%s handle: its message \"%s\" is not the thread's \"%s\"", what, last_message(h), m);
    }
}

/* A reopen that fails (the device cannot be read) leaves the handle unusable: every
 * call gives LUNSNAP_RESULT_UNUSABLE, close frees it, and it is then invalid. */
static void test_failed_reopen(void) {
    hostdev d;
    if (!hostdev_init(&d, 512, 16384)) {
        CHECK(false, "hostdev_init failed");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = format_defaults();
    o.extent_size = EXTENT;
    o.max_luns = MAX_LUNS;
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    d.fail_reads = true;
    EXPECT(lunsnap_reopen(a), LUNSNAP_RESULT_DEVICE_IO);
    d.fail_reads = false;
    all_calls_give(a, LUNSNAP_RESULT_UNUSABLE, "unusable (failed reopen)");
    EXPECT(lunsnap_close(a), LUNSNAP_RESULT_UNUSABLE);
    EXPECT(lunsnap_flush(a), LUNSNAP_RESULT_INVALID_HANDLE);
    lunsnap_free(a);
    /* The device still holds the array: opening it again works. */
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    lunsnap_free(a);
    hostdev_destroy(&d);
}

static void test_handles(void) {
    section = "handles";
    all_calls_give(NULL, LUNSNAP_RESULT_NULL_POINTER, "NULL");
    all_calls_give(forged(), LUNSNAP_RESULT_INVALID_HANDLE, "forged");
    EXPECT(lunsnap_close(NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_close(forged()), LUNSNAP_RESULT_INVALID_HANDLE);
    lunsnap_free(NULL);
    lunsnap_free(forged());
    CHECK(true, "lunsnap_free(NULL) and of a forged handle returned");

    /* Freed: every call says INVALID_HANDLE; double free and close are harmless. */
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    lunsnap_free(a);
    all_calls_give(a, LUNSNAP_RESULT_INVALID_HANDLE, "freed");
    lunsnap_free(a);
    lunsnap_free(a);
    EXPECT(lunsnap_close(a), LUNSNAP_RESULT_INVALID_HANDLE);
    CHECK(true, "double free returned");

    /* Closed: the same. */
    lunsnap_array *b = new_array(__LINE__);
    if (!b) {
        return;
    }
    EXPECT_OK(lunsnap_close(b));
    all_calls_give(b, LUNSNAP_RESULT_INVALID_HANDLE, "closed");
    EXPECT(lunsnap_close(b), LUNSNAP_RESULT_INVALID_HANDLE);
    lunsnap_free(b);

    /* A freed handle must stay invalid after new handles are made: the registry key
     * must not be the recycled address of a new handle (the header promises
     * INVALID_HANDLE for a freed handle). */
    lunsnap_array *fresh[8];
    bool reused = false;
    for (size_t i = 0; i < 8; i++) {
        fresh[i] = new_array(__LINE__);
        reused = reused || fresh[i] == a || fresh[i] == b;
    }
    lunsnap_pool_info p = {.struct_size = sizeof p};
    lunsnap_result ra = lunsnap_get_pool_info(a, &p), rb = lunsnap_get_pool_info(b, &p);
    CHECK(!reused && ra == LUNSNAP_RESULT_INVALID_HANDLE && rb == LUNSNAP_RESULT_INVALID_HANDLE,
          "a freed handle came back to life: a new handle has the same value (reused: %s; stale "
          "get_pool_info gives %u and %u); handle keys are the addresses of freed allocations",
          reused ? "yes" : "no", (unsigned)ra, (unsigned)rb);
    for (size_t i = 0; i < 8; i++) {
        lunsnap_free(fresh[i]);
    }
}

/* ---- LUNs and copies --------------------------------------------------------------- */

static void test_luns_and_copies(void) {
    section = "luns";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    lunsnap_pool_info p0 = {.struct_size = sizeof p0}, p = {.struct_size = sizeof p};
    EXPECT_OK(lunsnap_get_pool_info(a, &p0));
    CHECK(p0.extent_size == EXTENT && p0.max_luns == MAX_LUNS && p0.luns == 0, "pool: extent %u max %u luns %u",
          p0.extent_size, p0.max_luns, p0.luns);
    CHECK(p0.capacity_bytes > 0 && p0.capacity_bytes <= (uint64_t)BS * BLOCKS && p0.reserved_bytes == 0 &&
              p0.unreserved_bytes == p0.capacity_bytes && p0.allocated_bytes == 0 &&
              p0.metadata_used_bytes <= p0.metadata_provisioned_bytes,
          "fresh pool figures inconsistent");
    EXPECT(lunsnap_get_pool_info(a, NULL), LUNSNAP_RESULT_NULL_POINTER);

    /* create_lun: bad numbers and sizes. */
    EXPECT(lunsnap_create_lun(a, MAX_LUNS, 4096), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_create_lun(a, UINT32_MAX, 4096), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_create_lun(a, 1, 0), LUNSNAP_RESULT_INVALID_LUN_SIZE);
    EXPECT(lunsnap_create_lun(a, 1, 1000), LUNSNAP_RESULT_INVALID_LUN_SIZE);
    EXPECT(lunsnap_create_lun(a, 1, 511), LUNSNAP_RESULT_INVALID_LUN_SIZE);
    EXPECT(lunsnap_create_lun(a, 1, p0.capacity_bytes + EXTENT), LUNSNAP_RESULT_INVALID_LUN_SIZE);
    EXPECT(lunsnap_create_lun(a, 1, UINT64_MAX), LUNSNAP_RESULT_INVALID_LUN_SIZE);
    EXPECT(lunsnap_create_lun(a, 1, UINT64_MAX - 511), LUNSNAP_RESULT_INVALID_LUN_SIZE);
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.luns == 0 && p.generation == p0.generation, "refused create_lun changed the pool");

    /* The whole pool in one LUN, then no room for more. */
    EXPECT_OK(lunsnap_create_lun(a, 0, p0.capacity_bytes));
    EXPECT(lunsnap_create_lun(a, 1, 4096), LUNSNAP_RESULT_NO_SPACE);
    EXPECT_OK(lunsnap_delete(a, 0, false));

    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, MAX_LUNS - 1, 1000 * 512)); /* not a whole number of extents */
    EXPECT(lunsnap_create_lun(a, 1, LUN_SIZE), LUNSNAP_RESULT_LUN_EXISTS);
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.luns == 2 && p.generation > p0.generation, "after two creates: %u LUNs, generation %llu", p.luns,
          (unsigned long long)p.generation);
    uint64_t want_res = LUN_SIZE + (1000 * 512 + EXTENT - 1) / EXTENT * EXTENT;
    CHECK(p.reserved_bytes == want_res && p.unreserved_bytes == p.capacity_bytes - want_res,
          "reserved %llu, want %llu", (unsigned long long)p.reserved_bytes, (unsigned long long)want_res);

    lunsnap_lun_info li = {.struct_size = sizeof li};
    memset(&li, 0, sizeof li);
    li.struct_size = sizeof li;
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.lun == 1 && li.kind == LUNSNAP_LUN_KIND_LUN && li.size == LUN_SIZE && li.has_parent == 0 &&
              li.attached == 1 && li.reserved_bytes == LUN_SIZE && li.exclusive_bytes == 0 &&
              li.shared_bytes == 0 && li.created_generation > 0 && li.created_generation <= p.generation &&
              li.online == 1,
          "lun_info(1) fields wrong");
    lunsnap_lun_info sent = {.struct_size = sizeof sent};
    memset(&sent, 0x77, sizeof sent);
    sent.struct_size = sizeof sent;
    li = sent;
    EXPECT(lunsnap_get_lun_info(a, 2, &li), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_get_lun_info(a, MAX_LUNS, &li), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_get_lun_info(a, UINT32_MAX, &li), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    CHECK(memcmp(&li, &sent, sizeof li) == 0, "failed get_lun_info wrote *out");
    EXPECT(lunsnap_get_lun_info(a, 1, NULL), LUNSNAP_RESULT_NULL_POINTER);

    /* luns(): count query, partial fill, order. */
    size_t n = 99;
    EXPECT_OK(lunsnap_luns(a, NULL, 0, &n));
    CHECK(n == 2, "luns count %zu, want 2", n);
    uint32_t nums[4] = {9, 9, 9, 9};
    n = 0;
    EXPECT_OK(lunsnap_luns(a, nums, 1, &n));
    CHECK(n == 2 && nums[0] == 1 && nums[1] == 9, "luns(capacity 1): %zu, [%u %u]", n, nums[0], nums[1]);
    EXPECT_OK(lunsnap_luns(a, nums, 4, &n));
    CHECK(n == 2 && nums[0] == 1 && nums[1] == MAX_LUNS - 1 && nums[2] == 9, "luns: %zu, [%u %u %u]", n, nums[0],
          nums[1], nums[2]);
    n = 99;
    EXPECT(lunsnap_luns(a, NULL, 4, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_luns(a, nums, 4, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_luns(a, NULL, 0, NULL), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(n == 99, "failed luns wrote *out_count");

    /* Data: write v1 to LUN 1, copy it, change the parent, the copy keeps v1. */
    section = "copies";
    static uint8_t v1[LUN_SIZE], v2[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(v1, sizeof v1, 1);
    fill_bytes(v2, sizeof v2, 2);
    EXPECT_OK(lunsnap_write(a, 1, 0, v1, sizeof v1));
    EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, false));
    EXPECT(lunsnap_create_copy(a, 1, 2, true), LUNSNAP_RESULT_LUN_EXISTS);
    EXPECT(lunsnap_create_copy(a, 5, 4, true), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_create_copy(a, MAX_LUNS, 4, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_create_copy(a, 1, MAX_LUNS, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_create_copy(a, 1, UINT32_MAX, false), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_create_copy(a, 3, 4, true), LUNSNAP_RESULT_PARENT_DETACHED);
    EXPECT_OK(lunsnap_get_lun_info(a, 2, &li));
    CHECK(li.kind == LUNSNAP_LUN_KIND_COPY && li.has_parent == 1 && li.parent == 1 && li.attached == 1 &&
              li.size == LUN_SIZE && li.reserved_bytes == LUN_SIZE && li.shared_bytes == LUN_SIZE &&
              li.attached_generation > 0,
          "lun_info(copy 2) fields wrong");
    EXPECT_OK(lunsnap_get_lun_info(a, 3, &li));
    CHECK(li.kind == LUNSNAP_LUN_KIND_COPY && li.has_parent == 1 && li.parent == 1 && li.attached == 0 &&
              li.reserved_bytes == 0 && li.attached_generation == 0,
          "lun_info(detached copy 3) fields wrong");
    EXPECT(lunsnap_read(a, 3, 0, rd, 512), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_write(a, 3, 0, v1, 512), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_discard(a, 3, 0, 512), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_restore(a, 3), LUNSNAP_RESULT_DETACHED);

    EXPECT_OK(lunsnap_write(a, 1, 0, v2, sizeof v2));
    EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "copy 2 changed with its parent");
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v2, sizeof rd) == 0, "parent 1 does not read what was written");

    /* attach a detached copy: the parent's image now; refresh an attached one. */
    EXPECT_OK(lunsnap_attach(a, 3));
    EXPECT_OK(lunsnap_read(a, 3, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v2, sizeof rd) == 0, "attached copy 3 is not the parent's image");
    EXPECT(lunsnap_attach(a, 1), LUNSNAP_RESULT_NOT_A_COPY);
    EXPECT(lunsnap_attach(a, 4), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_attach(a, MAX_LUNS), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_detach(a, 1), LUNSNAP_RESULT_NOT_A_COPY);
    EXPECT(lunsnap_detach(a, 4), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_detach(a, MAX_LUNS), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_restore(a, 1), LUNSNAP_RESULT_NOT_A_COPY);
    EXPECT(lunsnap_restore(a, 4), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_restore(a, MAX_LUNS), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);

    /* Copies of copies; no space for a fourth attached copy of the big LUN. */
    EXPECT_OK(lunsnap_create_copy(a, 2, 4, true));
    EXPECT_OK(lunsnap_read(a, 4, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "copy 4 of copy 2 is not copy 2's image");
    EXPECT_OK(lunsnap_get_lun_info(a, 4, &li));
    CHECK(li.has_parent == 1 && li.parent == 2, "copy 4's parent is not 2");
    EXPECT_OK(lunsnap_create_lun(a, 7, 4096));
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    {
        lunsnap_array *q = new_array(__LINE__);
        if (q) {
            /* A pool where an attached copy cannot reserve: LUN of 60 % of capacity. */
            lunsnap_pool_info qp = {.struct_size = sizeof qp};
            EXPECT_OK(lunsnap_get_pool_info(q, &qp));
            uint64_t big = qp.capacity_bytes / 5 * 3 / EXTENT * EXTENT;
            EXPECT_OK(lunsnap_create_lun(q, 1, big));
            EXPECT(lunsnap_create_copy(q, 1, 2, true), LUNSNAP_RESULT_NO_SPACE);
            EXPECT_OK(lunsnap_create_copy(q, 1, 2, false));
            EXPECT(lunsnap_attach(q, 2), LUNSNAP_RESULT_NO_SPACE);
            lunsnap_lun_info qi = {.struct_size = sizeof qi};
            EXPECT_OK(lunsnap_get_lun_info(q, 2, &qi));
            CHECK(qi.attached == 0, "refused attach attached the copy");
            lunsnap_free(q);
        }
    }

    /* restore: the parent reads the copy; the copy is unchanged. */
    EXPECT_OK(lunsnap_restore(a, 2));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "restore from copy 2 did not bring v1 back");
    EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "restore changed the copy");

    /* detach: no data, no reservation. */
    EXPECT_OK(lunsnap_detach(a, 3));
    EXPECT_OK(lunsnap_get_lun_info(a, 3, &li));
    CHECK(li.attached == 0 && li.reserved_bytes == 0, "detached copy 3 still attached or reserving");
    EXPECT(lunsnap_read(a, 3, 0, rd, 512), LUNSNAP_RESULT_DETACHED);

    /* delete: refused with copies unless orphaned; orphans behave as documented. */
    EXPECT(lunsnap_delete(a, 1, false), LUNSNAP_RESULT_HAS_COPIES);
    EXPECT(lunsnap_delete(a, 5, false), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_delete(a, MAX_LUNS, false), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_delete(a, UINT32_MAX, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT_OK(lunsnap_delete(a, 1, true));
    EXPECT_OK(lunsnap_get_lun_info(a, 2, &li));
    CHECK(li.kind == LUNSNAP_LUN_KIND_LUN && li.has_parent == 0 && li.attached == 1,
          "orphaned attached copy 2 did not become a plain LUN");
    EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "orphaned copy 2 lost its data");
    EXPECT_OK(lunsnap_get_lun_info(a, 3, &li));
    CHECK(li.kind == LUNSNAP_LUN_KIND_COPY && li.has_parent == 0 && li.attached == 0,
          "orphaned detached copy 3: kind %u, has_parent %u", (unsigned)li.kind, li.has_parent);
    EXPECT(lunsnap_attach(a, 3), LUNSNAP_RESULT_PARENT_GONE);
    EXPECT_OK(lunsnap_delete(a, 3, false));
    EXPECT_OK(lunsnap_delete(a, 4, false));
    EXPECT_OK(lunsnap_delete(a, 2, false));
    EXPECT_OK(lunsnap_delete(a, 7, false));
    EXPECT_OK(lunsnap_delete(a, MAX_LUNS - 1, false));
    /* The deletes released the reservations at once; the data waits in the free queue
     * (background freeing) until lunsnap_reclaim frees it. */
    uint64_t pending = 0;
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    EXPECT_OK(lunsnap_pending_bytes(a, &pending));
    CHECK(p.luns == 0 && p.reserved_bytes == 0 && p.allocated_bytes > 0 && pending == p.allocated_bytes &&
              p.reclaim_queue > 0,
          "after deleting everything: %u LUNs, %llu reserved, %llu allocated, %llu pending, %llu queued", p.luns,
          (unsigned long long)p.reserved_bytes, (unsigned long long)p.allocated_bytes,
          (unsigned long long)pending, (unsigned long long)p.reclaim_queue);
    RECLAIM_ALL(a);
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.allocated_bytes == 0 && p.reclaim_queue == 0, "after deleting everything and reclaiming: %llu "
          "allocated, %llu queued", (unsigned long long)p.allocated_bytes, (unsigned long long)p.reclaim_queue);
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after the LUN tests: %zu violations", nv);
    EXPECT(lunsnap_check(a, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT_OK(lunsnap_close(a));
}

/* ---- I/O arguments --------------------------------------------------------------------- */

static void test_io(void) {
    section = "io";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    static uint8_t w[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(w, sizeof w, 9);
    memset(rd, 0xaa, sizeof rd);

    /* Never-written data reads as zeros. */
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(all_bytes(rd, sizeof rd, 0), "a new LUN does not read as zeros");

    /* Out of range, misaligned, overflowing, NULL, zero-length. */
    uint8_t *const buf = rd;
    EXPECT(lunsnap_read(a, 2, 0, buf, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write(a, 2, 0, w, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_discard(a, 2, 0, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read(a, MAX_LUNS, 0, buf, 512), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_write(a, MAX_LUNS, 0, w, 512), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_discard(a, UINT32_MAX, 0, 512), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);

    EXPECT(lunsnap_read(a, 1, LUN_SIZE, buf, 512), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_write(a, 1, LUN_SIZE - 512, w, 1024), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_discard(a, 1, LUN_SIZE, 512), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_read(a, 1, UINT64_MAX - 511, buf, 1024), LUNSNAP_RESULT_OUT_OF_RANGE);   /* wraps */
    EXPECT(lunsnap_write(a, 1, UINT64_MAX - 511, w, 1024), LUNSNAP_RESULT_OUT_OF_RANGE);    /* wraps */
    EXPECT(lunsnap_discard(a, 1, UINT64_MAX - 511, 1024), LUNSNAP_RESULT_OUT_OF_RANGE);     /* wraps */
    EXPECT(lunsnap_discard(a, 1, 512, UINT64_MAX - 511), LUNSNAP_RESULT_OUT_OF_RANGE);      /* wraps */
    EXPECT(lunsnap_discard(a, 1, UINT64_MAX - 511, UINT64_MAX - 511), LUNSNAP_RESULT_OUT_OF_RANGE);

    EXPECT(lunsnap_read(a, 1, 1, buf, 512), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_read(a, 1, 0, buf, 100), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_read(a, 1, 0, buf, 513), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write(a, 1, 256, w, 512), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write(a, 1, 0, w, 511), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_discard(a, 1, 100, 512), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_discard(a, 1, 0, 1), LUNSNAP_RESULT_MISALIGNED);

    EXPECT(lunsnap_read(a, 1, 0, NULL, 512), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_write(a, 1, 0, NULL, 512), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT_OK(lunsnap_read(a, 1, 0, NULL, 0));
    EXPECT_OK(lunsnap_write(a, 1, 0, NULL, 0));
    EXPECT_OK(lunsnap_read(a, 1, LUN_SIZE, buf, 0));
    EXPECT_OK(lunsnap_write(a, 1, LUN_SIZE, w, 0));
    EXPECT_OK(lunsnap_discard(a, 1, LUN_SIZE, 0));
    EXPECT_OK(lunsnap_discard(a, 1, 0, 0));
    EXPECT(lunsnap_read(a, 1, LUN_SIZE + 512, buf, 0), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_write(a, 1, UINT64_MAX - 511, w, 0), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_read(a, 1, 1, NULL, 0), LUNSNAP_RESULT_MISALIGNED);

    /* None of that wrote anything. */
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(all_bytes(rd, sizeof rd, 0), "refused writes changed the LUN");

    /* Exact round trips at odd sector offsets, across extent boundaries. */
    EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
    EXPECT_OK(lunsnap_write(a, 1, 3 * 512, w + 100 * 512, 20 * 512));
    memcpy(w + 3 * 512, w + 100 * 512, 20 * 512); /* what the LUN now holds */
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "round trip differs");
    EXPECT_OK(lunsnap_read(a, 1, 7 * 512, rd, 9 * 512));
    CHECK(memcmp(rd, w + 7 * 512, 9 * 512) == 0, "partial read differs");
    EXPECT_OK(lunsnap_flush(a));

    /* discard: zeros, whole and partial extents. */
    EXPECT_OK(lunsnap_discard(a, 1, 512, 3 * 512));
    EXPECT_OK(lunsnap_discard(a, 1, 2 * EXTENT, 3 * EXTENT));
    memset(w + 512, 0, 3 * 512);
    memset(w + 2 * EXTENT, 0, 3 * EXTENT);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "discarded ranges do not read as zeros (or others changed)");

    /* flush and reopen: everything comes back. */
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "after flush and reopen: data differs");
    /* Unflushed writes are lost at a reopen (it is a power cut). */
    uint8_t x[512];
    memset(x, 0x3c, sizeof x);
    EXPECT_OK(lunsnap_write(a, 1, 0, x, sizeof x));
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, 512));
    CHECK(memcmp(rd, w, 512) == 0, "an unflushed write survived reopen");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check: %zu violations", nv);
    lunsnap_free(a);
}

/* ---- hosts ---------------------------------------------------------------------------- */

#define HOST_A 0x5006016012345678ull /* granted read-write */
#define HOST_B 0x500601601234abcdull /* granted read */
#define HOST_C 0x21000024ff000001ull /* registered, no grants */
#define HOST_X 0x00000000deadbeefull /* never registered */

/* The registered host ids (at most `cap`), their count as the result. */
static size_t host_ids(lunsnap_array *a, uint64_t *ids, size_t cap) {
    size_t n = 0;
    EXPECT_OK(lunsnap_hosts(a, ids, cap, &n));
    return n;
}

/* The LUNs `host` may discover (at most `cap`), their count as the result. */
static size_t visible(lunsnap_array *a, uint64_t host, uint32_t *nums, size_t cap) {
    size_t n = 0;
    EXPECT_OK(lunsnap_visible_luns(a, host, nums, cap, &n));
    return n;
}

static void test_hosts(void) {
    section = "hosts";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    uint64_t ids[8] = {0};
    size_t n = 99;

    /* A new array: no hosts, security off. */
    EXPECT_OK(lunsnap_hosts(a, NULL, 0, &n));
    CHECK(n == 0, "a new array has %zu hosts", n);
    bool sec = true;
    EXPECT_OK(lunsnap_security_enabled(a, &sec));
    CHECK(!sec, "security is on in a new array");
    EXPECT(lunsnap_security_enabled(a, NULL), LUNSNAP_RESULT_NULL_POINTER);

    /* add_host: ids of every shape, NULL and empty names, the longest name. */
    EXPECT_OK(lunsnap_add_host(a, HOST_B, "backup-host"));
    EXPECT_OK(lunsnap_add_host(a, HOST_A, "db-host"));
    EXPECT_OK(lunsnap_add_host(a, HOST_C, NULL));
    EXPECT_OK(lunsnap_add_host(a, 0, ""));
    char longest[57], too_long[58];
    memset(longest, 'n', 56);
    longest[56] = '\0';
    memset(too_long, 'n', 57);
    too_long[57] = '\0';
    EXPECT_OK(lunsnap_add_host(a, UINT64_MAX, longest));
    EXPECT(lunsnap_add_host(a, 0x77, too_long), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_add_host(a, 0x77, "\xff\xfe not utf-8"), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_add_host(a, HOST_A, "again"), LUNSNAP_RESULT_HOST_EXISTS);
    EXPECT(lunsnap_add_host(a, HOST_C, NULL), LUNSNAP_RESULT_HOST_EXISTS);
    EXPECT(lunsnap_add_host(a, 0, "zero"), LUNSNAP_RESULT_HOST_EXISTS);

    /* hosts(): count query, partial fill, increasing order, NULL arguments. */
    n = host_ids(a, NULL, 0);
    CHECK(n == 5, "hosts: %zu, want 5", n);
    for (size_t i = 0; i < 8; i++) {
        ids[i] = 42;
    }
    n = 0;
    EXPECT_OK(lunsnap_hosts(a, ids, 2, &n));
    CHECK(n == 5 && ids[0] == 0 && ids[1] == HOST_C && ids[2] == 42, "hosts(capacity 2): %zu, [%llx %llx %llx]",
          n, (unsigned long long)ids[0], (unsigned long long)ids[1], (unsigned long long)ids[2]);
    n = host_ids(a, ids, 8);
    CHECK(n == 5 && ids[0] == 0 && ids[1] == HOST_C && ids[2] == HOST_A && ids[3] == HOST_B &&
              ids[4] == UINT64_MAX && ids[5] == 42,
          "hosts: not every id in increasing order (%zu)", n);
    n = 99;
    EXPECT(lunsnap_hosts(a, NULL, 4, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_hosts(a, ids, 4, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_hosts(a, NULL, 0, NULL), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(n == 99, "failed hosts wrote *out_count");

    /* host_name: like lunsnap_check_message. */
    section = "host_name";
    char buf[64];
    size_t len = 99;
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(lunsnap_host_name(a, HOST_B, buf, sizeof buf, &len));
    CHECK(len == 11 && strcmp(buf, "backup-host") == 0, "name of B: \"%s\" (len %zu)", buf, len);
    len = 99;
    EXPECT_OK(lunsnap_host_name(a, HOST_B, NULL, 0, &len));
    CHECK(len == 11, "length query: %zu, want 11", len);
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(lunsnap_host_name(a, HOST_B, buf, 7, &len));
    CHECK(len == 11 && strcmp(buf, "backup") == 0 && buf[7] == 'x', "truncated name: \"%s\" (len %zu)", buf, len);
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(lunsnap_host_name(a, HOST_B, buf, 1, &len));
    CHECK(buf[0] == '\0' && buf[1] == 'x', "buf_len 1: not just a NUL");
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(lunsnap_host_name(a, HOST_B, buf, 0, &len));
    CHECK(buf[0] == 'x', "buf_len 0: the buffer was written");
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(lunsnap_host_name(a, HOST_C, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0', "NULL name: \"%s\" (len %zu)", buf, len);
    EXPECT_OK(lunsnap_host_name(a, 0, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0', "empty name: len %zu", len);
    EXPECT_OK(lunsnap_host_name(a, UINT64_MAX, buf, sizeof buf, &len));
    CHECK(len == 56 && strcmp(buf, longest) == 0, "56-byte name: len %zu", len);
    EXPECT_OK(lunsnap_host_name(a, UINT64_MAX, buf, 57, &len));
    CHECK(len == 56 && strcmp(buf, longest) == 0, "56-byte name in 57 bytes: len %zu", len);
    len = 99;
    memset(buf, 'x', sizeof buf);
    EXPECT(lunsnap_host_name(a, HOST_X, buf, sizeof buf, &len), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT(lunsnap_host_name(a, 0x77, buf, sizeof buf, &len), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT(lunsnap_host_name(a, HOST_A, buf, sizeof buf, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_host_name(a, HOST_A, NULL, 8, &len), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(len == 99 && buf[0] == 'x', "failed host_name wrote its out-parameters");

    /* Hosts are committed: they survive a power cut (reopen). */
    section = "hosts";
    EXPECT_OK(lunsnap_reopen(a));
    n = host_ids(a, ids, 8);
    CHECK(n == 5 && ids[2] == HOST_A, "after reopen: %zu hosts", n);
    EXPECT_OK(lunsnap_host_name(a, HOST_A, buf, sizeof buf, &len));
    CHECK(strcmp(buf, "db-host") == 0, "after reopen: name of A \"%s\"", buf);

    /* remove_host. */
    EXPECT(lunsnap_remove_host(a, HOST_X), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT_OK(lunsnap_remove_host(a, 0));
    EXPECT_OK(lunsnap_remove_host(a, UINT64_MAX));
    EXPECT(lunsnap_remove_host(a, 0), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT(lunsnap_host_name(a, 0, buf, sizeof buf, &len), LUNSNAP_RESULT_NO_SUCH_HOST);
    n = host_ids(a, ids, 8);
    CHECK(n == 3 && ids[0] == HOST_C && ids[1] == HOST_A && ids[2] == HOST_B, "after removing two: %zu hosts", n);
    /* A removed id may be registered again. */
    EXPECT_OK(lunsnap_add_host(a, 0, "again"));
    EXPECT_OK(lunsnap_host_name(a, 0, buf, sizeof buf, &len));
    CHECK(strcmp(buf, "again") == 0, "re-added host 0: name \"%s\"", buf);
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after the host tests: %zu violations", nv);
    EXPECT_OK(lunsnap_close(a));
}

/* ---- grants and security ----------------------------------------------------------------- */

static void test_grants(void) {
    section = "grants";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    static uint8_t v1[LUN_SIZE], v2[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(v1, sizeof v1, 71);
    fill_bytes(v2, sizeof v2, 72);
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
    EXPECT_OK(lunsnap_write(a, 1, 0, v1, sizeof v1));
    EXPECT_OK(lunsnap_add_host(a, HOST_A, "db-host"));
    EXPECT_OK(lunsnap_add_host(a, HOST_B, "backup-host"));
    EXPECT_OK(lunsnap_add_host(a, HOST_C, "other-host"));
    lunsnap_pool_info p0 = {.struct_size = sizeof p0}, p = {.struct_size = sizeof p};
    EXPECT_OK(lunsnap_get_pool_info(a, &p0));

    /* Access values C may pass that are not a lunsnap_access: refused, nothing changes. */
    static const uint32_t bad_access[] = {0, 3, 4, 0x100, 0x80000001u, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad_access / sizeof bad_access[0]; i++) {
        lunsnap_result r = lunsnap_grant(a, 1, HOST_A, bad_access[i]);
        CHECK(r == LUNSNAP_RESULT_INVALID_ARGUMENT, "grant with access %u: got %u (%s)", bad_access[i],
              (unsigned)r, lunsnap_strerror(r));
    }
    /* The access is checked first: even with a bad handle. */
    EXPECT(lunsnap_grant(NULL, 1, HOST_A, 0), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.generation == p0.generation, "refused grants committed");

    /* Unknown hosts, missing and out-of-range LUNs. */
    EXPECT(lunsnap_grant(a, 1, HOST_X, LUNSNAP_ACCESS_READ), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT(lunsnap_grant(a, 3, HOST_A, LUNSNAP_ACCESS_READ), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_grant(a, MAX_LUNS, HOST_A, LUNSNAP_ACCESS_READ), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_grant(a, UINT32_MAX, HOST_A, LUNSNAP_ACCESS_READ_WRITE), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_revoke(a, 1, HOST_A), LUNSNAP_RESULT_NOT_GRANTED);
    EXPECT(lunsnap_revoke(a, 1, HOST_X), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT(lunsnap_revoke(a, 3, HOST_A), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_revoke(a, MAX_LUNS, HOST_A), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.generation == p0.generation, "refused grants/revokes committed");

    EXPECT_OK(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ_WRITE));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_B, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_grant(a, 2, HOST_A, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_grant(a, 2, HOST_A, LUNSNAP_ACCESS_READ_WRITE)); /* replaces */

    /* Security disabled: every host (even an unknown one) sees and writes everything. */
    section = "security off";
    uint32_t nums[8];
    size_t n = visible(a, HOST_C, nums, 8);
    CHECK(n == 2 && nums[0] == 1 && nums[1] == 2, "security off: host C sees %zu LUNs", n);
    n = visible(a, HOST_X, nums, 8);
    CHECK(n == 2, "security off: an unknown host sees %zu LUNs", n);
    EXPECT_OK(lunsnap_read_as(a, HOST_C, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "security off: host C reads other data");
    EXPECT_OK(lunsnap_write_as(a, HOST_B, 2, 0, v2, 4096));
    EXPECT_OK(lunsnap_discard_as(a, HOST_X, 2, 0, 4096));

    /* Security enabled. */
    section = "security on";
    EXPECT_OK(lunsnap_set_security(a, true));
    bool sec = false;
    EXPECT_OK(lunsnap_security_enabled(a, &sec));
    CHECK(sec, "security_enabled says off after set_security(true)");
    EXPECT_OK(lunsnap_set_security(a, true)); /* again: no change */

    /* Discovery. */
    for (size_t i = 0; i < 8; i++) {
        nums[i] = 42;
    }
    n = visible(a, HOST_A, nums, 8);
    CHECK(n == 2 && nums[0] == 1 && nums[1] == 2 && nums[2] == 42, "A sees %zu LUNs", n);
    n = visible(a, HOST_B, nums, 8);
    CHECK(n == 1 && nums[0] == 1, "B sees %zu LUNs (first %u)", n, nums[0]);
    n = visible(a, HOST_C, nums, 8);
    CHECK(n == 0, "C (no grants) sees %zu LUNs", n);
    n = visible(a, HOST_X, nums, 8);
    CHECK(n == 0, "an unknown host sees %zu LUNs", n);
    nums[0] = nums[1] = 42;
    n = 0;
    EXPECT_OK(lunsnap_visible_luns(a, HOST_A, nums, 1, &n));
    CHECK(n == 2 && nums[0] == 1 && nums[1] == 42, "visible_luns(capacity 1): %zu [%u %u]", n, nums[0], nums[1]);
    EXPECT_OK(lunsnap_visible_luns(a, HOST_A, NULL, 0, &n));
    CHECK(n == 2, "visible_luns count query: %zu", n);
    n = 99;
    EXPECT(lunsnap_visible_luns(a, HOST_A, NULL, 4, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_visible_luns(a, HOST_A, nums, 4, NULL), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(n == 99, "failed visible_luns wrote *out_count");

    /* An ungranted LUN is indistinguishable from a missing one. */
    memset(rd, 0xaa, sizeof rd);
    EXPECT(lunsnap_read_as(a, HOST_C, 1, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read_as(a, HOST_C, 5, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read_as(a, HOST_X, 1, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read_as(a, HOST_B, 2, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write_as(a, HOST_C, 1, 0, v2, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write_as(a, HOST_B, 2, 0, v2, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_discard_as(a, HOST_C, 1, 0, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_discard_as(a, HOST_X, 1, 0, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    /* Even for misaligned or out-of-range requests: nothing about the LUN leaks. */
    EXPECT(lunsnap_read_as(a, HOST_C, 1, 1, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read_as(a, HOST_C, 1, LUN_SIZE, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    CHECK(all_bytes(rd, 512, 0xaa), "a refused read_as wrote the buffer");
    /* Out of the array's range: the same code for every host. */
    EXPECT(lunsnap_read_as(a, HOST_A, MAX_LUNS, 0, rd, 512), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_read_as(a, HOST_C, MAX_LUNS, 0, rd, 512), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);

    /* A read grant reads but refuses writes and discards. */
    EXPECT_OK(lunsnap_read_as(a, HOST_B, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "B reads other data than LUN 1 holds");
    EXPECT(lunsnap_write_as(a, HOST_B, 1, 0, v2, sizeof v2), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT(lunsnap_write_as(a, HOST_B, 1, 0, v2, 0), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT(lunsnap_discard_as(a, HOST_B, 1, 0, 4096), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "refused writes as B changed LUN 1");

    /* A read-write grant: the usual I/O, with the usual argument checks. */
    EXPECT_OK(lunsnap_write_as(a, HOST_A, 1, 0, v2, sizeof v2));
    EXPECT_OK(lunsnap_read_as(a, HOST_B, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v2, sizeof rd) == 0, "B does not read what A wrote");
    EXPECT_OK(lunsnap_discard_as(a, HOST_A, 1, 0, 4096));
    memset(v2, 0, 4096);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v2, sizeof rd) == 0, "discard_as by A: LUN 1 differs");
    EXPECT(lunsnap_read_as(a, HOST_A, 1, 0, NULL, 512), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_write_as(a, HOST_A, 1, 0, NULL, 512), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT_OK(lunsnap_read_as(a, HOST_A, 1, 0, NULL, 0));
    EXPECT_OK(lunsnap_write_as(a, HOST_A, 1, 0, NULL, 0));
    EXPECT(lunsnap_read_as(a, HOST_A, 1, 100, rd, 512), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write_as(a, HOST_A, 1, 0, v2, 100), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_discard_as(a, HOST_A, 1, 0, 1), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_read_as(a, HOST_A, 1, LUN_SIZE, rd, 512), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_write_as(a, HOST_A, 1, UINT64_MAX - 511, v2, 1024), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_discard_as(a, HOST_A, 1, 512, UINT64_MAX - 511), LUNSNAP_RESULT_OUT_OF_RANGE);

    /* The array's own access (plain read/write) is not filtered. */
    EXPECT_OK(lunsnap_write(a, 1, 0, v1, sizeof v1));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "plain I/O with security on differs");

    /* A grant replaced: B gets read-write, then read again. */
    EXPECT_OK(lunsnap_grant(a, 1, HOST_B, LUNSNAP_ACCESS_READ_WRITE));
    EXPECT_OK(lunsnap_write_as(a, HOST_B, 1, 0, v1, 512));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_B, LUNSNAP_ACCESS_READ));
    EXPECT(lunsnap_write_as(a, HOST_B, 1, 0, v1, 512), LUNSNAP_RESULT_READ_ONLY_ACCESS);

    /* Copies: a new one has no grants; attach and detach keep them; delete drops them. */
    section = "grants on copies";
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, true));
    EXPECT(lunsnap_read_as(a, HOST_A, 3, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read_as(a, HOST_B, 3, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    n = visible(a, HOST_A, nums, 8);
    CHECK(n == 2, "A sees the new copy (%zu LUNs)", n);
    EXPECT_OK(lunsnap_grant(a, 3, HOST_B, LUNSNAP_ACCESS_READ_WRITE));
    EXPECT_OK(lunsnap_read_as(a, HOST_B, 3, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "B reads other data from copy 3");
    EXPECT_OK(lunsnap_detach(a, 3));
    n = visible(a, HOST_B, nums, 8);
    CHECK(n == 2 && nums[0] == 1 && nums[1] == 3, "B lost the detached copy (%zu LUNs)", n);
    EXPECT(lunsnap_read_as(a, HOST_B, 3, 0, rd, 512), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_read_as(a, HOST_C, 3, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT_OK(lunsnap_attach(a, 3));
    EXPECT_OK(lunsnap_write_as(a, HOST_B, 3, 0, v2, 512));
    EXPECT(lunsnap_revoke(a, 3, HOST_A), LUNSNAP_RESULT_NOT_GRANTED);
    EXPECT_OK(lunsnap_delete(a, 3, false));
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, true));
    EXPECT(lunsnap_read_as(a, HOST_B, 3, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_revoke(a, 3, HOST_B), LUNSNAP_RESULT_NOT_GRANTED);

    /* Revoke. */
    section = "revoke";
    EXPECT_OK(lunsnap_revoke(a, 2, HOST_A));
    EXPECT(lunsnap_revoke(a, 2, HOST_A), LUNSNAP_RESULT_NOT_GRANTED);
    EXPECT(lunsnap_read_as(a, HOST_A, 2, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    n = visible(a, HOST_A, nums, 8);
    CHECK(n == 1 && nums[0] == 1, "A after revoke: %zu LUNs", n);

    /* Grants and the security switch are committed: they survive a power cut. */
    EXPECT_OK(lunsnap_reopen(a));
    sec = false;
    EXPECT_OK(lunsnap_security_enabled(a, &sec));
    CHECK(sec, "security off after reopen");
    n = visible(a, HOST_B, nums, 8);
    CHECK(n == 1 && nums[0] == 1, "B after reopen: %zu LUNs", n);
    EXPECT(lunsnap_write_as(a, HOST_B, 1, 0, v1, 512), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT_OK(lunsnap_write_as(a, HOST_A, 1, 0, v1, 512));

    /* Removing a host removes its grants: registered again, it has none. */
    EXPECT_OK(lunsnap_remove_host(a, HOST_B));
    EXPECT(lunsnap_read_as(a, HOST_B, 1, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_revoke(a, 1, HOST_B), LUNSNAP_RESULT_NO_SUCH_HOST);
    EXPECT_OK(lunsnap_add_host(a, HOST_B, "backup-host"));
    EXPECT(lunsnap_revoke(a, 1, HOST_B), LUNSNAP_RESULT_NOT_GRANTED);
    n = visible(a, HOST_B, nums, 8);
    CHECK(n == 0, "a re-registered host kept %zu grants", n);
    /* Deleting a LUN removes the grants on it. */
    EXPECT_OK(lunsnap_grant(a, 2, HOST_B, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_delete(a, 2, false));
    EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
    EXPECT(lunsnap_read_as(a, HOST_B, 2, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check with grants: %zu violations", nv);

    /* Security disabled again: every host sees everything. */
    section = "security off";
    EXPECT_OK(lunsnap_set_security(a, false));
    EXPECT_OK(lunsnap_security_enabled(a, &sec));
    CHECK(!sec, "security on after set_security(false)");
    n = visible(a, HOST_C, nums, 8);
    CHECK(n == 3, "security off again: C sees %zu LUNs", n);
    EXPECT_OK(lunsnap_write_as(a, HOST_C, 1, 0, v1, 512));
    EXPECT_OK(lunsnap_close(a));
}

/* ---- online / offline ---------------------------------------------------------------------- */

static void test_online(void) {
    section = "online";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    static uint8_t v1[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(v1, sizeof v1, 81);
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_write(a, 1, 0, v1, sizeof v1));
    EXPECT_OK(lunsnap_add_host(a, HOST_A, "db-host"));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ_WRITE));
    lunsnap_lun_info li = {.struct_size = sizeof li};
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.online == 1, "a new LUN is not online");

    EXPECT(lunsnap_set_online(a, 2, false), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_set_online(a, MAX_LUNS, false), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_set_online(a, UINT32_MAX, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);

    EXPECT_OK(lunsnap_set_online(a, 1, false));
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.online == 0 && li.size == LUN_SIZE && li.attached == 1, "offline LUN 1: online %u", li.online);

    /* I/O refused, buffers untouched, data kept. */
    memset(rd, 0xaa, sizeof rd);
    EXPECT(lunsnap_read(a, 1, 0, rd, 512), LUNSNAP_RESULT_OFFLINE);
    EXPECT(lunsnap_write(a, 1, 0, v1, 512), LUNSNAP_RESULT_OFFLINE);
    EXPECT(lunsnap_discard(a, 1, 0, 512), LUNSNAP_RESULT_OFFLINE);
    EXPECT(lunsnap_read_as(a, HOST_A, 1, 0, rd, 512), LUNSNAP_RESULT_OFFLINE);
    EXPECT(lunsnap_write_as(a, HOST_A, 1, 0, v1, 512), LUNSNAP_RESULT_OFFLINE);
    EXPECT(lunsnap_discard_as(a, HOST_A, 1, 0, 512), LUNSNAP_RESULT_OFFLINE);
    CHECK(all_bytes(rd, 512, 0xaa), "a refused read of an offline LUN wrote the buffer");
    /* With security on, a host that may not see the LUN is told it is missing, not offline. */
    EXPECT_OK(lunsnap_set_security(a, true));
    EXPECT(lunsnap_read_as(a, HOST_X, 1, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_read_as(a, HOST_A, 1, 0, rd, 512), LUNSNAP_RESULT_OFFLINE);
    uint32_t nums[4];
    size_t n = visible(a, HOST_A, nums, 4);
    CHECK(n == 1 && nums[0] == 1, "an offline LUN is not discoverable by its host (%zu)", n);
    EXPECT_OK(lunsnap_set_security(a, false));

    /* Management works on an offline LUN; a copy of it starts online. */
    EXPECT_OK(lunsnap_set_online(a, 1, false)); /* again: no change */
    EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
    EXPECT_OK(lunsnap_get_lun_info(a, 2, &li));
    CHECK(li.online == 1, "a copy of an offline LUN is offline");
    EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "copy of offline LUN 1 differs");
    EXPECT_OK(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_set_online(a, 2, false));
    EXPECT_OK(lunsnap_attach(a, 2));
    EXPECT_OK(lunsnap_restore(a, 2));
    EXPECT_OK(lunsnap_detach(a, 2));
    EXPECT_OK(lunsnap_get_lun_info(a, 2, &li));
    CHECK(li.online == 0 && li.attached == 0, "offline copy 2 after detach: online %u attached %u", li.online,
          li.attached);
    EXPECT(lunsnap_read(a, 2, 0, rd, 512), LUNSNAP_RESULT_DETACHED);
    EXPECT_OK(lunsnap_delete(a, 2, false));

    /* Persistent: still offline after a power cut. */
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.online == 0, "LUN 1 came back online after reopen");
    EXPECT(lunsnap_read(a, 1, 0, rd, 512), LUNSNAP_RESULT_OFFLINE);

    /* Back online: I/O works and the data is intact. */
    EXPECT_OK(lunsnap_set_online(a, 1, true));
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.online == 1, "set_online(true): online %u", li.online);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, v1, sizeof rd) == 0, "LUN 1 back online differs");
    EXPECT_OK(lunsnap_write(a, 1, 0, v1, 512));
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.online == 1, "online state not persistent");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after online tests: %zu violations", nv);
    lunsnap_free(a);
}

/* ---- consistency groups ---------------------------------------------------------------------- */

/* The number of LUNs in `a`. */
static size_t lun_count(lunsnap_array *a) {
    size_t n = 0;
    EXPECT_OK(lunsnap_luns(a, NULL, 0, &n));
    return n;
}

static void test_groups(void) {
    section = "create_copies";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    static uint8_t v[3][LUN_SIZE / 4], w[LUN_SIZE / 4], rd[LUN_SIZE / 4];
    const uint64_t sz = LUN_SIZE / 4;
    for (uint32_t i = 0; i < 3; i++) {
        fill_bytes(v[i], sz, (uint8_t)(90 + i));
        EXPECT_OK(lunsnap_create_lun(a, 1 + i, sz));
        EXPECT_OK(lunsnap_write(a, 1 + i, 0, v[i], sz));
    }
    lunsnap_pool_info p0 = {.struct_size = sizeof p0}, p = {.struct_size = sizeof p};
    EXPECT_OK(lunsnap_get_pool_info(a, &p0));

    /* Refused groups change nothing. */
    const uint32_t parents[3] = {1, 2, 3}, copies[3] = {11, 12, 13};
    EXPECT(lunsnap_create_copies(a, parents, copies, 0, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_create_copies(a, NULL, NULL, 0, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_create_copies(a, NULL, copies, 3, true), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_create_copies(a, parents, NULL, 3, true), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_create_copies(a, parents, copies, SIZE_MAX, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_create_copies(a, parents, copies, SIZE_MAX / 2, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
    {
        const uint32_t bad_p[3] = {1, 5, 3}; /* 5 is missing */
        EXPECT(lunsnap_create_copies(a, bad_p, copies, 3, true), LUNSNAP_RESULT_NO_SUCH_LUN);
        /* The group's shape is judged first, whatever the order of the pairs and
         * whatever exists: copy 3 is also a parent in the group. */
        const uint32_t exists[3] = {11, 12, 3};
        EXPECT(lunsnap_create_copies(a, parents, exists, 3, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        CHECK(last_message_has(NULL, "lunsnap_create_copies: invalid argument: a copy in the group is also a parent"),
              "create_copies shape message: \"%s\"", last_message(NULL));
        /* A copy number in use that is not a parent in the group. */
        const uint32_t ex_p[2] = {1, 2}, ex_c[2] = {11, 3};
        EXPECT(lunsnap_create_copies(a, ex_p, ex_c, 2, true), LUNSNAP_RESULT_LUN_EXISTS);
        /* Issue 16's groups, each in both orders: {0,10},{10,11} (LUN 0 and 10 do not
         * exist) and {1,0},{0,11} are refused for their shape. */
        const uint32_t i1_p[2] = {0, 10}, i1_c[2] = {10, 11}, i1_ps[2] = {10, 0}, i1_cs[2] = {11, 10};
        EXPECT(lunsnap_create_copies(a, i1_p, i1_c, 2, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        EXPECT(lunsnap_create_copies(a, i1_ps, i1_cs, 2, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        const uint32_t i2_p[2] = {1, 0}, i2_c[2] = {0, 11}, i2_ps[2] = {0, 1}, i2_cs[2] = {11, 0};
        EXPECT(lunsnap_create_copies(a, i2_p, i2_c, 2, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        EXPECT(lunsnap_create_copies(a, i2_ps, i2_cs, 2, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        EXPECT(lunsnap_create_copies(a, i2_ps, i2_cs, 2, false), LUNSNAP_RESULT_INVALID_ARGUMENT);
        /* Then each pair in turn, as lunsnap_create_copy checks it (number in range,
         * parent exists, number free): the first failing pair names the code. */
        const uint32_t t_p[2] = {5, 1}, t_c[2] = {11, 3}, t_ps[2] = {1, 5}, t_cs[2] = {3, 11};
        EXPECT(lunsnap_create_copies(a, t_p, t_c, 2, true), LUNSNAP_RESULT_NO_SUCH_LUN);
        EXPECT(lunsnap_create_copies(a, t_ps, t_cs, 2, true), LUNSNAP_RESULT_LUN_EXISTS);
        const uint32_t one_p[1] = {5}, one_range[1] = {MAX_LUNS}, one_used[1] = {3};
        EXPECT(lunsnap_create_copies(a, one_p, one_range, 1, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
        EXPECT(lunsnap_create_copies(a, one_p, one_used, 1, true), LUNSNAP_RESULT_NO_SUCH_LUN);
        const uint32_t twice[3] = {11, 12, 11};
        EXPECT(lunsnap_create_copies(a, parents, twice, 3, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        const uint32_t chain_p[2] = {1, 2}, chain_c[2] = {11, 1}; /* parent 1 also a copy */
        EXPECT(lunsnap_create_copies(a, chain_p, chain_c, 2, true), LUNSNAP_RESULT_INVALID_ARGUMENT);
        const uint32_t range[3] = {11, 12, MAX_LUNS};
        EXPECT(lunsnap_create_copies(a, parents, range, 3, false), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
        const uint32_t range_p[3] = {1, 2, UINT32_MAX};
        EXPECT(lunsnap_create_copies(a, range_p, copies, 3, false), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    }
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.luns == 3 && p.generation == p0.generation && p.reserved_bytes == p0.reserved_bytes,
          "refused create_copies changed the array: %u LUNs", p.luns);
    lunsnap_lun_info li = {.struct_size = sizeof li};
    EXPECT(lunsnap_get_lun_info(a, 11, &li), LUNSNAP_RESULT_NO_SUCH_LUN);

    /* Not enough space for the whole group, though there is for part of it: nothing. */
    {
        lunsnap_array *q = new_array(__LINE__);
        if (q) {
            lunsnap_pool_info qp = {.struct_size = sizeof qp}, qp2 = {.struct_size = sizeof qp2};
            EXPECT_OK(lunsnap_get_pool_info(q, &qp));
            /* 30 % and 25 %: a copy of either fits, copies of both do not. */
            EXPECT_OK(lunsnap_create_lun(q, 1, qp.capacity_bytes / 10 * 3 / EXTENT * EXTENT));
            EXPECT_OK(lunsnap_create_lun(q, 2, qp.capacity_bytes / 4 / EXTENT * EXTENT));
            EXPECT_OK(lunsnap_get_pool_info(q, &qp));
            const uint32_t qp_[2] = {1, 2}, qc[2] = {3, 4};
            EXPECT(lunsnap_create_copies(q, qp_, qc, 2, true), LUNSNAP_RESULT_NO_SPACE);
            EXPECT_OK(lunsnap_get_pool_info(q, &qp2));
            CHECK(qp2.luns == 2 && qp2.reserved_bytes == qp.reserved_bytes && qp2.generation == qp.generation,
                  "create_copies without space: %u LUNs", qp2.luns);
            /* Detached, they need no space; attaching them all does, and is refused whole. */
            EXPECT_OK(lunsnap_create_copies(q, qp_, qc, 2, false));
            EXPECT(lunsnap_attach_many(q, qc, 2), LUNSNAP_RESULT_NO_SPACE);
            lunsnap_lun_info qi3 = {.struct_size = sizeof qi3}, qi4 = {.struct_size = sizeof qi4};
            EXPECT_OK(lunsnap_get_lun_info(q, 3, &qi3));
            EXPECT_OK(lunsnap_get_lun_info(q, 4, &qi4));
            CHECK(qi3.attached == 0 && qi4.attached == 0, "refused attach_many attached a copy");
            EXPECT_OK(lunsnap_attach_many(q, qc + 1, 1));
            EXPECT_OK(lunsnap_get_lun_info(q, 4, &qi4));
            CHECK(qi4.attached == 1, "attach_many of one copy did not attach it");
            lunsnap_free(q);
        }
    }

    /* An attached group: one point in time, the same generation for every copy. */
    EXPECT_OK(lunsnap_create_copies(a, parents, copies, 3, true));
    uint64_t gen = 0;
    for (uint32_t i = 0; i < 3; i++) {
        EXPECT_OK(lunsnap_get_lun_info(a, copies[i], &li));
        CHECK(li.kind == LUNSNAP_LUN_KIND_COPY && li.has_parent == 1 && li.parent == parents[i] &&
                  li.attached == 1 && li.online == 1 && li.size == sz,
              "group copy %u: fields wrong", copies[i]);
        if (i == 0) {
            gen = li.created_generation;
        }
        CHECK(li.created_generation == gen && li.attached_generation == gen,
              "group copy %u: generation %llu/%llu, copy 11 has %llu", copies[i],
              (unsigned long long)li.created_generation, (unsigned long long)li.attached_generation,
              (unsigned long long)gen);
        EXPECT_OK(lunsnap_read(a, copies[i], 0, rd, sz));
        CHECK(memcmp(rd, v[i], sz) == 0, "group copy %u is not its parent's image", copies[i]);
    }
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.luns == 6 && p.generation == gen && p.reserved_bytes == p0.reserved_bytes + 3 * sz,
          "after create_copies: %u LUNs, generation %llu", p.luns, (unsigned long long)p.generation);
    EXPECT(lunsnap_create_copies(a, parents, copies, 3, true), LUNSNAP_RESULT_LUN_EXISTS);

    /* A detached group; a detached parent refuses an attached group. */
    const uint32_t dcopies[3] = {4, 5, 6};
    EXPECT_OK(lunsnap_create_copies(a, parents, dcopies, 3, false));
    for (uint32_t i = 0; i < 3; i++) {
        EXPECT_OK(lunsnap_get_lun_info(a, dcopies[i], &li));
        CHECK(li.attached == 0 && li.parent == parents[i] && li.reserved_bytes == 0, "detached group copy %u",
              dcopies[i]);
    }
    {
        const uint32_t dp[2] = {1, 4}, dc[2] = {14, 15};
        EXPECT(lunsnap_create_copies(a, dp, dc, 2, true), LUNSNAP_RESULT_PARENT_DETACHED);
        EXPECT(lunsnap_get_lun_info(a, 14, &li), LUNSNAP_RESULT_NO_SUCH_LUN);
    }

    /* attach_many: refused groups change nothing. */
    section = "attach_many";
    EXPECT(lunsnap_attach_many(a, dcopies, 0), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_attach_many(a, NULL, 0), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_attach_many(a, NULL, 3), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_attach_many(a, dcopies, SIZE_MAX), LUNSNAP_RESULT_INVALID_ARGUMENT);
    {
        const uint32_t twice[3] = {4, 5, 4};
        EXPECT(lunsnap_attach_many(a, twice, 3), LUNSNAP_RESULT_INVALID_ARGUMENT);
        const uint32_t not_copy[3] = {4, 5, 3};
        EXPECT(lunsnap_attach_many(a, not_copy, 3), LUNSNAP_RESULT_NOT_A_COPY);
        const uint32_t missing[3] = {4, 5, 10};
        EXPECT(lunsnap_attach_many(a, missing, 3), LUNSNAP_RESULT_NO_SUCH_LUN);
        const uint32_t range[2] = {4, MAX_LUNS};
        EXPECT(lunsnap_attach_many(a, range, 2), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    }
    for (uint32_t i = 0; i < 3; i++) {
        EXPECT_OK(lunsnap_get_lun_info(a, dcopies[i], &li));
        CHECK(li.attached == 0, "a refused attach_many attached copy %u", dcopies[i]);
    }
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.luns == 9 && p.reserved_bytes == p0.reserved_bytes + 3 * sz, "refused attach_many: %u LUNs", p.luns);

    /* Change the parents, then attach the detached group and refresh the attached one. */
    for (uint32_t i = 0; i < 3; i++) {
        fill_bytes(w, sz, (uint8_t)(100 + i));
        EXPECT_OK(lunsnap_write(a, parents[i], 0, w, sz));
    }
    EXPECT_OK(lunsnap_attach_many(a, dcopies, 3));
    EXPECT_OK(lunsnap_attach_many(a, copies, 3));
    uint64_t g1 = 0, g2 = 0;
    for (uint32_t i = 0; i < 3; i++) {
        fill_bytes(w, sz, (uint8_t)(100 + i));
        EXPECT_OK(lunsnap_read(a, dcopies[i], 0, rd, sz));
        CHECK(memcmp(rd, w, sz) == 0, "attach_many: copy %u is not its parent's image", dcopies[i]);
        EXPECT_OK(lunsnap_read(a, copies[i], 0, rd, sz));
        CHECK(memcmp(rd, w, sz) == 0, "attach_many (refresh): copy %u is not its parent's image", copies[i]);
        EXPECT_OK(lunsnap_get_lun_info(a, dcopies[i], &li));
        g1 = i == 0 ? li.attached_generation : g1;
        CHECK(li.attached == 1 && li.attached_generation == g1, "copy %u attached at %llu, group at %llu",
              dcopies[i], (unsigned long long)li.attached_generation, (unsigned long long)g1);
        EXPECT_OK(lunsnap_get_lun_info(a, copies[i], &li));
        g2 = i == 0 ? li.attached_generation : g2;
        CHECK(li.attached_generation == g2 && g2 > g1, "copy %u refreshed at %llu, group at %llu (> %llu)",
              copies[i], (unsigned long long)li.attached_generation, (unsigned long long)g2,
              (unsigned long long)g1);
    }

    /* One point in time even when a copy in the group is the parent of another: copy
     * 8's parent 7 is itself a copy (of 1) refreshed in the same group. 7 gets LUN 1
     * now, 8 gets 7 as it was before the group. */
    EXPECT_OK(lunsnap_create_copy(a, 1, 7, true));
    EXPECT_OK(lunsnap_create_copy(a, 7, 8, true));
    fill_bytes(w, sz, 111);
    EXPECT_OK(lunsnap_write(a, 7, 0, w, sz));
    uint8_t *w2 = v[0]; /* reuse: LUN 1's new contents */
    fill_bytes(w2, sz, 112);
    EXPECT_OK(lunsnap_write(a, 1, 0, w2, sz));
    const uint32_t chain[2] = {8, 7};
    EXPECT_OK(lunsnap_attach_many(a, chain, 2));
    EXPECT_OK(lunsnap_read(a, 7, 0, rd, sz));
    CHECK(memcmp(rd, w2, sz) == 0, "copy 7 is not LUN 1's image");
    EXPECT_OK(lunsnap_read(a, 8, 0, rd, sz));
    CHECK(memcmp(rd, w, sz) == 0, "copy 8 is not copy 7's image from before the group");

    /* Grants: copies made in a group have none (security on). */
    EXPECT_OK(lunsnap_add_host(a, HOST_A, "db-host"));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ_WRITE));
    EXPECT_OK(lunsnap_set_security(a, true));
    const uint32_t gp[1] = {1}, gc[1] = {9};
    EXPECT_OK(lunsnap_create_copies(a, gp, gc, 1, true));
    EXPECT(lunsnap_read_as(a, HOST_A, 9, 0, rd, 512), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT_OK(lunsnap_grant(a, 9, HOST_A, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_attach_many(a, gc, 1)); /* keeps the grant */
    EXPECT_OK(lunsnap_read_as(a, HOST_A, 9, 0, rd, sz));
    CHECK(memcmp(rd, w2, sz) == 0, "copy 9 differs");

    /* Everything survives a power cut. */
    EXPECT_OK(lunsnap_reopen(a));
    CHECK(lun_count(a) == 12, "after reopen: %zu LUNs, want 12", lun_count(a));
    EXPECT_OK(lunsnap_read(a, 8, 0, rd, sz));
    CHECK(memcmp(rd, w, sz) == 0, "copy 8 after reopen differs");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after the group tests: %zu violations", nv);
    EXPECT_OK(lunsnap_close(a));
}

/* A failing device write in the middle of each new management operation's commit:
 * DEVICE_IO, the handle refuses changes (POISONED), and reopening gives the state
 * from before the operation. */
static void test_failing_access_commits(void) {
    section = "failing access commits";
    hostdev d;
    if (!hostdev_init(&d, 512, 16384)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, false));
    EXPECT_OK(lunsnap_add_host(a, HOST_A, "a"));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ));
    static const char *names[] = {"add_host",   "remove_host", "grant",         "revoke",
                                  "set_security", "set_online", "create_copies", "attach_many"};
    for (int op = 0; op < 8; op++) {
        const uint32_t ps[2] = {1, 2}, cs[2] = {4, 5}, att[1] = {3};
        lunsnap_result r;
        d.fail_write_at = 1;
        switch (op) {
        case 0: r = lunsnap_add_host(a, HOST_B, "b"); break;
        case 1: r = lunsnap_remove_host(a, HOST_A); break;
        case 2: r = lunsnap_grant(a, 2, HOST_A, LUNSNAP_ACCESS_READ_WRITE); break;
        case 3: r = lunsnap_revoke(a, 1, HOST_A); break;
        case 4: r = lunsnap_set_security(a, true); break;
        case 5: r = lunsnap_set_online(a, 1, false); break;
        case 6: r = lunsnap_create_copies(a, ps, cs, 2, true); break;
        default: r = lunsnap_attach_many(a, att, 1); break;
        }
        hostdev_heal(&d);
        CHECK(r == LUNSNAP_RESULT_DEVICE_IO, "%s with a failing write: got %u (%s)", names[op], (unsigned)r,
              lunsnap_strerror(r));
        EXPECT(lunsnap_add_host(a, 0x99, "z"), LUNSNAP_RESULT_POISONED);
        EXPECT(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ_WRITE), LUNSNAP_RESULT_POISONED);
        EXPECT(lunsnap_set_online(a, 2, false), LUNSNAP_RESULT_POISONED);
        EXPECT_OK(lunsnap_reopen(a));
        uint64_t ids[4];
        size_t nh = host_ids(a, ids, 4);
        bool sec = true;
        EXPECT_OK(lunsnap_security_enabled(a, &sec));
        lunsnap_lun_info l1 = {.struct_size = sizeof l1}, l3 = {.struct_size = sizeof l3};
        EXPECT_OK(lunsnap_get_lun_info(a, 1, &l1));
        EXPECT_OK(lunsnap_get_lun_info(a, 3, &l3));
        EXPECT_OK(lunsnap_set_security(a, true));
        uint32_t nums[8];
        size_t nvis = visible(a, HOST_A, nums, 8);
        EXPECT_OK(lunsnap_set_security(a, false));
        CHECK(nh == 1 && ids[0] == HOST_A && !sec && l1.online == 1 && l3.attached == 0 && lun_count(a) == 3 &&
                  nvis == 1 && nums[0] == 1,
              "after failed %s and reopen: %zu hosts, security %d, online %u, copy 3 attached %u, %zu LUNs, "
              "A sees %zu",
              names[op], nh, (int)sec, l1.online, l3.attached, lun_count(a), nvis);
        size_t nv = 77;
        EXPECT_OK(lunsnap_check(a, &nv));
        CHECK(nv == 0, "after failed %s and reopen: %zu violations", names[op], nv);
    }
    lunsnap_free(a);
    hostdev_destroy(&d);
}

/* ---- map, diff, write_zeroes, zero detection ------------------------------------------- */

#define MAX_RANGES 64

/* Compares what lunsnap_map (or lunsnap_map_as when `host` is not NULL; with `alloc`,
 * lunsnap_map_allocation or lunsnap_map_allocation_as) gives for `len` bytes of `lun`
 * from `off` with `want`: the ranges in sectors, "OFF+LEN:K ..." with K h (hole), d
 * (data) or s (shared data: never from the allocation map). Also checks that they
 * cover the request exactly, in order, merged, and (plain map) that every hole reads
 * as zeros. */
static void map_is_at(lunsnap_array *a, const uint64_t *host, bool alloc, uint32_t lun, uint64_t off, uint64_t len,
                      const char *want, int line) {
    lunsnap_map_range r[MAX_RANGES];
    size_t n = SIZE_MAX;
    lunsnap_result rc = alloc ? (host ? lunsnap_map_allocation_as(a, *host, lun, off, len, r, MAX_RANGES, &n)
                                      : lunsnap_map_allocation(a, lun, off, len, r, MAX_RANGES, &n))
                        : host ? lunsnap_map_as(a, *host, lun, off, len, r, MAX_RANGES, &n)
                               : lunsnap_map(a, lun, off, len, r, MAX_RANGES, &n);
    char got[1024] = "";
    const char *bad = NULL;
    if (rc != LUNSNAP_RESULT_OK) {
        snprintf(got, sizeof got, "error %u", (unsigned)rc);
    } else if (n > MAX_RANGES) {
        snprintf(got, sizeof got, "%zu ranges", n);
    } else {
        size_t used = 0;
        uint64_t pos = off;
        for (size_t i = 0; i < n; i++) {
            char k = !r[i].data ? 'h' : r[i].shared ? 's' : 'd';
            used += (size_t)snprintf(got + used, sizeof got - used, "%s%llu+%llu:%c", i ? " " : "",
                                     (unsigned long long)(r[i].offset / 512), (unsigned long long)(r[i].length / 512), k);
            if (used >= sizeof got) {
                used = sizeof got - 1;
            }
            if (r[i].offset != pos) {
                bad = "not contiguous from the request's offset";
            } else if (r[i].length == 0 || r[i].length % 512 != 0 || r[i].offset % 512 != 0) {
                bad = "a range is empty or not whole sectors";
            } else if (!r[i].data && r[i].shared) {
                bad = "a hole is marked shared";
            } else if (alloc && r[i].shared) {
                bad = "the allocation map marks a range shared";
            } else if (i > 0 && r[i].data == r[i - 1].data && r[i].shared == r[i - 1].shared) {
                bad = "adjacent ranges of the same kind not merged";
            }
            pos = r[i].offset + r[i].length;
            if (!host && !r[i].data && r[i].length <= LUN_SIZE) {
                static uint8_t z[LUN_SIZE];
                memset(z, 0xaa, sizeof z);
                if (lunsnap_read(a, lun, r[i].offset, z, (size_t)r[i].length) != LUNSNAP_RESULT_OK ||
                    !all_bytes(z, (size_t)r[i].length, 0)) {
                    bad = "a hole does not read as zeros";
                }
            }
        }
        if (pos != off + len) {
            bad = "the ranges do not end where the request does";
        }
    }
    check_at(bad == NULL && strcmp(got, want) == 0, line,
             "map%s%s(lun %u, sectors %llu+%llu): got \"%s\"%s%s, want \"%s\"", alloc ? "_allocation" : "",
             host ? "_as" : "", lun, (unsigned long long)(off / 512), (unsigned long long)(len / 512), got,
             bad ? ": " : "", bad ? bad : "", want);
}

#define MAP_IS(a, lun, off, len, want) map_is_at((a), NULL, false, (lun), (off), (len), (want), __LINE__)
#define MAP_AS_IS(a, host, lun, off, len, want)                                                                \
    do {                                                                                                       \
        uint64_t map_host_ = (host);                                                                           \
        map_is_at((a), &map_host_, false, (lun), (off), (len), (want), __LINE__);                              \
    } while (0)
#define MAP_ALLOC_IS(a, lun, off, len, want) map_is_at((a), NULL, true, (lun), (off), (len), (want), __LINE__)
#define MAP_ALLOC_AS_IS(a, host, lun, off, len, want)                                                          \
    do {                                                                                                       \
        uint64_t map_host_ = (host);                                                                           \
        map_is_at((a), &map_host_, true, (lun), (off), (len), (want), __LINE__);                               \
    } while (0)

/* The same for lunsnap_diff (_as): "OFF+LEN ..." in sectors; the ranges must lie in the
 * request, in order, merged (never touching). */
static void diff_is_at(lunsnap_array *a, const uint64_t *host, uint32_t la, uint32_t lb, uint64_t off, uint64_t len,
                       const char *want, int line) {
    lunsnap_diff_range r[MAX_RANGES];
    size_t n = SIZE_MAX;
    lunsnap_result rc = host ? lunsnap_diff_as(a, *host, la, lb, off, len, r, MAX_RANGES, &n)
                             : lunsnap_diff(a, la, lb, off, len, r, MAX_RANGES, &n);
    char got[1024] = "";
    const char *bad = NULL;
    if (rc != LUNSNAP_RESULT_OK) {
        snprintf(got, sizeof got, "error %u", (unsigned)rc);
    } else if (n > MAX_RANGES) {
        snprintf(got, sizeof got, "%zu ranges", n);
    } else {
        size_t used = 0;
        for (size_t i = 0; i < n; i++) {
            used += (size_t)snprintf(got + used, sizeof got - used, "%s%llu+%llu", i ? " " : "",
                                     (unsigned long long)(r[i].offset / 512), (unsigned long long)(r[i].length / 512));
            if (used >= sizeof got) {
                used = sizeof got - 1;
            }
            if (r[i].length == 0 || r[i].length % 512 != 0 || r[i].offset % 512 != 0) {
                bad = "a range is empty or not whole sectors";
            } else if (r[i].offset < off || r[i].offset + r[i].length > off + len) {
                bad = "a range outside the request";
            } else if (i > 0 && r[i].offset <= r[i - 1].offset + r[i - 1].length) {
                bad = "ranges out of order, overlapping or not merged";
            }
        }
    }
    check_at(bad == NULL && strcmp(got, want) == 0, line, "diff%s(%u, %u, sectors %llu+%llu): got \"%s\"%s%s, want \"%s\"",
             host ? "_as" : "", la, lb, (unsigned long long)(off / 512), (unsigned long long)(len / 512), got,
             bad ? ": " : "", bad ? bad : "", want);
}

#define DIFF_IS(a, la, lb, off, len, want) diff_is_at((a), NULL, (la), (lb), (off), (len), (want), __LINE__)
#define DIFF_AS_IS(a, host, la, lb, off, len, want)                                                            \
    do {                                                                                                       \
        uint64_t diff_host_ = (host);                                                                          \
        diff_is_at((a), &diff_host_, (la), (lb), (off), (len), (want), __LINE__);                              \
    } while (0)

static bool map_range_eq(lunsnap_map_range r, uint64_t off, uint64_t len, bool data, bool shared) {
    return r.offset == off && r.length == len && r.data == data && r.shared == shared;
}

static void test_map_and_diff(void) {
    section = "map";
    CHECK(sizeof(lunsnap_map_range) == 24 && offsetof(lunsnap_map_range, offset) == 0 &&
              offsetof(lunsnap_map_range, length) == 8 && offsetof(lunsnap_map_range, data) == 16 &&
              offsetof(lunsnap_map_range, shared) == 17 && offsetof(lunsnap_map_range, lost) == 18 &&
              sizeof(lunsnap_diff_range) == 16 &&
              offsetof(lunsnap_diff_range, length) == 8,
          "range struct layouts: map %zu bytes (data at %zu), diff %zu bytes", sizeof(lunsnap_map_range),
          offsetof(lunsnap_map_range, data), sizeof(lunsnap_diff_range));
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    MAP_IS(a, 1, 0, LUN_SIZE, "0+512:h");
    static uint8_t w[LUN_SIZE];
    fill_bytes(w, sizeof w, 5);
    /* Extents 1 and 2 written whole, one sector of extent 20. */
    EXPECT_OK(lunsnap_write(a, 1, EXTENT, w, 2 * EXTENT));
    EXPECT_OK(lunsnap_write(a, 1, 20 * EXTENT + 512, w, 512));
    MAP_IS(a, 1, 0, LUN_SIZE, "0+8:h 8+16:d 24+136:h 160+8:d 168+344:h");
    /* Clipped to the request; boundaries inside it fall on extent boundaries. */
    MAP_IS(a, 1, 512, 30 * EXTENT, "1+7:h 8+16:d 24+136:h 160+8:d 168+73:h");
    MAP_IS(a, 1, EXTENT + 512, 1024, "9+2:d");
    MAP_IS(a, 1, 21 * EXTENT, LUN_SIZE - 21 * EXTENT, "168+344:h");
    MAP_IS(a, 1, 0, 0, "");
    MAP_IS(a, 1, LUN_SIZE, 0, "");

    /* The capacity/count convention: ask for the count, too small a buffer, enough. */
    lunsnap_map_range r[8], sent;
    memset(&sent, 0x5a, sizeof sent);
    for (size_t i = 0; i < 8; i++) {
        r[i] = sent;
    }
    size_t n = 99;
    EXPECT_OK(lunsnap_map(a, 1, 0, LUN_SIZE, NULL, 0, &n));
    CHECK(n == 5, "map count query: %zu, want 5", n);
    n = 99;
    EXPECT_OK(lunsnap_map(a, 1, 0, LUN_SIZE, r, 0, &n));
    CHECK(n == 5 && memcmp(&r[0], &sent, sizeof sent) == 0, "map(capacity 0): count %zu, buffer written", n);
    n = 0;
    EXPECT_OK(lunsnap_map(a, 1, 0, LUN_SIZE, r, 2, &n));
    CHECK(n == 5 && map_range_eq(r[0], 0, EXTENT, false, false) &&
              map_range_eq(r[1], EXTENT, 2 * EXTENT, true, false) && memcmp(&r[2], &sent, sizeof sent) == 0,
          "map(capacity 2): count %zu, [%llu+%llu %d%d] [%llu+%llu %d%d], third %s", n,
          (unsigned long long)r[0].offset, (unsigned long long)r[0].length, r[0].data, r[0].shared,
          (unsigned long long)r[1].offset, (unsigned long long)r[1].length, r[1].data, r[1].shared,
          memcmp(&r[2], &sent, sizeof sent) == 0 ? "untouched" : "written");
    n = 0;
    EXPECT_OK(lunsnap_map(a, 1, 0, LUN_SIZE, r, 5, &n));
    CHECK(n == 5 && map_range_eq(r[2], 3 * EXTENT, 17 * EXTENT, false, false) &&
              map_range_eq(r[3], 20 * EXTENT, EXTENT, true, false) &&
              map_range_eq(r[4], 21 * EXTENT, LUN_SIZE - 21 * EXTENT, false, false) &&
              memcmp(&r[5], &sent, sizeof sent) == 0,
          "map(capacity 5): count %zu or ranges wrong", n);
    n = 0;
    EXPECT_OK(lunsnap_map(a, 1, 0, LUN_SIZE, r, 8, &n));
    CHECK(n == 5 && map_range_eq(r[4], 21 * EXTENT, LUN_SIZE - 21 * EXTENT, false, false) &&
              memcmp(&r[5], &sent, sizeof sent) == 0 && memcmp(&r[7], &sent, sizeof sent) == 0,
          "map(capacity 8): count %zu, or written past the count", n);

    /* Bad arguments: the exact code, nothing written. */
    for (size_t i = 0; i < 8; i++) {
        r[i] = sent;
    }
    n = 99;
    EXPECT(lunsnap_map(a, 1, 1, 512, r, 8, &n), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_map(a, 1, 0, 100, r, 8, &n), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_map(a, 1, 0, 513, r, 8, &n), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_map(a, 1, 63 * EXTENT, 2 * EXTENT, r, 8, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_map(a, 1, LUN_SIZE, 512, r, 8, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_map(a, 1, LUN_SIZE + 512, 0, r, 8, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_map(a, 1, UINT64_MAX - 511, 1024, r, 8, &n), LUNSNAP_RESULT_OUT_OF_RANGE); /* wraps */
    EXPECT(lunsnap_map(a, 1, 512, UINT64_MAX - 511, r, 8, &n), LUNSNAP_RESULT_OUT_OF_RANGE);  /* wraps */
    EXPECT(lunsnap_map(a, 2, 0, 512, r, 8, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_map(a, MAX_LUNS, 0, 512, r, 8, &n), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_map(a, UINT32_MAX, 0, 512, r, 8, &n), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_map(a, 1, 0, 512, r, 8, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map(a, 1, 0, 512, NULL, 8, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map(a, 1, 0, 512, NULL, 0, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map(a, 1, 0, 512, r, SIZE_MAX, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_map(a, 1, 0, 512, r, PTRDIFF_MAX / sizeof r[0] + 1, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    /* The pointer checks come first: a bad request with bad pointers is a pointer error. */
    EXPECT(lunsnap_map(a, 2, 1, 100, r, 8, NULL), LUNSNAP_RESULT_NULL_POINTER);
    bool untouched = n == 99;
    for (size_t i = 0; i < 8; i++) {
        untouched = untouched && memcmp(&r[i], &sent, sizeof sent) == 0;
    }
    CHECK(untouched, "a refused map wrote its out-parameters (count %zu)", n);
    /* The other list functions follow the same capacity rule. */
    uint32_t nums[2];
    EXPECT(lunsnap_luns(a, nums, SIZE_MAX, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_visible_luns(a, 1, nums, SIZE_MAX / 2, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    CHECK(n == 99, "a refused list call wrote its count");

    /* A copy shares every extent with its parent until one of them writes there. */
    section = "map shared";
    EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
    MAP_IS(a, 2, 0, LUN_SIZE, "0+8:h 8+16:s 24+136:h 160+8:s 168+344:h");
    MAP_IS(a, 1, 0, LUN_SIZE, "0+8:h 8+16:s 24+136:h 160+8:s 168+344:h");
    uint8_t x[512];
    memset(x, 0x11, sizeof x);
    EXPECT_OK(lunsnap_write(a, 1, 2 * EXTENT, x, sizeof x)); /* the parent writes extent 2 */
    MAP_IS(a, 1, 0, LUN_SIZE, "0+8:h 8+8:s 16+8:d 24+136:h 160+8:s 168+344:h");
    MAP_IS(a, 2, 0, 4 * EXTENT, "0+8:h 8+8:s 16+8:d 24+8:h");
    /* The allocation map: the same data and holes without the sharing, so the shared
     * and unshared data of LUN 1's extents 1 and 2 come as one range. */
    section = "map allocation";
    MAP_ALLOC_IS(a, 1, 0, LUN_SIZE, "0+8:h 8+16:d 24+136:h 160+8:d 168+344:h");
    MAP_ALLOC_IS(a, 2, 0, 4 * EXTENT, "0+8:h 8+16:d 24+8:h");
    MAP_ALLOC_IS(a, 1, EXTENT + 512, 1024, "9+2:d");
    MAP_ALLOC_IS(a, 1, 0, 0, "");
    MAP_ALLOC_IS(a, 1, 1, 512, "error 41");
    MAP_ALLOC_IS(a, 1, LUN_SIZE, 512, "error 40");
    MAP_ALLOC_IS(a, 9, 0, 512, "error 31");
    MAP_ALLOC_IS(a, MAX_LUNS, 0, 512, "error 30");
    {
        lunsnap_map_range ar[2];
        memset(ar, 0x5a, sizeof ar);
        size_t an = 99;
        EXPECT_OK(lunsnap_map_allocation(a, 1, 0, LUN_SIZE, NULL, 0, &an));
        CHECK(an == 5, "map_allocation count query: %zu, want 5", an);
        an = 99;
        EXPECT(lunsnap_map_allocation(a, 1, 0, 512, NULL, 2, &an), LUNSNAP_RESULT_NULL_POINTER);
        EXPECT(lunsnap_map_allocation(a, 1, 0, 512, ar, 2, NULL), LUNSNAP_RESULT_NULL_POINTER);
        EXPECT(lunsnap_map_allocation(a, 1, 0, 512, ar, SIZE_MAX, &an), LUNSNAP_RESULT_INVALID_ARGUMENT);
        EXPECT_MSG(lunsnap_map_allocation(a, 1, 0, 512, ar, 2, NULL), LUNSNAP_RESULT_NULL_POINTER,
                   "lunsnap_map_allocation: `out_count` is NULL");
        CHECK(an == 99 && all_bytes((const uint8_t *)ar, sizeof ar, 0x5a),
              "a refused map_allocation wrote its out-parameters");
        EXPECT_OK(lunsnap_map_allocation(a, 1, 0, LUN_SIZE, ar, 1, &an));
        CHECK(an == 5 && map_range_eq(ar[0], 0, EXTENT, false, false) &&
                  all_bytes((const uint8_t *)&ar[1], sizeof ar[1], 0x5a),
              "map_allocation(capacity 1): count %zu", an);
    }
    section = "map shared";

    section = "diff";
    DIFF_IS(a, 1, 2, 0, LUN_SIZE, "16+8");
    DIFF_IS(a, 2, 1, 0, LUN_SIZE, "16+8");
    DIFF_IS(a, 1, 1, 0, LUN_SIZE, "");
    DIFF_IS(a, 1, 2, 0, 0, "");
    DIFF_IS(a, 1, 2, LUN_SIZE, 0, "");
    /* The copy writes extent 3 (a hole in both): merged with extent 2. */
    EXPECT_OK(lunsnap_write(a, 2, 3 * EXTENT + 1024, x, sizeof x));
    DIFF_IS(a, 1, 2, 0, LUN_SIZE, "16+16");
    DIFF_IS(a, 1, 2, 2 * EXTENT + 512, 1024, "17+2"); /* clipped */
    DIFF_IS(a, 1, 2, 3 * EXTENT, 4 * EXTENT, "24+8");
    DIFF_IS(a, 1, 2, 4 * EXTENT, 16 * EXTENT, "");
    /* The copy writes the bytes extent 20 already holds: still reported (extent granularity). */
    uint8_t same[512];
    EXPECT_OK(lunsnap_read(a, 2, 20 * EXTENT + 512, same, sizeof same));
    EXPECT_OK(lunsnap_write(a, 2, 20 * EXTENT + 512, same, sizeof same));
    DIFF_IS(a, 1, 2, 0, LUN_SIZE, "16+16 160+8");
    /* Unrelated LUNs are compared in full (still exact). */
    EXPECT_OK(lunsnap_create_lun(a, 3, LUN_SIZE));
    DIFF_IS(a, 1, 3, 0, LUN_SIZE, "8+16 160+8");
    DIFF_IS(a, 3, 2, 0, LUN_SIZE, "8+24 160+8");
    /* Capacity: count query, too small, enough. */
    lunsnap_diff_range d[4], dsent;
    memset(&dsent, 0x5a, sizeof dsent);
    for (size_t i = 0; i < 4; i++) {
        d[i] = dsent;
    }
    n = 99;
    EXPECT_OK(lunsnap_diff(a, 1, 2, 0, LUN_SIZE, NULL, 0, &n));
    CHECK(n == 2, "diff count query: %zu, want 2", n);
    n = 0;
    EXPECT_OK(lunsnap_diff(a, 1, 2, 0, LUN_SIZE, d, 1, &n));
    CHECK(n == 2 && d[0].offset == 2 * EXTENT && d[0].length == 2 * EXTENT &&
              memcmp(&d[1], &dsent, sizeof dsent) == 0,
          "diff(capacity 1): count %zu, [%llu+%llu], second %s", n, (unsigned long long)d[0].offset,
          (unsigned long long)d[0].length, memcmp(&d[1], &dsent, sizeof dsent) == 0 ? "untouched" : "written");
    n = 0;
    EXPECT_OK(lunsnap_diff(a, 1, 2, 0, LUN_SIZE, d, 4, &n));
    CHECK(n == 2 && d[1].offset == 20 * EXTENT && d[1].length == EXTENT && memcmp(&d[2], &dsent, sizeof dsent) == 0,
          "diff(capacity 4): count %zu, second [%llu+%llu]", n, (unsigned long long)d[1].offset,
          (unsigned long long)d[1].length);
    /* LUNs of different sizes: the range must lie inside both. */
    EXPECT_OK(lunsnap_create_lun(a, 4, 16 * EXTENT));
    EXPECT_OK(lunsnap_write(a, 4, 15 * EXTENT, w, EXTENT));
    DIFF_IS(a, 1, 4, 0, 16 * EXTENT, "8+16 120+8");
    for (size_t i = 0; i < 4; i++) {
        d[i] = dsent;
    }
    n = 99;
    EXPECT(lunsnap_diff(a, 1, 4, 0, 17 * EXTENT, d, 4, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, 4, 1, 0, LUN_SIZE, d, 4, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, 1, 2, LUN_SIZE, 512, d, 4, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, 1, 2, UINT64_MAX - 511, 1024, d, 4, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, 1, 2, 512, UINT64_MAX - 511, d, 4, &n), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, 1, 2, 256, 512, d, 4, &n), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_diff(a, 1, 2, 0, 1000, d, 4, &n), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_diff(a, 1, 9, 0, 512, d, 4, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_diff(a, 9, 1, 0, 512, d, 4, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_diff(a, 1, MAX_LUNS, 0, 512, d, 4, &n), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, UINT32_MAX, 1, 0, 512, d, 4, &n), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_diff(a, 1, 2, 0, 512, d, 4, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_diff(a, 1, 2, 0, 512, NULL, 1, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_diff(a, 1, 2, 0, 512, d, SIZE_MAX, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_diff(a, 1, 2, 0, 512, d, PTRDIFF_MAX / sizeof d[0] + 1, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    untouched = n == 99;
    for (size_t i = 0; i < 4; i++) {
        untouched = untouched && memcmp(&d[i], &dsent, sizeof dsent) == 0;
    }
    CHECK(untouched, "a refused diff wrote its out-parameters (count %zu)", n);

    /* Detached copies have no data: refused; attached, they are their parent's image. */
    section = "map/diff states";
    EXPECT_OK(lunsnap_create_copy(a, 1, 5, false));
    n = 99;
    EXPECT(lunsnap_map(a, 5, 0, 512, r, 8, &n), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_diff(a, 1, 5, 0, 512, d, 4, &n), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_diff(a, 5, 1, 0, 512, d, 4, &n), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_write_zeroes(a, 5, 0, 512, true), LUNSNAP_RESULT_DETACHED);
    EXPECT(lunsnap_write_zeroes(a, 5, 0, 512, false), LUNSNAP_RESULT_DETACHED);
    CHECK(n == 99, "a refused map/diff of a detached copy wrote the count");
    EXPECT_OK(lunsnap_attach(a, 5));
    MAP_IS(a, 5, 0, LUN_SIZE, "0+8:h 8+16:s 24+136:h 160+8:s 168+344:h");
    DIFF_IS(a, 1, 5, 0, LUN_SIZE, "");
    DIFF_IS(a, 5, 2, 0, LUN_SIZE, "16+16 160+8");
    /* Offline: an offline LUN may be mapped and compared (metadata only); its data
     * may not be written. */
    EXPECT_OK(lunsnap_set_online(a, 1, false));
    EXPECT_OK(lunsnap_map(a, 1, 0, 512, r, 8, &n));
    CHECK(n == 1 && r[0].offset == 0 && r[0].length == 512 && !r[0].data,
          "map of an offline LUN: one hole of 512 bytes");
    EXPECT(lunsnap_write_zeroes(a, 1, 0, 512, true), LUNSNAP_RESULT_OFFLINE);
    DIFF_IS(a, 1, 2, 0, LUN_SIZE, "16+16 160+8");
    EXPECT_OK(lunsnap_set_online(a, 1, true));
    MAP_IS(a, 1, 0, 4 * EXTENT, "0+8:h 8+16:s 24+8:h"); /* extent 2 now shared with copy 5 */
    /* Committed and reopened: the same answers. */
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_reopen(a));
    MAP_IS(a, 2, 0, LUN_SIZE, "0+8:h 8+8:s 16+16:d 32+128:h 160+8:d 168+344:h");
    DIFF_IS(a, 1, 2, 0, LUN_SIZE, "16+16 160+8");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after map/diff: %zu violations", nv);
    lunsnap_free(a);
}

static void test_write_zeroes(void) {
    section = "write_zeroes";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    static uint8_t w[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(w, sizeof w, 41);
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
    EXPECT_OK(lunsnap_flush(a));
    MAP_IS(a, 1, 0, LUN_SIZE, "0+512:d");
    lunsnap_pool_info p0 = {.struct_size = sizeof p0}, p = {.struct_size = sizeof p};
    EXPECT_OK(lunsnap_get_pool_info(a, &p0));

    /* A data write: no commit of its own, lost at a power cut unless flushed. */
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 2 * EXTENT, 3 * EXTENT, true));
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.generation == p0.generation, "write_zeroes committed (generation %llu -> %llu)",
          (unsigned long long)p0.generation, (unsigned long long)p.generation);
    MAP_IS(a, 1, 0, LUN_SIZE, "0+16:d 16+24:h 40+472:d");
    EXPECT_OK(lunsnap_reopen(a));
    MAP_IS(a, 1, 0, LUN_SIZE, "0+512:d");
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "unflushed write_zeroes survived a reopen");

    /* punch: partial extents zeroed, whole ones unmapped; without: zeros written. */
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 512, 3 * 512, true));                  /* inside extent 0 */
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 2 * EXTENT, 3 * EXTENT, true));        /* extents 2-4 */
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 10 * EXTENT + 512, 2 * EXTENT, true)); /* part of 10, 11, part of 12 */
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 20 * EXTENT, 2 * EXTENT, false));      /* extents 20-21, kept */
    memset(w + 512, 0, 3 * 512);
    memset(w + 2 * EXTENT, 0, 3 * EXTENT);
    memset(w + 10 * EXTENT + 512, 0, 2 * EXTENT);
    memset(w + 20 * EXTENT, 0, 2 * EXTENT);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "write_zeroes: the LUN does not read as expected");
    MAP_IS(a, 1, 0, LUN_SIZE, "0+16:d 16+24:h 40+48:d 88+8:h 96+416:d");
    /* Zeros over a hole change nothing. */
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 2 * EXTENT, EXTENT, true));
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.allocated_bytes == p0.allocated_bytes - 4 * EXTENT && p.generation > p0.generation,
          "after write_zeroes and flush: %llu bytes allocated, want %llu", (unsigned long long)p.allocated_bytes,
          (unsigned long long)(p0.allocated_bytes - 4 * EXTENT));
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "flushed write_zeroes: differs after reopen");
    MAP_IS(a, 1, 0, LUN_SIZE, "0+16:d 16+24:h 40+48:d 88+8:h 96+416:d");

    /* Bad arguments: refused, nothing changed. */
    EXPECT(lunsnap_write_zeroes(a, 1, 1, 512, true), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write_zeroes(a, 1, 0, 100, false), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write_zeroes(a, 1, 512, 511, true), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write_zeroes(a, 1, LUN_SIZE, 512, true), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_write_zeroes(a, 1, LUN_SIZE - 512, 1024, false), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_write_zeroes(a, 1, UINT64_MAX - 511, 1024, true), LUNSNAP_RESULT_OUT_OF_RANGE); /* wraps */
    EXPECT(lunsnap_write_zeroes(a, 1, 512, UINT64_MAX - 511, false), LUNSNAP_RESULT_OUT_OF_RANGE); /* wraps */
    EXPECT(lunsnap_write_zeroes(a, 1, LUN_SIZE + 512, 0, true), LUNSNAP_RESULT_OUT_OF_RANGE);
    EXPECT(lunsnap_write_zeroes(a, 2, 0, 512, true), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write_zeroes(a, MAX_LUNS, 0, 512, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_write_zeroes(a, UINT32_MAX, 0, 512, false), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT_OK(lunsnap_write_zeroes(a, 1, 0, 0, true));
    EXPECT_OK(lunsnap_write_zeroes(a, 1, LUN_SIZE, 0, false));
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "refused write_zeroes changed the LUN");
    EXPECT_OK(lunsnap_get_pool_info(a, &p0));

    /* On a copy: its extents stop being shared; the parent keeps its data. */
    section = "write_zeroes on copies";
    EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
    EXPECT_OK(lunsnap_write_zeroes(a, 2, 5 * EXTENT, EXTENT, true));       /* whole extent 5 */
    EXPECT_OK(lunsnap_write_zeroes(a, 2, 6 * EXTENT + 512, 512, true));    /* one sector of extent 6 */
    MAP_IS(a, 2, 5 * EXTENT, 3 * EXTENT, "40+8:h 48+8:d 56+8:s");
    MAP_IS(a, 1, 5 * EXTENT, 3 * EXTENT, "40+16:d 56+8:s");
    DIFF_IS(a, 1, 2, 0, LUN_SIZE, "40+16");
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "write_zeroes on a copy changed its parent");
    memset(w + 5 * EXTENT, 0, EXTENT);
    memset(w + 6 * EXTENT + 512, 0, 512);
    EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "write_zeroes on a copy: the copy differs");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after write_zeroes: %zu violations", nv);
    lunsnap_free(a);
}

static void test_detect_zeros(void) {
    section = "detect_zeros";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    bool on = false;
    EXPECT_OK(lunsnap_detect_zeros(a, &on));
    CHECK(on, "zero detection is off on a new handle");
    EXPECT(lunsnap_detect_zeros(a, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    static uint8_t w[LUN_SIZE], z[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(w, sizeof w, 51);
    memset(z, 0, sizeof z);
    EXPECT_OK(lunsnap_write(a, 1, 0, w, 8 * EXTENT));
    EXPECT_OK(lunsnap_flush(a));
    lunsnap_pool_info p0 = {.struct_size = sizeof p0}, p = {.struct_size = sizeof p};
    EXPECT_OK(lunsnap_get_pool_info(a, &p0));

    /* On: whole extents of zeros are unmapped; parts of extents are stored. */
    EXPECT_OK(lunsnap_write(a, 1, EXTENT, z, 2 * EXTENT));        /* extents 1-2 */
    EXPECT_OK(lunsnap_write(a, 1, 4 * EXTENT + 512, z, EXTENT));  /* parts of 4 and 5 */
    EXPECT_OK(lunsnap_write(a, 1, 30 * EXTENT, z, EXTENT));       /* over a hole */
    MAP_IS(a, 1, 0, 8 * EXTENT, "0+8:d 8+16:h 24+40:d");
    MAP_IS(a, 1, 30 * EXTENT, EXTENT, "240+8:h");
    /* Also on behalf of a host. */
    EXPECT_OK(lunsnap_write_as(a, HOST_A, 1, 6 * EXTENT, z, EXTENT));
    MAP_IS(a, 1, 0, 8 * EXTENT, "0+8:d 8+16:h 24+24:d 48+8:h 56+8:d");
    memset(w + EXTENT, 0, 2 * EXTENT);
    memset(w + 4 * EXTENT + 512, 0, EXTENT);
    memset(w + 6 * EXTENT, 0, EXTENT);
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    CHECK(p.allocated_bytes == p0.allocated_bytes - 3 * EXTENT, "zero detection: %llu bytes allocated, want %llu",
          (unsigned long long)p.allocated_bytes, (unsigned long long)(p0.allocated_bytes - 3 * EXTENT));

    /* Off: the zeros are stored (over data and over a hole). */
    EXPECT_OK(lunsnap_set_detect_zeros(a, false));
    on = true;
    EXPECT_OK(lunsnap_detect_zeros(a, &on));
    CHECK(!on, "zero detection still on after set_detect_zeros(false)");
    EXPECT_OK(lunsnap_write(a, 1, 0, z, EXTENT));
    EXPECT_OK(lunsnap_write(a, 1, 10 * EXTENT, z, EXTENT));
    memset(w, 0, EXTENT);
    MAP_IS(a, 1, 0, 11 * EXTENT, "0+8:d 8+16:h 24+24:d 48+8:h 56+8:d 64+16:h 80+8:d");
    EXPECT_OK(lunsnap_flush(a));

    /* A setting of the handle: kept by reopen, and a handle is the only place it lives. */
    EXPECT_OK(lunsnap_reopen(a));
    on = true;
    EXPECT_OK(lunsnap_detect_zeros(a, &on));
    CHECK(!on, "lunsnap_reopen turned zero detection back on");
    EXPECT_OK(lunsnap_write(a, 1, 12 * EXTENT, z, EXTENT));
    MAP_IS(a, 1, 12 * EXTENT, EXTENT, "96+8:d");
    EXPECT_OK(lunsnap_set_detect_zeros(a, true));
    EXPECT_OK(lunsnap_set_detect_zeros(a, true));
    on = false;
    EXPECT_OK(lunsnap_detect_zeros(a, &on));
    CHECK(on, "set_detect_zeros(true) did not turn it on");
    EXPECT_OK(lunsnap_write(a, 1, 12 * EXTENT, z, EXTENT));
    MAP_IS(a, 1, 12 * EXTENT, EXTENT, "96+8:h");
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, 8 * EXTENT) == 0 && all_bytes(rd + 8 * EXTENT, sizeof rd - 8 * EXTENT, 0),
          "zero detection: the LUN does not read as written");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after zero detection: %zu violations", nv);
    lunsnap_free(a);
}

/* map, diff and write_zeroes on behalf of hosts: the same filtering as read and write. */
static void test_ranges_as_hosts(void) {
    section = "map/diff/zeroes as hosts";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    static uint8_t w[4 * EXTENT], rd[4 * EXTENT];
    fill_bytes(w, sizeof w, 61);
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
    EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, true));
    EXPECT_OK(lunsnap_write(a, 1, EXTENT, w + EXTENT, EXTENT)); /* the same bytes, a new extent */
    EXPECT_OK(lunsnap_add_host(a, HOST_A, "db-host"));
    EXPECT_OK(lunsnap_add_host(a, HOST_B, "backup-host"));
    EXPECT_OK(lunsnap_add_host(a, HOST_C, "other-host"));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_A, LUNSNAP_ACCESS_READ_WRITE));
    EXPECT_OK(lunsnap_grant(a, 2, HOST_A, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_grant(a, 1, HOST_B, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_grant(a, 3, HOST_B, LUNSNAP_ACCESS_READ));
    const char *map1 = "0+8:s 8+8:d 16+16:s 32+480:h";

    /* Security off: every host, even an unknown one, sees and zeroes everything. */
    MAP_AS_IS(a, HOST_X, 1, 0, LUN_SIZE, map1);
    DIFF_AS_IS(a, HOST_X, 1, 3, 0, LUN_SIZE, "8+8");
    EXPECT_OK(lunsnap_write_zeroes_as(a, HOST_C, 2, 0, EXTENT, true));

    EXPECT_OK(lunsnap_set_security(a, true));
    /* Read and read-write grants may map; nothing else may, whatever the request. */
    MAP_AS_IS(a, HOST_A, 1, 0, LUN_SIZE, map1);
    MAP_AS_IS(a, HOST_B, 1, 0, LUN_SIZE, map1);
    MAP_AS_IS(a, HOST_C, 1, 0, LUN_SIZE, "error 31");
    MAP_AS_IS(a, HOST_X, 1, 0, LUN_SIZE, "error 31");
    MAP_AS_IS(a, HOST_B, 2, 0, LUN_SIZE, "error 31");
    MAP_AS_IS(a, HOST_C, 1, 1, 512, "error 31");
    MAP_AS_IS(a, HOST_C, 1, LUN_SIZE, 512, "error 31");
    MAP_AS_IS(a, HOST_C, 9, 0, 512, "error 31");
    MAP_AS_IS(a, HOST_A, MAX_LUNS, 0, 512, "error 30");
    MAP_AS_IS(a, HOST_A, 1, 1, 512, "error 41");
    MAP_AS_IS(a, HOST_A, 1, LUN_SIZE, 512, "error 40");
    /* The allocation map as a host: the same grants, no sharing. */
    MAP_ALLOC_AS_IS(a, HOST_A, 1, 0, LUN_SIZE, "0+32:d 32+480:h");
    MAP_ALLOC_AS_IS(a, HOST_B, 3, 0, LUN_SIZE, "0+32:d 32+480:h");
    MAP_ALLOC_AS_IS(a, HOST_C, 1, 0, LUN_SIZE, "error 31");
    MAP_ALLOC_AS_IS(a, HOST_B, 2, 0, LUN_SIZE, "error 31");
    MAP_ALLOC_AS_IS(a, HOST_A, MAX_LUNS, 0, 512, "error 30");
    MAP_ALLOC_AS_IS(a, HOST_A, 1, 1, 512, "error 41");
    lunsnap_map_range mr[2];
    lunsnap_diff_range dr[2];
    memset(mr, 0x5a, sizeof mr);
    memset(dr, 0x5a, sizeof dr);
    size_t n = 99;
    EXPECT(lunsnap_map_as(a, HOST_A, 1, 0, 512, NULL, 2, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map_as(a, HOST_A, 1, 0, 512, mr, 2, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map_as(a, HOST_A, 1, 0, 512, mr, SIZE_MAX, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_map_as(a, HOST_C, 1, 0, 512, mr, 2, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_map_allocation_as(a, HOST_A, 1, 0, 512, NULL, 2, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map_allocation_as(a, HOST_A, 1, 0, 512, mr, 2, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_map_allocation_as(a, HOST_C, 1, 0, 512, mr, 2, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_diff_as(a, HOST_A, 1, 2, 0, 512, NULL, 2, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_diff_as(a, HOST_A, 1, 2, 0, 512, dr, 2, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_diff_as(a, HOST_A, 1, 2, 0, 512, dr, SIZE_MAX, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_diff_as(a, HOST_C, 1, 3, 0, 512, dr, 2, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    CHECK(n == 99 && all_bytes((const uint8_t *)mr, sizeof mr, 0x5a) && all_bytes((const uint8_t *)dr, sizeof dr, 0x5a),
          "a refused map_as/diff_as wrote its out-parameters");
    /* diff: both LUNs must be visible to the host. */
    DIFF_AS_IS(a, HOST_B, 1, 3, 0, LUN_SIZE, "8+8");
    DIFF_AS_IS(a, HOST_B, 3, 1, 0, LUN_SIZE, "8+8");
    DIFF_AS_IS(a, HOST_A, 1, 2, 0, LUN_SIZE, "0+32");
    DIFF_AS_IS(a, HOST_A, 1, 3, 0, LUN_SIZE, "error 31");
    DIFF_AS_IS(a, HOST_A, 3, 1, 0, LUN_SIZE, "error 31");
    DIFF_AS_IS(a, HOST_B, 1, 2, 0, LUN_SIZE, "error 31");
    DIFF_AS_IS(a, HOST_C, 1, 3, 0, LUN_SIZE, "error 31");
    DIFF_AS_IS(a, HOST_X, 1, 1, 0, LUN_SIZE, "error 31");
    DIFF_AS_IS(a, HOST_B, 1, 3, 0, 100, "error 41");
    DIFF_AS_IS(a, HOST_C, 1, 3, 0, 100, "error 31");
    /* write_zeroes is a write: a read grant is refused, an invisible LUN is missing. */
    EXPECT(lunsnap_write_zeroes_as(a, HOST_B, 1, 0, EXTENT, true), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_B, 1, 0, EXTENT, false), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_B, 1, 0, 0, true), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_A, 2, 0, EXTENT, true), LUNSNAP_RESULT_READ_ONLY_ACCESS);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_C, 1, 0, EXTENT, true), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_X, 1, 0, EXTENT, false), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_C, 1, 1, 100, true), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_A, MAX_LUNS, 0, EXTENT, true), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_A, 1, 1, 512, true), LUNSNAP_RESULT_MISALIGNED);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_A, 1, 512, UINT64_MAX - 511, true), LUNSNAP_RESULT_OUT_OF_RANGE);
    MAP_IS(a, 1, 0, LUN_SIZE, map1);
    EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "refused write_zeroes_as changed LUN 1");
    /* A read-write grant zeroes. */
    EXPECT_OK(lunsnap_write_zeroes_as(a, HOST_A, 1, 0, EXTENT, true));
    EXPECT_OK(lunsnap_write_zeroes_as(a, HOST_A, 1, 2 * EXTENT, 512, false));
    MAP_AS_IS(a, HOST_A, 1, 0, 4 * EXTENT, "0+8:h 8+16:d 24+8:s");
    DIFF_AS_IS(a, HOST_B, 1, 3, 0, LUN_SIZE, "0+24");
    memset(w, 0, EXTENT);
    memset(w + 2 * EXTENT, 0, 512);
    EXPECT_OK(lunsnap_read_as(a, HOST_B, 1, 0, rd, sizeof rd));
    CHECK(memcmp(rd, w, sizeof rd) == 0, "write_zeroes_as by A: LUN 1 differs");
    /* Offline: mapped (metadata only), zeroing refused as writes are, and only to
     * hosts that may see the LUN. */
    EXPECT_OK(lunsnap_set_online(a, 1, false));
    MAP_AS_IS(a, HOST_A, 1, 0, 512, "0+1:h");
    MAP_AS_IS(a, HOST_C, 1, 0, 512, "error 31");
    EXPECT(lunsnap_write_zeroes_as(a, HOST_A, 1, 0, 512, true), LUNSNAP_RESULT_OFFLINE);
    EXPECT(lunsnap_write_zeroes_as(a, HOST_C, 1, 0, 512, true), LUNSNAP_RESULT_NO_SUCH_LUN);
    DIFF_AS_IS(a, HOST_B, 1, 3, 0, LUN_SIZE, "0+24");
    EXPECT_OK(lunsnap_set_online(a, 1, true));
    EXPECT_OK(lunsnap_set_security(a, false));
    MAP_AS_IS(a, HOST_C, 2, 0, LUN_SIZE, "0+512:h");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after the host range tests: %zu violations", nv);
    EXPECT_OK(lunsnap_close(a));
}

/* ---- the discard callback: when it is called, and on what -------------------------------- */

/* Every sector a test writes starts with a tag (magic, LUN, version, sector), so that what
 * a discarded block held can be told: data of which LUN, at which offset. */
#define TAG_MAGIC 0x54414753u /* "TAGS" */

static void tag_fill(uint8_t *buf, size_t len, uint32_t lun, uint32_t version, uint64_t off) {
    for (size_t s = 0; s < len; s += 512) {
        uint32_t h[4] = {TAG_MAGIC, lun, version, (uint32_t)((off + s) / 512)};
        memcpy(buf + s, h, sizeof h);
        fill_bytes(buf + s + sizeof h, 512 - sizeof h, (uint8_t)(lun * 7 + version + (off + s) / 512));
    }
}

/* One device call: 'w' write, 'f' flush, 'd' discard (reads are not recorded). */
typedef struct {
    char kind;
    uint64_t lba, count; /* blocks */
    uint64_t pending;    /* blocks written but not yet flushed when the call came */
} rec_event;

#define REC_MAX 16384
#define REC_EXTENTS 64

/* A hostdev whose write, flush and discard calls are recorded in order. Each discard is
 * also checked when it comes, against what the test expects it to release: blocks of
 * data of LUN `want_lun` version `want_version`, in whole extents (`bpe` blocks, the
 * first holding the first sector of a logical extent). */
typedef struct {
    hostdev *dev;
    rec_event ev[REC_MAX];
    size_t n;
    bool overflow;
    uint64_t bpe;
    uint32_t want_lun, want_version;
    uint64_t bad_blocks;             /* discarded blocks not holding the expected data */
    unsigned seen[REC_EXTENTS];      /* times each logical extent was discarded */
} recorder;

static recorder rec;

static void rec_start(recorder *r, uint32_t lun, uint32_t version) {
    r->n = 0;
    r->overflow = false;
    r->want_lun = lun;
    r->want_version = version;
    r->bad_blocks = 0;
    memset(r->seen, 0, sizeof r->seen);
}

static void rec_log(recorder *r, char kind, uint64_t lba, uint64_t count) {
    if (r->n == REC_MAX) {
        r->overflow = true;
        return;
    }
    rec_event e = {kind, lba, count, r->dev->npending};
    r->ev[r->n++] = e;
}

static int32_t rec_read(void *ctx, uint64_t lba, uint8_t *buf, size_t len) {
    return hostdev_read(((recorder *)ctx)->dev, lba, buf, len);
}

static int32_t rec_write(void *ctx, uint64_t lba, const uint8_t *buf, size_t len) {
    recorder *r = ctx;
    rec_log(r, 'w', lba, len / r->dev->block_size);
    return hostdev_write(r->dev, lba, buf, len);
}

static int32_t rec_flush(void *ctx) {
    recorder *r = ctx;
    rec_log(r, 'f', 0, 0);
    return hostdev_flush(r->dev);
}

static int32_t rec_discard(void *ctx, uint64_t lba, uint64_t count) {
    recorder *r = ctx;
    hostdev *d = r->dev;
    rec_log(r, 'd', lba, count);
    /* What the blocks hold now, before the device forgets them. */
    uint32_t first = 0;
    bool first_ok = false;
    for (uint64_t k = 0; k < count && lba + k < d->block_count; k++) {
        uint64_t b = lba + k;
        const uint8_t *blk = (d->dirty[b] ? d->cache : d->durable) + (size_t)b * d->block_size;
        uint32_t h[4];
        memcpy(h, blk, sizeof h);
        bool ok = h[0] == TAG_MAGIC && h[1] == r->want_lun && h[2] == r->want_version;
        if (k % r->bpe == 0) {
            first_ok = ok && h[3] % r->bpe == 0;
            first = h[3];
            ok = first_ok;
            if (ok && h[3] / r->bpe < REC_EXTENTS) {
                r->seen[h[3] / r->bpe]++;
            }
        } else {
            ok = ok && first_ok && h[3] == first + k % r->bpe;
        }
        if (!ok) {
            r->bad_blocks++;
        }
    }
    return hostdev_discard(d, lba, count);
}

static size_t rec_count(const recorder *r, char kind) {
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        n += r->ev[i].kind == kind;
    }
    return n;
}

/* The discards recorded since rec_start must be: after a commit's final flush (every
 * write flushed, the last call before them a flush that followed writes), in whole
 * extents, exactly the logical extents `extents` (each once) of the expected data. */
static void discards_are_at(const char *what, const unsigned *extents, size_t nextents, int line) {
    const recorder *r = &rec;
    size_t nd = 0;
    uint64_t blocks = 0;
    const char *order = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const rec_event *e = &r->ev[i];
        if (e->kind != 'd') {
            continue;
        }
        nd++;
        blocks += e->count;
        if (e->count == 0 || e->count % r->bpe != 0) {
            order = "a discard of a part of an extent";
        }
        if (e->pending != 0) {
            order = "a discard while written blocks were not yet flushed";
        }
        size_t j = i;
        while (j > 0 && r->ev[j - 1].kind == 'd') {
            j--;
        }
        if (j == 0 || r->ev[j - 1].kind != 'f') {
            order = "a discard not right after a flush";
        } else {
            bool wrote = false;
            for (size_t k = j - 1; k > 0 && !wrote; k--) {
                wrote = r->ev[k - 1].kind == 'w';
            }
            if (!wrote) {
                order = "a discard after a flush that no commit's writes preceded";
            }
        }
    }
    bool set_ok = true;
    for (unsigned x = 0; x < REC_EXTENTS; x++) {
        bool want = false;
        for (size_t i = 0; i < nextents; i++) {
            want = want || extents[i] == x;
        }
        set_ok = set_ok && r->seen[x] == (want ? 1u : 0u);
    }
    check_at(!r->overflow && order == NULL && r->bad_blocks == 0 && set_ok && blocks == nextents * r->bpe &&
                 (nextents == 0) == (nd == 0),
             line,
             "%s: %zu discard calls of %llu blocks in all (want %zu extents of %llu blocks), %llu blocks not "
             "holding the released data, extents %s%s%s",
             what, nd, (unsigned long long)blocks, nextents, (unsigned long long)r->bpe,
             (unsigned long long)r->bad_blocks, set_ok ? "as expected" : "not the expected ones (or twice)",
             order ? "; " : "", order ? order : "");
}

#define DISCARDS_ARE(what, ...)                                                                                \
    do {                                                                                                       \
        static const unsigned want_[] = {__VA_ARGS__};                                                         \
        discards_are_at((what), want_, sizeof want_ / sizeof want_[0], __LINE__);                              \
    } while (0)
#define NO_DISCARDS(what) discards_are_at((what), NULL, 0, __LINE__)

/* Writes version `v` of LUN `lun`'s tagged data over extents [first, first + count). */
static lunsnap_result tag_write(lunsnap_array *a, uint32_t lun, uint32_t v, uint64_t extent, uint32_t first,
                                uint32_t count) {
    static uint8_t buf[LUN_SIZE];
    size_t len = (size_t)count * extent;
    tag_fill(buf, len, lun, v, (uint64_t)first * extent);
    return lunsnap_write(a, lun, (uint64_t)first * extent, buf, len);
}

/* LUN `lun` must hold version versions[x] (0: zeros) of its tagged data in each extent x. */
static void lun_holds_at(lunsnap_array *a, uint32_t lun, uint64_t extent, const uint32_t *versions, size_t nextents,
                         const char *what, int line) {
    static uint8_t got[LUN_SIZE], want[LUN_SIZE];
    size_t len = nextents * extent;
    for (size_t x = 0; x < nextents; x++) {
        if (versions[x] == 0) {
            memset(want + x * extent, 0, extent);
        } else {
            tag_fill(want + x * extent, extent, lun, versions[x], x * extent);
        }
    }
    lunsnap_result r = lunsnap_read(a, lun, 0, got, len);
    check_at(r == LUNSNAP_RESULT_OK && memcmp(got, want, len) == 0, line, "%s: LUN %u %s", what, lun,
             r == LUNSNAP_RESULT_OK ? "does not hold its data (a discard released a live extent?)" : lunsnap_strerror(r));
}

#define LUN_HOLDS(a, lun, versions, what)                                                                      \
    lun_holds_at((a), (lun), DEXTENT, (versions), sizeof(versions) / sizeof((versions)[0]), (what), __LINE__)

#define DEXTENT 16384u /* 32 blocks of 512 bytes */
#define DLUN (16 * DEXTENT)

static void test_discard_callback(void) {
    section = "discard callback";
    hostdev d;
    if (!hostdev_init(&d, 512, 16384)) {
        CHECK(false, "out of memory");
        return;
    }
    memset(&rec, 0, sizeof rec);
    rec.dev = &d;
    rec.bpe = DEXTENT / 512;
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    cb.ctx = &rec;
    cb.read = rec_read;
    cb.write = rec_write;
    cb.flush = rec_flush;
    cb.discard = rec_discard;
    lunsnap_format_options o = small_opts();
    o.extent_size = DEXTENT;
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    /* LUN 1: 16 extents of version 1; LUN 2: 4 extents of version 1 (the rest a hole). */
    EXPECT_OK(lunsnap_create_lun(a, 1, DLUN));
    EXPECT_OK(lunsnap_create_lun(a, 2, DLUN));
    EXPECT_OK(tag_write(a, 1, 1, DEXTENT, 0, 16));
    EXPECT_OK(tag_write(a, 2, 1, DEXTENT, 0, 4));
    EXPECT_OK(lunsnap_flush(a));
    uint32_t v2[] = {1, 1, 1, 1, 0, 0};

    /* A deleted LUN: its mapping goes to the free queue, nothing is discarded yet (a
     * power cut then keeps the queue: it was committed with the delete); the reclaim
     * that frees it discards each of its extents, once, after its commit is durable. */
    rec_start(&rec, 1, 1);
    EXPECT_OK(lunsnap_delete(a, 1, false));
    NO_DISCARDS("delete LUN 1 (its mapping queued)");
    hostdev_power_cut(&d, HOSTDEV_CUT_DROP_ALL);
    hostdev_power_on(&d);
    EXPECT_OK(lunsnap_reopen(a));
    bool waiting = false;
    EXPECT_OK(lunsnap_reclaim_pending(a, &waiting));
    CHECK(waiting, "after LUN 1's delete, a power cut and a reopen: nothing waits in the free queue");
    rec_start(&rec, 1, 1);
    RECLAIM_ALL(a);
    DISCARDS_ARE("reclaim of LUN 1's mapping", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    LUN_HOLDS(a, 2, v2, "after LUN 1's delete");
    /* The discards came after the commit: a power cut now loses nothing committed. */
    hostdev_power_cut(&d, HOSTDEV_CUT_DROP_ALL);
    hostdev_power_on(&d);
    EXPECT_OK(lunsnap_reopen(a));
    size_t n = 99;
    EXPECT_OK(lunsnap_luns(a, NULL, 0, &n));
    CHECK(n == 1, "after the delete, a cut and a reopen: %zu LUNs", n);
    EXPECT_OK(lunsnap_reclaim_pending(a, &waiting));
    CHECK(!waiting, "after the reclaim, a cut and a reopen: the free queue is back");
    LUN_HOLDS(a, 2, v2, "after LUN 1's delete, a power cut and a reopen");

    /* A copy shares its parent's extents: deleting it, and reclaiming its mapping,
     * frees (and discards) none. */
    EXPECT_OK(lunsnap_create_copy(a, 2, 3, true));
    rec_start(&rec, 2, 1);
    EXPECT_OK(lunsnap_delete(a, 3, false));
    CHECK(rec_count(&rec, 'f') > 0, "the delete of a copy did not commit");
    RECLAIM_ALL(a);
    NO_DISCARDS("delete of a copy sharing everything, and the reclaim");

    /* Copy-on-write: the parent writes extent 0 (the copy keeps the old one): nothing is
     * freed until the copy goes, then exactly that old extent. */
    EXPECT_OK(lunsnap_create_copy(a, 2, 3, true));
    rec_start(&rec, 2, 1);
    EXPECT_OK(tag_write(a, 2, 2, DEXTENT, 0, 1));
    EXPECT_OK(lunsnap_flush(a));
    NO_DISCARDS("a write over an extent a copy shares");
    v2[0] = 2;
    rec_start(&rec, 2, 1);
    EXPECT_OK(lunsnap_delete(a, 3, false));
    RECLAIM_ALL(a);
    DISCARDS_ARE("delete of the copy holding the parent's old extent 0, and the reclaim", 0);
    LUN_HOLDS(a, 2, v2, "after the copy's delete");

    /* Overwriting a committed extent writes a new one: the old one is discarded after
     * the commit (the flush), not at the write. */
    rec_start(&rec, 2, 1);
    EXPECT_OK(tag_write(a, 2, 3, DEXTENT, 1, 1));
    CHECK(rec_count(&rec, 'd') == 0, "a data write discarded before any commit");
    EXPECT_OK(lunsnap_flush(a));
    DISCARDS_ARE("overwrite of extent 1 + flush", 1);
    v2[1] = 3;
    LUN_HOLDS(a, 2, v2, "after the overwrite");

    /* write_zeroes and zero detection unmap; the extents go at the next commit. */
    rec_start(&rec, 2, 1);
    EXPECT_OK(lunsnap_write_zeroes(a, 2, 2 * DEXTENT, DEXTENT, true));
    static uint8_t zeros[DEXTENT];
    EXPECT_OK(lunsnap_write(a, 2, 3 * DEXTENT, zeros, sizeof zeros));
    CHECK(rec_count(&rec, 'd') == 0, "write_zeroes or a write of zeros discarded before any commit");
    EXPECT_OK(lunsnap_flush(a));
    DISCARDS_ARE("write_zeroes of extent 2, zeros written over extent 3, flush", 2, 3);
    v2[2] = v2[3] = 0;
    LUN_HOLDS(a, 2, v2, "after write_zeroes");

    /* lunsnap_discard commits itself. */
    rec_start(&rec, 2, 2);
    EXPECT_OK(lunsnap_discard(a, 2, 0, DEXTENT));
    DISCARDS_ARE("lunsnap_discard of extent 0", 0);
    v2[0] = 0;
    LUN_HOLDS(a, 2, v2, "after lunsnap_discard");
    size_t nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after the discards: %zu violations", nv);

    /* A failing discard callback is ignored: the commit succeeded, the handle works. */
    EXPECT_OK(tag_write(a, 2, 4, DEXTENT, 4, 2));
    EXPECT_OK(lunsnap_flush(a));
    uint64_t before = d.discards;
    d.fail_discards = true;
    EXPECT_OK(lunsnap_delete(a, 2, false));
    RECLAIM_ALL(a);
    d.fail_discards = false;
    CHECK(d.discards > before, "the discard callback was not called for LUN 2's delete and reclaim");
    EXPECT_OK(lunsnap_create_lun(a, 4, DLUN));
    EXPECT_OK(tag_write(a, 4, 1, DEXTENT, 0, 3));
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_reopen(a));
    uint32_t v4[] = {1, 1, 1, 0};
    LUN_HOLDS(a, 4, v4, "after a failing discard");
    nv = 99;
    EXPECT_OK(lunsnap_check(a, &nv));
    CHECK(nv == 0, "check after a failing discard: %zu violations", nv);
    lunsnap_free(a);

    /* No discard callback (it is optional): frees work the same. */
    lunsnap_device_callbacks nocb = cb;
    nocb.discard = NULL;
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&nocb, NULL, &a));
    if (a) {
        rec_start(&rec, 4, 1);
        EXPECT_OK(lunsnap_delete(a, 4, false));
        RECLAIM_ALL(a);
        CHECK(rec_count(&rec, 'd') == 0 && rec_count(&rec, 'f') > 0, "without a discard callback: %zu discards",
              rec_count(&rec, 'd'));
        nv = 99;
        EXPECT_OK(lunsnap_check(a, &nv));
        CHECK(nv == 0, "check without a discard callback: %zu violations", nv);
        EXPECT_OK(lunsnap_close(a));
    }
    hostdev_destroy(&d);
}

/* ---- file devices ------------------------------------------------------------------------ */

#if defined(LUNSNAP_FEATURE_STD)
/* The array in the file at `path` still opens and holds LUN 1 with `w`. */
static bool image_intact(const char *path, const uint8_t *w, size_t len) {
    lunsnap_array *a = NULL;
    if (lunsnap_open_file(path, BS, NULL, &a) != LUNSNAP_RESULT_OK) {
        return false;
    }
    uint8_t *rd = malloc(len);
    bool ok = rd && lunsnap_read(a, 1, 0, rd, len) == LUNSNAP_RESULT_OK && memcmp(rd, w, len) == 0;
    free(rd);
    lunsnap_free(a);
    return ok;
}

/* Formats the image at `path` with LUN 1 holding `w` (LUN_SIZE bytes). */
static void make_image(const char *path, const uint8_t *w) {
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    if (lunsnap_format_file(path, BS, BLOCKS, &o, &a) != LUNSNAP_RESULT_OK) {
        return;
    }
    lunsnap_create_lun(a, 1, LUN_SIZE);
    lunsnap_write(a, 1, 0, w, LUN_SIZE);
    lunsnap_close(a);
}

/* image_intact, and if it is not, makes the image again (so that one failure does
 * not cascade into the next checks). */
static bool still_intact(const char *path, const uint8_t *w) {
    if (image_intact(path, w, LUN_SIZE)) {
        return true;
    }
    make_image(path, w);
    return false;
}

static void test_files(void) {
    section = "files";
    char dir[] = "/tmp/lunsnap-test-suite-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        CHECK(false, "mkdtemp failed");
        return;
    }
    char path[sizeof dir + 32], missing[sizeof dir + 32], blank[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/array.img", dir);
    snprintf(missing, sizeof missing, "%s/no/such/dir/array.img", dir);
    snprintf(blank, sizeof blank, "%s/blank.img", dir);
    lunsnap_format_options o = small_opts();
    lunsnap_open_options oo = open_defaults();
    lunsnap_array *const sentinel = forged();
    lunsnap_array *a = sentinel;

    EXPECT(lunsnap_format_file(NULL, BS, BLOCKS, &o, &a), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_format_file(path, BS, BLOCKS, &o, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_open_file(NULL, BS, &oo, &a), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_format_file("\xff\xfe/invalid-utf8", BS, BLOCKS, &o, &a), LUNSNAP_RESULT_INVALID_PATH);
    EXPECT(lunsnap_open_file("\xff\xfe/invalid-utf8", BS, &oo, &a), LUNSNAP_RESULT_INVALID_PATH);
    EXPECT(lunsnap_format_file(missing, BS, BLOCKS, &o, &a), LUNSNAP_RESULT_INVALID_PATH);
    EXPECT(lunsnap_open_file(missing, BS, &oo, &a), LUNSNAP_RESULT_INVALID_PATH);
    EXPECT(lunsnap_open_file(path, BS, &oo, &a), LUNSNAP_RESULT_INVALID_PATH); /* does not exist yet */
    EXPECT(lunsnap_format_file(dir, BS, BLOCKS, &o, &a), LUNSNAP_RESULT_INVALID_PATH);
    EXPECT(lunsnap_open_file(dir, BS, &oo, &a), LUNSNAP_RESULT_INVALID_PATH);
    CHECK(a == sentinel, "failed file calls wrote *out");

    /* A blank file holds no array. */
    FILE *f = fopen(blank, "wb");
    if (f) {
        static const uint8_t zeros[4096];
        for (int i = 0; i < 256; i++) {
            fwrite(zeros, 1, sizeof zeros, f);
        }
        fclose(f);
        EXPECT(lunsnap_open_file(blank, BS, &oo, &a), LUNSNAP_RESULT_NOT_FORMATTED);
        EXPECT(lunsnap_open_file(blank, BS, NULL, &a), LUNSNAP_RESULT_NOT_FORMATTED);
        CHECK(a == sentinel, "open of a blank file wrote *out");
    } else {
        CHECK(false, "cannot create %s", blank);
    }

    /* Format, write, close; open (NULL options), read back; check. */
    a = NULL;
    EXPECT_OK(lunsnap_format_file(path, BS, BLOCKS, &o, &a));
    static uint8_t w[LUN_SIZE], rd[LUN_SIZE];
    fill_bytes(w, sizeof w, 5);
    if (a) {
        EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
        EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
        EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
        EXPECT_OK(lunsnap_close(a));
    }
    EXPECT(lunsnap_open_file(path, BS, &oo, NULL), LUNSNAP_RESULT_NULL_POINTER);
    a = NULL;
    EXPECT_OK(lunsnap_open_file(path, BS, NULL, &a));
    if (a) {
        EXPECT_OK(lunsnap_read(a, 2, 0, rd, sizeof rd));
        CHECK(memcmp(rd, w, sizeof rd) == 0, "file array: copy 2 differs after close/open");
        /* reopen on a file device: unflushed writes are lost. */
        EXPECT_OK(lunsnap_write(a, 1, 0, rd + 512, 512));
        EXPECT_OK(lunsnap_reopen(a));
        EXPECT_OK(lunsnap_read(a, 1, 0, rd, sizeof rd));
        CHECK(memcmp(rd, w, sizeof rd) == 0, "file array: an unflushed write survived reopen");
        size_t nv = 99;
        EXPECT_OK(lunsnap_check(a, &nv));
        CHECK(nv == 0, "file array: %zu violations", nv);
        lunsnap_free(a);
    }
    CHECK(image_intact(path, w, sizeof w), "the image does not reopen after a clean close");

    /* Refused calls must leave an existing image alone. */
    lunsnap_format_options bo = small_opts();
    bo.extent_size = 3;
    a = sentinel;
    EXPECT(lunsnap_format_file(path, BS, BLOCKS, &bo, &a), LUNSNAP_RESULT_INVALID_OPTIONS);
    CHECK(still_intact(path, w),
          "lunsnap_format_file refused with INVALID_OPTIONS (extent_size 3) but destroyed the existing image "
          "(it truncates the file before validating the options)");
    bo = small_opts();
    bo.max_luns = 0;
    EXPECT(lunsnap_format_file(path, BS, BLOCKS, &bo, &a), LUNSNAP_RESULT_INVALID_OPTIONS);
    CHECK(still_intact(path, w), "format_file refused (max_luns 0) but destroyed the existing image");
    static const uint32_t bad_bs[] = {0, 1000, 8192};
    bool codes_ok = true;
    for (size_t i = 0; i < sizeof bad_bs / sizeof bad_bs[0]; i++) {
        lunsnap_result r = lunsnap_format_file(path, bad_bs[i], BLOCKS, &o, &a);
        if (r != LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE) {
            codes_ok = false;
            printf("  note: lunsnap_format_file(block_size %u) = %u (%s)\n", bad_bs[i], (unsigned)r,
                   lunsnap_strerror(r));
        }
        CHECK(r != LUNSNAP_RESULT_OK, "format_file(block_size %u) succeeded", bad_bs[i]);
        CHECK(still_intact(path, w), "format_file refused (block_size %u) but destroyed the existing image",
              bad_bs[i]);
        r = lunsnap_open_file(path, bad_bs[i], &oo, &a);
        if (r != LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE) {
            codes_ok = false;
            printf("  note: lunsnap_open_file(block_size %u) = %u (%s)\n", bad_bs[i], (unsigned)r,
                   lunsnap_strerror(r));
        }
    }
    CHECK(codes_ok, "the file functions must report a bad block size as LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE "
                    "(see the notes above)");
    CHECK(a == sentinel, "refused file calls wrote *out");
    /* Another valid block size than the image's: its own code, and a message naming
     * both sizes; the image is left alone. */
    a = sentinel;
    EXPECT_MSG(lunsnap_open_file(path, 512, &oo, &a), LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH,
               "lunsnap_open_file: the array was formatted on 4096-byte blocks but the device was opened with "
               "512-byte blocks");
    CHECK(a == sentinel, "open_file with another block size wrote *out");
    CHECK(still_intact(path, w), "open_file with another block size damaged the image");

    /* Format truncates an existing file: a new, empty array. */
    a = NULL;
    EXPECT_OK(lunsnap_format_file(path, BS, BLOCKS, &o, &a));
    if (a) {
        size_t n = 99;
        EXPECT_OK(lunsnap_luns(a, NULL, 0, &n));
        CHECK(n == 0, "re-formatted file still has %zu LUNs", n);
        EXPECT_OK(lunsnap_close(a));
    }
    /* NULL options: the defaults, which need lunsnap_min_device_bytes(NULL). */
    uint64_t min = 0;
    EXPECT_OK(lunsnap_min_device_bytes(NULL, &min));
    EXPECT(lunsnap_format_file(path, BS, (min - 1) / BS, NULL, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL);
    a = NULL;
    EXPECT_OK(lunsnap_format_file(path, BS, (min + BS - 1) / BS, NULL, &a));
    if (a) {
        lunsnap_pool_info p = {.struct_size = sizeof p};
        EXPECT_OK(lunsnap_get_pool_info(a, &p));
        CHECK(p.max_luns == 1024 && p.extent_size == 16384, "format_file with NULL options: not the defaults");
        EXPECT_OK(lunsnap_close(a));
    }
    /* A 512-byte-block image whose length is not a whole number of 4096-byte blocks,
     * opened with 4096: no file device can be made, but the library looks and still
     * says BLOCK_SIZE_MISMATCH, naming the right size. */
    a = NULL;
    EXPECT_OK(lunsnap_format_file(path, 512, 16385, &o, &a));
    if (a) {
        EXPECT_OK(lunsnap_close(a));
    }
    a = sentinel;
    EXPECT_MSG(lunsnap_open_file(path, 4096, &oo, &a), LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH,
               "lunsnap_open_file: the array was formatted on 512-byte blocks but the device was opened with "
               "4096-byte blocks: open it with a block size of 512");
    CHECK(a == sentinel, "a refused open_file wrote *out");
    a = NULL;
    EXPECT_OK(lunsnap_open_file(path, 512, &oo, &a));
    lunsnap_free(a);
    /* An image file whose newest superblock is damaged in both copies: COMMIT_LOST,
     * then a rollback when allowed. (g1 only adds LUN 2, so that no extent g0 maps is
     * freed, and discarded, by g1's commit.) */
    a = NULL;
    EXPECT_OK(lunsnap_format_file(path, BS, BLOCKS, &o, &a));
    if (a) {
        uint8_t w4[4096];
        fill_bytes(w4, sizeof w4, 44);
        EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
        EXPECT_OK(lunsnap_write(a, 1, 0, w4, sizeof w4));
        EXPECT_OK(lunsnap_flush(a));
        EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
        EXPECT_OK(lunsnap_flush(a));
        lunsnap_pool_info p = {.struct_size = sizeof p};
        EXPECT_OK(lunsnap_get_pool_info(a, &p));
        uint64_t g1 = p.generation;
        lunsnap_free(a);
        FILE *img = fopen(path, "r+b");
        CHECK(img != NULL, "cannot open %s", path);
        if (img) {
            uint64_t pages[2] = {g1 % 2, (uint64_t)BLOCKS * BS / 4096 - 2 + g1 % 2};
            for (int i = 0; i < 2; i++) {
                uint8_t byte = 0;
                long at = (long)(pages[i] * 4096 + 100);
                CHECK(fseek(img, at, SEEK_SET) == 0 && fread(&byte, 1, 1, img) == 1, "cannot read %s", path);
                byte ^= 0xff;
                CHECK(fseek(img, at, SEEK_SET) == 0 && fwrite(&byte, 1, 1, img) == 1, "cannot write %s", path);
            }
            CHECK(fclose(img) == 0, "cannot close %s", path);
        }
        char want[96];
        snprintf(want, sizeof want, "both copies of the superblock of generation %llu are damaged",
                 (unsigned long long)g1);
        a = sentinel;
        EXPECT_MSG(lunsnap_open_file(path, BS, &oo, &a), LUNSNAP_RESULT_COMMIT_LOST, want);
        CHECK(a == sentinel, "a refused open_file wrote *out");
        lunsnap_open_options ro = open_defaults();
        ro.allow_rollback = 1;
        a = NULL;
        EXPECT_OK(lunsnap_open_file(path, BS, &ro, &a));
        if (a) {
            EXPECT_OK(lunsnap_get_pool_info(a, &p));
            size_t n = 0;
            EXPECT_OK(lunsnap_luns(a, NULL, 0, &n));
            uint8_t r4[4096];
            EXPECT_OK(lunsnap_read(a, 1, 0, r4, sizeof r4));
            CHECK(p.generation == g1 - 1 && p.rollback_lost_generation == g1 && p.rollback_kept_generation == g1 - 1 &&
                      n == 1 && memcmp(r4, w4, sizeof w4) == 0,
                  "file rolled back: generation %llu, rollback %llu -> %llu, %zu LUNs, LUN 1 %s",
                  (unsigned long long)p.generation, (unsigned long long)p.rollback_lost_generation,
                  (unsigned long long)p.rollback_kept_generation, n,
                  memcmp(r4, w4, sizeof w4) == 0 ? "intact" : "differs");
            EXPECT_OK(lunsnap_close(a));
        }
    }
    /* No array, and a length that is no whole number of blocks: the file's fault. */
    CHECK(truncate(blank, 256 * 4096 + 512) == 0, "cannot resize %s", blank);
    EXPECT_MSG(lunsnap_open_file(blank, 4096, &oo, &a), LUNSNAP_RESULT_INVALID_PATH,
               "file length is not a whole number of blocks");
    EXPECT_MSG(lunsnap_open_file(blank, 512, &oo, &a), LUNSNAP_RESULT_NOT_FORMATTED,
               "lunsnap_open_file: not a lunsnap device");
    EXPECT_MSG(lunsnap_open_file(missing, BS, &oo, &a), LUNSNAP_RESULT_INVALID_PATH, "lunsnap_open_file: cannot open \"");
    CHECK(last_message_has(NULL, "No such file or directory"), "open of a missing file: \"%s\"", last_message(NULL));
    CHECK(unlink(path) == 0, "cannot remove %s", path);
    CHECK(unlink(blank) == 0, "cannot remove %s", blank);
    CHECK(rmdir(dir) == 0, "cannot remove %s", dir);
}
#endif

/* ---- issue 16: error messages, struct_size, new queries, device detail ---------------------- */

/* The thread's message, copied (last_message's buffer is reused). */
static void copy_message(char *dst, size_t n, lunsnap_array *a) {
    snprintf(dst, n, "%s", last_message(a));
}

typedef struct {
    lunsnap_array *a;
    char own[256];
} other_thread;

/* Fails on `a` in another thread and keeps that thread's message. */
static void *fail_elsewhere(void *arg) {
    other_thread *t = arg;
    (void)lunsnap_detach(t->a, 9);
    copy_message(t->own, sizeof t->own, NULL);
    return NULL;
}

static void test_error_messages(void) {
    section = "last_error_message";
    char buf[256];
    size_t len = 99;
    /* Its own arguments (it records nothing). */
    EXPECT(lunsnap_last_error_message(NULL, buf, sizeof buf, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_last_error_message(NULL, NULL, 8, &len), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_last_error_message(forged(), buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_HANDLE);
    CHECK(len == 99, "failed lunsnap_last_error_message wrote *out_len");

    /* A call without a handle: only the thread keeps its message. */
    lunsnap_array *a = NULL;
    lunsnap_format_options o = small_opts();
    o.extent_size = 6000;
    EXPECT_MSG(lunsnap_format_mem(BS, BLOCKS, &o, &a), LUNSNAP_RESULT_INVALID_OPTIONS,
               "lunsnap_format_mem: invalid options: extent");
    o = small_opts();
    o.max_luns = 0;
    EXPECT_MSG(lunsnap_min_device_bytes(&o, &(uint64_t){0}), LUNSNAP_RESULT_INVALID_OPTIONS,
               "lunsnap_min_device_bytes: invalid options: max_luns must be from 1");
    EXPECT_MSG(lunsnap_format_mem(1000, BLOCKS, NULL, &a), LUNSNAP_RESULT_UNSUPPORTED_BLOCK_SIZE,
               "unsupported device block size 1000");
    EXPECT_MSG(lunsnap_format_mem(BS, 0, NULL, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL, "`block_count` is 0");
    EXPECT_MSG(lunsnap_format_mem(BS, BLOCKS, NULL, NULL), LUNSNAP_RESULT_NULL_POINTER,
               "lunsnap_format_mem: `out` is NULL");
    EXPECT_MSG(lunsnap_create_lun(NULL, 1, 4096), LUNSNAP_RESULT_NULL_POINTER, "lunsnap_create_lun: `array` is NULL");
    EXPECT_MSG(lunsnap_close(forged()), LUNSNAP_RESULT_INVALID_HANDLE,
               "lunsnap_close: `array` (0x");
    EXPECT_MSG(lunsnap_close(NULL), LUNSNAP_RESULT_NULL_POINTER, "lunsnap_close: `array` is NULL");

    /* A message stays until the next failure: successes, and the library's own
     * message calls, leave it. */
    char keep[256];
    copy_message(keep, sizeof keep, NULL);
    a = new_array(__LINE__);
    if (!a) {
        return;
    }
    EXPECT(lunsnap_last_error_message(forged(), buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_HANDLE);
    CHECK(strcmp(last_message(NULL), keep) == 0, "a success replaced the message \"%s\" with \"%s\"", keep,
          last_message(NULL));
    /* A handle that never failed has no message. */
    len = 99;
    memset(buf, 'x', sizeof buf);
    EXPECT_OK(lunsnap_last_error_message(a, buf, sizeof buf, &len));
    CHECK(len == 0 && buf[0] == '\0', "a fresh handle's message: %zu bytes", len);

    /* Which argument, which LUN, how many bytes: the core's full message. */
    static uint8_t io[LUN_SIZE];
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    lunsnap_pool_info p = {.struct_size = sizeof p};
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    uint64_t big = p.unreserved_bytes + EXTENT;
    char want[160];
    snprintf(want, sizeof want,
             "lunsnap_create_lun: not enough space to reserve: %llu bytes needed, %llu unreserved",
             (unsigned long long)big, (unsigned long long)p.unreserved_bytes);
    EXPECT_MSG(lunsnap_create_lun(a, 2, big), LUNSNAP_RESULT_NO_SPACE, want);
    CHECK(strcmp(last_message(a), want) == 0, "the handle's message \"%s\", want \"%s\"", last_message(a), want);
    EXPECT_MSG(lunsnap_read(a, 1, 0, NULL, 4096), LUNSNAP_RESULT_NULL_POINTER,
               "lunsnap_read: `buf` is NULL but `len` is 4096");
    EXPECT_MSG(lunsnap_write(a, 1, 100, io, 512), LUNSNAP_RESULT_MISALIGNED,
               "lunsnap_write: the offset 100 is not a multiple of 512: LUNs are read and written in whole 512-byte sectors");
    snprintf(want, sizeof want, "lunsnap_read: I/O of 512 bytes at offset %u is beyond the end of the LUN (%u bytes)",
             LUN_SIZE, LUN_SIZE);
    EXPECT_MSG(lunsnap_read(a, 1, LUN_SIZE, io, 512), LUNSNAP_RESULT_OUT_OF_RANGE, want);
    lunsnap_lun_info li = {.struct_size = sizeof li};
    EXPECT_MSG(lunsnap_get_lun_info(a, 7, &li), LUNSNAP_RESULT_NO_SUCH_LUN, "lunsnap_get_lun_info: no such LUN: 7");
    EXPECT_MSG(lunsnap_get_lun_info(a, 99, &li), LUNSNAP_RESULT_LUN_OUT_OF_RANGE,
               "LUN number 99 is out of range: this array has LUNs 0 to 15");
    EXPECT_MSG(lunsnap_get_pool_info(a, NULL), LUNSNAP_RESULT_NULL_POINTER, "lunsnap_get_pool_info: `out` is NULL");
    EXPECT_MSG(lunsnap_luns(a, NULL, 3, &len), LUNSNAP_RESULT_NULL_POINTER,
               "lunsnap_luns: `numbers` is NULL but `capacity` is 3");
    EXPECT_MSG(lunsnap_map(a, 1, 0, 512, NULL, 0, NULL), LUNSNAP_RESULT_NULL_POINTER, "`out_count` is NULL");
    EXPECT_MSG(lunsnap_grant(a, 1, 5, 7), LUNSNAP_RESULT_INVALID_ARGUMENT, "lunsnap_grant: `access` is 7");
    EXPECT_MSG(lunsnap_grant(a, 1, 0x5eed, LUNSNAP_ACCESS_READ), LUNSNAP_RESULT_NO_SUCH_HOST,
               "no such host: 0000000000005eed");
    EXPECT_MSG(lunsnap_add_host(a, 5, "this host name is longer than fifty-six bytes, so it is refused"),
               LUNSNAP_RESULT_INVALID_ARGUMENT, "lunsnap_add_host: invalid argument: host name longer than 56 bytes");
    EXPECT_MSG(lunsnap_add_host(a, 5, "\xff"), LUNSNAP_RESULT_INVALID_ARGUMENT, "`name` is not valid UTF-8");
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, false));
    EXPECT_MSG(lunsnap_delete(a, 1, false), LUNSNAP_RESULT_HAS_COPIES, "LUN 1 has 1 copy: delete it first");
    EXPECT_MSG(lunsnap_read(a, 3, 0, io, 512), LUNSNAP_RESULT_DETACHED, "LUN 3 is a detached copy");
    EXPECT_MSG(lunsnap_check_message(a, 5, buf, sizeof buf, &len), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "lunsnap_check_message: `index` is 5");
    const uint32_t cp[1] = {1};
    EXPECT_MSG(lunsnap_create_copies(a, cp, NULL, 1, true), LUNSNAP_RESULT_NULL_POINTER,
               "`copies` is NULL but `count` is 1");
    EXPECT_MSG(lunsnap_attach_many(a, cp, SIZE_MAX), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "`count` is 18446744073709551615: more than any buffer can hold");

    /* The text convention: truncated and NUL-terminated, the full length reported. */
    char full[256];
    copy_message(full, sizeof full, NULL);
    size_t flen = strlen(full);
    char small[8];
    memset(small, 'x', sizeof small);
    EXPECT_OK(lunsnap_last_error_message(NULL, small, sizeof small, &len));
    CHECK(len == flen && small[7] == '\0' && strncmp(small, full, 7) == 0, "truncated message \"%s\" (%zu of %zu)",
          small, len, flen);
    EXPECT_OK(lunsnap_last_error_message(NULL, NULL, 0, &len));
    CHECK(len == flen, "length query: %zu, want %zu", len, flen);
    small[0] = 'x';
    EXPECT_OK(lunsnap_last_error_message(NULL, small, 1, &len));
    CHECK(small[0] == '\0' && len == flen, "a 1-byte buffer gets just the NUL");

    /* A handle's message is its own: failures elsewhere do not replace it. */
    char mine[256];
    copy_message(mine, sizeof mine, a);
    lunsnap_array *b = new_array(__LINE__);
    if (b) {
        EXPECT_MSG(lunsnap_attach(b, 3), LUNSNAP_RESULT_NO_SUCH_LUN, "lunsnap_attach: no such LUN: 3");
        CHECK(strcmp(last_message(b), "lunsnap_attach: no such LUN: 3") == 0, "b's message: \"%s\"",
              last_message(b));
        EXPECT(lunsnap_create_lun(NULL, 1, 512), LUNSNAP_RESULT_NULL_POINTER);
        CHECK(strcmp(last_message(a), mine) == 0, "a's message replaced by another handle's failure: \"%s\"",
              last_message(a));

        /* Each thread has its own (std); without std one slot holds the last of any. */
        char before[256];
        copy_message(before, sizeof before, NULL);
        other_thread t = {.a = b};
        pthread_t th;
        if (pthread_create(&th, NULL, fail_elsewhere, &t) == 0) {
            pthread_join(th, NULL);
            CHECK(strcmp(t.own, "lunsnap_detach: no such LUN: 9") == 0, "the other thread's message: \"%s\"", t.own);
            CHECK(strcmp(last_message(b), "lunsnap_detach: no such LUN: 9") == 0,
                  "the handle keeps the other thread's failure: \"%s\"", last_message(b));
#if defined(LUNSNAP_FEATURE_STD)
            CHECK(strcmp(last_message(NULL), before) == 0, "another thread's failure replaced this thread's: \"%s\"",
                  last_message(NULL));
#else
            CHECK(strcmp(last_message(NULL), t.own) == 0, "no_std: one slot, the last failure of any thread: \"%s\"",
                  last_message(NULL));
#endif
        } else {
            CHECK(false, "pthread_create failed");
        }
        lunsnap_free(b);
    }
    lunsnap_free(a);
}

/* ---- struct_size: the library reads and writes only the caller's prefix ------------------------ */

static void test_struct_size(void) {
    section = "struct_size";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));

    /* Refused sizes: nothing written. */
    lunsnap_lun_info li, li0;
    memset(&li, 0x33, sizeof li);
    li.struct_size = 0;
    li0 = li;
    EXPECT_MSG(lunsnap_get_lun_info(a, 1, &li), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "lunsnap_get_lun_info: `out->struct_size` is 0: set it to sizeof the struct");
    li.struct_size = sizeof(size_t) - 1;
    EXPECT(lunsnap_get_lun_info(a, 1, &li), LUNSNAP_RESULT_INVALID_ARGUMENT);
    li.struct_size = LUNSNAP_STRUCT_SIZE_MAX + 1;
    EXPECT(lunsnap_get_lun_info(a, 1, &li), LUNSNAP_RESULT_INVALID_ARGUMENT);
    li.struct_size = 0;
    CHECK(memcmp(&li, &li0, sizeof li) == 0, "refused struct_size: *out written");
    lunsnap_pool_info pi;
    memset(&pi, 0, sizeof pi);
    EXPECT(lunsnap_get_pool_info(a, &pi), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_get_lun_info_as(a, 7, 1, &li), LUNSNAP_RESULT_INVALID_ARGUMENT);

    /* Just the size: nothing else is written. */
    li.struct_size = sizeof(size_t);
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.lun == li0.lun && li.size == li0.size && li.online == li0.online, "a struct_size of sizeof(size_t): "
                                                                                 "fields written");
    /* Part of the struct: the fields inside it, not one byte more. */
    memset(&li, 0x33, sizeof li);
    li.struct_size = offsetof(lunsnap_lun_info, has_parent);
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.lun == 1 && li.kind == LUNSNAP_LUN_KIND_LUN && li.size == LUN_SIZE, "prefix fields wrong");
    CHECK(all_bytes((const uint8_t *)&li + offsetof(lunsnap_lun_info, has_parent),
                    sizeof li - offsetof(lunsnap_lun_info, has_parent), 0x33),
          "get_lun_info wrote past struct_size");

    /* A newer program's bigger struct: the fields the library does not know read 0. */
    struct {
        lunsnap_pool_info p;
        uint64_t future[3];
    } newer;
    memset(&newer, 0xaa, sizeof newer);
    newer.p.struct_size = sizeof newer;
    EXPECT_OK(lunsnap_get_pool_info(a, &newer.p));
    CHECK(newer.p.luns == 1 && newer.p.max_luns == MAX_LUNS && newer.p.extent_size == EXTENT &&
              newer.future[0] == 0 && newer.future[1] == 0 && newer.future[2] == 0,
          "bigger pool_info: luns %u, future %llx", newer.p.luns, (unsigned long long)newer.future[0]);
    CHECK(newer.p.struct_size == sizeof newer, "the library changed struct_size");
    CHECK(newer.p.metadata_used_bytes > 0 && newer.p.metadata_used_bytes <= newer.p.metadata_provisioned_bytes,
          "metadata used %llu of %llu", (unsigned long long)newer.p.metadata_used_bytes,
          (unsigned long long)newer.p.metadata_provisioned_bytes);

    /* Options: init writes the size and the defaults, within the size given. */
    lunsnap_format_options fo;
    EXPECT(lunsnap_format_options_init(NULL, sizeof fo), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_format_options_init(&fo, 0), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_open_options_init(NULL, sizeof(lunsnap_open_options)), LUNSNAP_RESULT_NULL_POINTER);
    memset(&fo, 0x44, sizeof fo);
    EXPECT_OK(lunsnap_format_options_init(&fo, offsetof(lunsnap_format_options, cache_bytes)));
    CHECK(fo.struct_size == offsetof(lunsnap_format_options, cache_bytes) && fo.extent_size == 16384 &&
              fo.max_luns == 1024 && all_bytes((const uint8_t *)&fo.cache_bytes, sizeof fo - offsetof(lunsnap_format_options, cache_bytes), 0x44),
          "init with a short struct_size");
    /* An input shorter than the library's: the fields it lacks take their defaults. */
    fo.extent_size = EXTENT;
    fo.max_luns = MAX_LUNS;
    lunsnap_array *s = NULL;
    EXPECT_OK(lunsnap_format_mem(BS, BLOCKS, &fo, &s));
    if (s) {
        lunsnap_pool_info q = {.struct_size = sizeof q};
        EXPECT_OK(lunsnap_get_pool_info(s, &q));
        CHECK(q.extent_size == EXTENT && q.max_luns == MAX_LUNS, "short options: extent %u, max_luns %u",
              q.extent_size, q.max_luns);
        lunsnap_free(s);
    }
    fo.struct_size = 0;
    EXPECT_MSG(lunsnap_format_mem(BS, BLOCKS, &fo, &s), LUNSNAP_RESULT_INVALID_ARGUMENT, "`opts->struct_size` is 0");
    EXPECT(lunsnap_min_device_bytes(&fo, &(uint64_t){0}), LUNSNAP_RESULT_INVALID_ARGUMENT);
    lunsnap_open_options oo;
    memset(&oo, 0, sizeof oo);
    hostdev d;
    if (hostdev_init(&d, 512, 16384)) {
        lunsnap_device_callbacks cb = hostdev_callbacks(&d);
        EXPECT(lunsnap_open_callbacks(&cb, &oo, &s), LUNSNAP_RESULT_INVALID_ARGUMENT);
        cb.struct_size = 0;
        EXPECT_MSG(lunsnap_format_callbacks(&cb, NULL, &s), LUNSNAP_RESULT_INVALID_ARGUMENT,
                   "`dev->struct_size` is 0");
        /* Callbacks from an older header without `discard`: none is called. */
        cb.struct_size = offsetof(lunsnap_device_callbacks, discard);
        lunsnap_format_options so = small_opts();
        s = NULL;
        EXPECT_OK(lunsnap_format_callbacks(&cb, &so, &s));
        if (s) {
            EXPECT_OK(lunsnap_create_lun(s, 1, LUN_SIZE));
            static uint8_t w[LUN_SIZE];
            fill_bytes(w, sizeof w, 3);
            EXPECT_OK(lunsnap_write(s, 1, 0, w, sizeof w));
            EXPECT_OK(lunsnap_delete(s, 1, false));
            CHECK(d.discards == 0, "a callbacks struct without discard: %llu discards",
                  (unsigned long long)d.discards);
            EXPECT_OK(lunsnap_close(s));
        }
        /* ... and one without `flush` (a required callback) is refused. */
        cb.struct_size = offsetof(lunsnap_device_callbacks, flush);
        EXPECT_MSG(lunsnap_open_callbacks(&cb, NULL, &s), LUNSNAP_RESULT_NULL_POINTER, "`dev->flush` is NULL");
        hostdev_destroy(&d);
    }
    lunsnap_free(a);
}

/* ---- grants, LUN info as a host, poisoned, the least device --------------------------------- */

static void test_new_queries(void) {
    section = "grants list";
    lunsnap_array *a = new_array(__LINE__);
    if (!a) {
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, 2, 1024)); /* reserves a whole extent */
    EXPECT_OK(lunsnap_add_host(a, 0x30, "c"));
    EXPECT_OK(lunsnap_add_host(a, 0x10, "a"));
    EXPECT_OK(lunsnap_add_host(a, 0x20, "b"));
    EXPECT_OK(lunsnap_grant(a, 1, 0x30, LUNSNAP_ACCESS_READ_WRITE));
    EXPECT_OK(lunsnap_grant(a, 1, 0x10, LUNSNAP_ACCESS_READ));
    size_t n = 99;
    EXPECT_OK(lunsnap_grants(a, 1, NULL, 0, &n));
    CHECK(n == 2, "grants on LUN 1: %zu", n);
    lunsnap_host_grant g[4];
    memset(g, 0x5a, sizeof g);
    EXPECT_OK(lunsnap_grants(a, 1, g, 4, &n));
    CHECK(n == 2 && g[0].host == 0x10 && g[0].access == LUNSNAP_ACCESS_READ && g[0].reserved == 0 &&
              g[1].host == 0x30 && g[1].access == LUNSNAP_ACCESS_READ_WRITE,
          "grants on LUN 1: %zu: %llx/%u %llx/%u", n, (unsigned long long)g[0].host, (unsigned)g[0].access,
          (unsigned long long)g[1].host, (unsigned)g[1].access);
    memset(g, 0x5a, sizeof g);
    EXPECT_OK(lunsnap_grants(a, 1, g, 1, &n));
    CHECK(n == 2 && g[0].host == 0x10 && all_bytes((const uint8_t *)&g[1], sizeof g[1], 0x5a),
          "grants with capacity 1");
    EXPECT_OK(lunsnap_grants(a, 2, g, 4, &n));
    CHECK(n == 0, "grants on LUN 2: %zu", n);
    n = 99;
    EXPECT(lunsnap_grants(a, 7, g, 4, &n), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_grants(a, MAX_LUNS, g, 4, &n), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_grants(a, 1, NULL, 2, &n), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_grants(a, 1, g, SIZE_MAX, &n), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_grants(a, 1, g, 4, NULL), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(n == 99, "failed grants wrote *out_count");
    EXPECT_OK(lunsnap_set_security(a, true));
    EXPECT_OK(lunsnap_revoke(a, 1, 0x10));
    EXPECT_OK(lunsnap_grants(a, 1, g, 4, &n));
    CHECK(n == 1 && g[0].host == 0x30, "after revoke: %zu grants", n);
    EXPECT_OK(lunsnap_remove_host(a, 0x30));
    EXPECT_OK(lunsnap_grants(a, 1, g, 4, &n));
    CHECK(n == 0, "after remove_host: %zu grants", n);

    /* The most hosts an array registers: 64 (lunsnap_add_host's TOO_MANY_HOSTS). */
    section = "too many hosts";
    size_t have = 0;
    EXPECT_OK(lunsnap_hosts(a, NULL, 0, &have));
    for (uint64_t id = 0x1000; have < 64; id++, have++) {
        EXPECT_OK(lunsnap_add_host(a, id, NULL));
    }
    EXPECT_MSG(lunsnap_add_host(a, 0x9999, "one more"), LUNSNAP_RESULT_TOO_MANY_HOSTS,
               "lunsnap_add_host: the array already has 64 hosts: remove one first");
    EXPECT_OK(lunsnap_remove_host(a, 0x1000));
    EXPECT_OK(lunsnap_add_host(a, 0x9999, "one more"));

    section = "lun_info_as";
    lunsnap_lun_info want = {.struct_size = sizeof want}, got = {.struct_size = sizeof got};
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &want));
    EXPECT(lunsnap_get_lun_info_as(a, 0x10, 1, &got), LUNSNAP_RESULT_NO_SUCH_LUN); /* no grant */
    EXPECT(lunsnap_get_lun_info_as(a, 0x99, 1, &got), LUNSNAP_RESULT_NO_SUCH_LUN); /* no such host */
    EXPECT(lunsnap_get_lun_info_as(a, 0x10, 7, &got), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_get_lun_info_as(a, 0x10, MAX_LUNS, &got), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_get_lun_info_as(a, 0x10, 1, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT_OK(lunsnap_grant(a, 1, 0x10, LUNSNAP_ACCESS_READ));
    EXPECT_OK(lunsnap_get_lun_info_as(a, 0x10, 1, &got));
    CHECK(got.lun == 1 && got.size == want.size && got.reserved_bytes == want.reserved_bytes &&
              got.created_generation == want.created_generation,
          "lun_info_as differs from lun_info");
    EXPECT_OK(lunsnap_set_security(a, false));
    EXPECT_OK(lunsnap_get_lun_info_as(a, 0x99, 2, &got));
    /* A reservation is whole extents: LUN 2 of 1 KiB reserves one extent. */
    CHECK(got.lun == 2 && got.size == 1024 && got.reserved_bytes == EXTENT,
          "LUN 2 of 1 KiB: size %llu, reserved %llu", (unsigned long long)got.size,
          (unsigned long long)got.reserved_bytes);

    section = "is_poisoned";
    bool poisoned = true;
    EXPECT_OK(lunsnap_is_poisoned(a, &poisoned));
    CHECK(!poisoned, "a fresh array is poisoned");
    EXPECT(lunsnap_is_poisoned(a, NULL), LUNSNAP_RESULT_NULL_POINTER);
    lunsnap_free(a);

    section = "min_device_bytes";
    uint64_t min_def = 0, min_small = 0;
    EXPECT_OK(lunsnap_min_device_bytes(NULL, &min_def));
    lunsnap_format_options o = small_opts();
    EXPECT_OK(lunsnap_min_device_bytes(&o, &min_small));
    CHECK(min_small > 0 && min_small < min_def && min_small <= (uint64_t)BS * BLOCKS,
          "least devices: %llu (defaults), %llu (16 LUNs)", (unsigned long long)min_def,
          (unsigned long long)min_small);
    EXPECT(lunsnap_min_device_bytes(&o, NULL), LUNSNAP_RESULT_NULL_POINTER);
    lunsnap_array *b = NULL;
    EXPECT_OK(lunsnap_format_mem(512, (min_small + 511) / 512, &o, &b));
    lunsnap_free(b);
    b = NULL;
    EXPECT(lunsnap_format_mem(512, (min_small - 1) / 512, &o, &b), LUNSNAP_RESULT_DEVICE_TOO_SMALL);
    CHECK(b == NULL, "a refused format wrote *out");
}

/* ---- the device's detail in the message; poisoned handles ------------------------------------ */

static void test_device_detail(void) {
    section = "device detail";
    hostdev d;
    if (!hostdev_init(&d, 512, 16384)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;

    /* Format and open report what the callback said. */
    d.fail_writes = true;
    d.fail_code = -30; /* EROFS */
    EXPECT_MSG(lunsnap_format_callbacks(&cb, &o, &a), LUNSNAP_RESULT_DEVICE_IO,
               "lunsnap_format_callbacks: device error: input/output error (write of ");
#if defined(LUNSNAP_FEATURE_STD)
    CHECK(last_message_has(NULL, "the callback returned -30: Read-only file system)"), "format: \"%s\"",
          last_message(NULL));
#else
    CHECK(last_message_has(NULL, "the callback returned -30 (errno 30))"), "format: \"%s\"", last_message(NULL));
#endif
    hostdev_heal(&d);
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
    static uint8_t w[4096];
    fill_bytes(w, sizeof w, 9);
    EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
    EXPECT_OK(lunsnap_flush(a));

    /* A read that fails: which blocks, and the errno. */
    EXPECT_OK(lunsnap_reopen(a)); /* nothing cached: the next read reaches the device */
    d.fail_reads = true;
    d.fail_code = -5;
    EXPECT_MSG(lunsnap_read(a, 1, 0, w, sizeof w), LUNSNAP_RESULT_DEVICE_IO, "(read of ");
#if defined(LUNSNAP_FEATURE_STD)
    CHECK(last_message_has(a, "bytes at block ") && last_message_has(a, "the callback returned -5: Input/output error)"),
          "read: \"%s\"", last_message(a));
#endif
    hostdev_heal(&d);

    /* Any other non-zero value is reported as is. */
    d.fail_flush_at = 1;
    d.fail_code = 7;
    EXPECT_OK(lunsnap_write(a, 1, 0, w, sizeof w));
    EXPECT_MSG(lunsnap_flush(a), LUNSNAP_RESULT_DEVICE_IO,
               "lunsnap_flush: device error: input/output error (flush: the callback returned 7)");
    hostdev_heal(&d);

    /* The failed commit poisoned the handle: changes are refused until a reopen. */
    bool poisoned = false;
    EXPECT_OK(lunsnap_is_poisoned(a, &poisoned));
    CHECK(poisoned, "a failed commit did not poison the handle");
    EXPECT_MSG(lunsnap_create_lun(a, 2, 4096), LUNSNAP_RESULT_POISONED,
               "lunsnap_create_lun: an earlier device error left this handle read-only");
    CHECK(!last_message_has(NULL, "callback"), "a later, non-device failure carries an old device detail: \"%s\"",
          last_message(NULL));
    EXPECT_OK(lunsnap_reopen(a));
    EXPECT_OK(lunsnap_is_poisoned(a, &poisoned));
    CHECK(!poisoned, "still poisoned after reopen");

    /* A discard that fails is ignored, and leaves nothing in a later message. */
    d.fail_discards = true;
    d.fail_code = -95;
    EXPECT_OK(lunsnap_delete(a, 1, false));
    EXPECT_MSG(lunsnap_delete(a, 1, false), LUNSNAP_RESULT_NO_SUCH_LUN, "lunsnap_delete: no such LUN: 1");
    CHECK(!last_message_has(NULL, "callback"), "NO_SUCH_LUN carries a device detail: \"%s\"", last_message(NULL));
    hostdev_heal(&d);
    EXPECT_OK(lunsnap_close(a));

    /* Opening with another block size than at format: its own code, on a copy of
     * the medium seen as 4096-byte blocks. */
    section = "block size mismatch";
    hostdev big;
    if (hostdev_init(&big, 4096, 2048)) {
        memcpy(big.durable, d.durable, (size_t)512 * 16384);
        lunsnap_device_callbacks bcb = hostdev_callbacks(&big);
        a = forged();
        EXPECT_MSG(lunsnap_open_callbacks(&bcb, NULL, &a), LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH,
                   "lunsnap_open_callbacks: the array was formatted on 512-byte blocks but the device was opened "
                   "with 4096-byte blocks: open it with a block size of 512");
        CHECK(a == forged(), "a refused open wrote *out");
        hostdev_destroy(&big);
    }
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    lunsnap_free(a);
    hostdev_destroy(&d);
}

/* ---- metadata copies, healing, scrub, lost commits ------------------------------------------- */

/* Arrays on a host device of 4 KiB blocks: a block is a metadata page. */
#define PAGE 4096u
#define MD_BLOCKS 2048u
#define MD_LUN_SIZE (256u * 1024u)

static uint8_t md_want[MD_LUN_SIZE], md_got[MD_LUN_SIZE];

/* Where an array keeps its metadata (docs/FORMAT.md): superblock slots 0 and 1 in
 * pages 0 and 1, their second copies in the device's last two pages; the metadata
 * area from page 2, `meta_pages` long; with two copies, page p's second copy at page
 * p + mirror (the area again, just before the superblocks' second copies). */
typedef struct {
    uint64_t device_pages, meta_pages, mirror;
    uint32_t copies;
} md_layout;

static lunsnap_pool_info pool_of(lunsnap_array *a) {
    lunsnap_pool_info p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    EXPECT_OK(lunsnap_get_pool_info(a, &p));
    return p;
}

/* The layout, from what lunsnap_pool_info says is provisioned: every copy of the
 * metadata area and the four superblock pages. */
static md_layout layout_of(lunsnap_array *a, const hostdev *d) {
    lunsnap_pool_info p = pool_of(a);
    md_layout l = {d->block_count * d->block_size / PAGE, 0, 0, p.metadata_copies};
    if (p.metadata_copies == 1 || p.metadata_copies == 2) {
        l.meta_pages = (p.metadata_provisioned_bytes / PAGE - 4) / p.metadata_copies;
    }
    l.mirror = p.metadata_copies == 2 ? l.device_pages - 4 - l.meta_pages : 0;
    return l;
}

static uint8_t *page_at(hostdev *d, uint64_t page) {
    return d->durable + page * PAGE;
}

static bool page_blank(hostdev *d, uint64_t page) {
    return all_bytes(page_at(d, page), PAGE, 0);
}

/* Damages a page on the medium as a bad sector would: bytes flipped in its body (its
 * header stays readable: a superblock still names its generation). */
static void damage_page(hostdev *d, uint64_t page) {
    uint8_t *p = page_at(d, page);
    p[100] ^= 0xff;
    p[2049] ^= 0x5a;
}

/* Damages every page in use (not all zeros) of pages [first, first + n): how many. */
static uint64_t damage_range(hostdev *d, uint64_t first, uint64_t n) {
    uint64_t k = 0;
    for (uint64_t p = first; p < first + n; p++) {
        if (!page_blank(d, p)) {
            damage_page(d, p);
            k++;
        }
    }
    return k;
}

/* The generation in a metadata page's header (bytes 24..32, little-endian). */
static uint64_t page_txid(hostdev *d, uint64_t page) {
    const uint8_t *p = page_at(d, page);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[24 + i];
    }
    return v;
}

/* LUN `lun` reads whole as fill_bytes(seed). */
static bool lun_reads(lunsnap_array *a, uint32_t lun, uint8_t seed) {
    fill_bytes(md_want, sizeof md_want, seed);
    memset(md_got, 0xee, sizeof md_got);
    lunsnap_result r = lunsnap_read(a, lun, 0, md_got, sizeof md_got);
    return r == LUNSNAP_RESULT_OK && memcmp(md_want, md_got, sizeof md_got) == 0;
}

static void write_lun(lunsnap_array *a, uint32_t lun, uint8_t seed, size_t len) {
    fill_bytes(md_want, sizeof md_want, seed);
    EXPECT_OK(lunsnap_write(a, lun, 0, md_want, len));
}

static size_t violations(lunsnap_array *a) {
    size_t nv = 999;
    EXPECT_OK(lunsnap_check(a, &nv));
    return nv;
}

/* What a scrub's progress callback saw. */
typedef struct {
    uint64_t calls, last_done, total;
    bool in_order; /* done 1, 2, 3, ... with the same total, never above it */
} scrub_progress;

static void on_progress(void *ctx, uint64_t done, uint64_t total) {
    scrub_progress *p = ctx;
    if (done != p->last_done + 1 || (p->calls > 0 && total != p->total) || done > total) {
        p->in_order = false;
    }
    p->calls++;
    p->last_done = done;
    p->total = total;
}

static void test_metadata_copies(void) {
    section = "metadata copies";
    lunsnap_array *const sentinel = forged();
    lunsnap_pool_info p[3];
    uint64_t min[3] = {0, 0, 0};
    memset(p, 0, sizeof p);
    for (uint32_t c = 1; c <= 2; c++) {
        lunsnap_format_options o = small_opts();
        o.metadata_copies = c;
        EXPECT_OK(lunsnap_min_device_bytes(&o, &min[c]));
        lunsnap_array *a = NULL;
        EXPECT_OK(lunsnap_format_mem(BS, BLOCKS, &o, &a));
        if (!a) {
            return;
        }
        EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
        EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
        EXPECT_OK(lunsnap_flush(a));
        p[c] = pool_of(a);
        lunsnap_free(a);
        CHECK(p[c].metadata_copies == c, "formatted with %u copies: pool_info says %u", c, p[c].metadata_copies);
        CHECK(p[c].healed_pages == 0 && p[c].pending_heals == 0 && p[c].rollback_lost_generation == 0 &&
                  p[c].rollback_kept_generation == 0,
              "a new array (%u copies): healed %llu, pending %llu, rollback %llu/%llu", c,
              (unsigned long long)p[c].healed_pages, (unsigned long long)p[c].pending_heals,
              (unsigned long long)p[c].rollback_lost_generation, (unsigned long long)p[c].rollback_kept_generation);
    }
    /* The second copy costs the metadata area again, on the device and in use; the
     * superblocks' four pages are there with either. */
    CHECK(p[2].metadata_provisioned_bytes > p[1].metadata_provisioned_bytes,
          "metadata provisioned: %llu bytes with 2 copies, %llu with 1",
          (unsigned long long)p[2].metadata_provisioned_bytes, (unsigned long long)p[1].metadata_provisioned_bytes);
    CHECK(p[1].metadata_used_bytes > 4 * PAGE &&
              p[2].metadata_used_bytes - 4 * PAGE == 2 * (p[1].metadata_used_bytes - 4 * PAGE),
          "metadata used: %llu bytes with 2 copies, %llu with 1 (each counts the 4 superblock pages)",
          (unsigned long long)p[2].metadata_used_bytes, (unsigned long long)p[1].metadata_used_bytes);
    CHECK(p[2].capacity_bytes <= p[1].capacity_bytes, "capacity %llu with 2 copies, %llu with 1",
          (unsigned long long)p[2].capacity_bytes, (unsigned long long)p[1].capacity_bytes);
    CHECK(min[2] > min[1], "least device: %llu bytes with 2 copies, %llu with 1", (unsigned long long)min[2],
          (unsigned long long)min[1]);
    /* A device with room for one copy only: two do not fit. */
    if (min[2] > min[1]) {
        uint64_t blocks = (min[1] + BS - 1) / BS;
        if (blocks * BS < min[2]) {
            lunsnap_format_options o = small_opts();
            lunsnap_array *a = sentinel;
            EXPECT_MSG(lunsnap_format_mem(BS, blocks, &o, &a), LUNSNAP_RESULT_DEVICE_TOO_SMALL, "needs");
            CHECK(a == sentinel, "a refused format wrote *out");
            o.metadata_copies = 1;
            a = NULL;
            EXPECT_OK(lunsnap_format_mem(BS, blocks, &o, &a));
            lunsnap_free(a);
        }
    }
    /* Any other number is refused before a device is made. */
    static const uint32_t bad[] = {0, 3, 255, UINT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lunsnap_format_options o = small_opts();
        o.metadata_copies = bad[i];
        lunsnap_array *a = sentinel;
        EXPECT_MSG(lunsnap_format_mem(BS, BLOCKS, &o, &a), LUNSNAP_RESULT_INVALID_OPTIONS,
                   "metadata_copies must be 1 or 2");
        CHECK(a == sentinel, "metadata_copies %u: *out written", bad[i]);
        uint64_t m = 77;
        EXPECT(lunsnap_min_device_bytes(&o, &m), LUNSNAP_RESULT_INVALID_OPTIONS);
        CHECK(m == 77, "metadata_copies %u: lunsnap_min_device_bytes wrote *out", bad[i]);
    }
    /* Options from an older header, without the field: two copies. */
    {
        lunsnap_format_options o = small_opts();
        o.metadata_copies = 0; /* outside the struct_size below: not read */
        o.struct_size = offsetof(lunsnap_format_options, metadata_copies);
        uint64_t m = 0;
        EXPECT_OK(lunsnap_min_device_bytes(&o, &m));
        CHECK(m == min[2], "options without metadata_copies: least device %llu, want %llu (two copies)",
              (unsigned long long)m, (unsigned long long)min[2]);
        lunsnap_array *a = NULL;
        EXPECT_OK(lunsnap_format_mem(BS, BLOCKS, &o, &a));
        if (a) {
            CHECK(pool_of(a).metadata_copies == 2, "options without metadata_copies: not two copies");
            lunsnap_free(a);
        }
    }
}

static void test_heal_and_scrub(void) {
    section = "healing";
    hostdev d;
    if (!hostdev_init(&d, PAGE, MD_BLOCKS)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts(); /* two copies: the default */
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, MD_LUN_SIZE));
    EXPECT_OK(lunsnap_create_lun(a, 2, MD_LUN_SIZE));
    write_lun(a, 1, 11, MD_LUN_SIZE);
    write_lun(a, 2, 22, MD_LUN_SIZE);
    EXPECT_OK(lunsnap_create_copy(a, 1, 3, true));
    EXPECT_OK(lunsnap_add_host(a, 7, "backup"));
    EXPECT_OK(lunsnap_grant(a, 3, 7, LUNSNAP_ACCESS_READ));
    md_layout l = layout_of(a, &d);
    EXPECT_OK(lunsnap_close(a));
    CHECK(d.npending == 0, "after close: %llu blocks not flushed", (unsigned long long)d.npending);

    /* On the medium: the second copies are byte for byte the first ones. */
    CHECK(l.copies == 2 && l.meta_pages > 0 && l.mirror >= 2 + l.meta_pages,
          "layout: %u copies, %llu metadata pages, second copies %llu pages on", l.copies,
          (unsigned long long)l.meta_pages, (unsigned long long)l.mirror);
    uint64_t used = 0, differ = 0;
    for (uint64_t pg = 2; pg < 2 + l.meta_pages; pg++) {
        if (!page_blank(&d, pg)) {
            used++;
            differ += memcmp(page_at(&d, pg), page_at(&d, pg + l.mirror), PAGE) != 0;
        }
    }
    CHECK(used > 0 && differ == 0, "%llu metadata pages in use, %llu differ from their second copy",
          (unsigned long long)used, (unsigned long long)differ);
    for (uint64_t slot = 0; slot < 2; slot++) {
        CHECK(!page_blank(&d, slot) && memcmp(page_at(&d, slot), page_at(&d, l.device_pages - 2 + slot), PAGE) == 0,
              "superblock slot %llu: its copies differ", (unsigned long long)slot);
    }

    /* Every first copy in use damaged: the array opens, and reads right from the
     * second copies; the bad copies wait for the next commit. */
    uint64_t damaged = damage_range(&d, 2, l.meta_pages);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    lunsnap_pool_info q = pool_of(a);
    CHECK(q.pending_heals > 0 && q.healed_pages == 0 && q.metadata_copies == 2,
          "opened over %llu damaged first copies: %llu pending heals, %llu healed", (unsigned long long)damaged,
          (unsigned long long)q.pending_heals, (unsigned long long)q.healed_pages);
    CHECK(lun_reads(a, 1, 11) && lun_reads(a, 2, 22) && lun_reads(a, 3, 11),
          "a LUN reads wrong over damaged first copies");
    CHECK(violations(a) == 0, "check over damaged first copies found violations");
    lunsnap_pool_info r = pool_of(a);
    CHECK(r.pending_heals >= q.pending_heals && r.pending_heals <= damaged && r.healed_pages == 0,
          "after reading everything: %llu pending heals (at open %llu, %llu pages damaged)",
          (unsigned long long)r.pending_heals, (unsigned long long)q.pending_heals, (unsigned long long)damaged);
    EXPECT_OK(lunsnap_flush(a));
    lunsnap_pool_info f = pool_of(a);
    CHECK(f.pending_heals == 0 && f.healed_pages == r.pending_heals,
          "after the commit: %llu pending, %llu healed (want 0 and %llu)", (unsigned long long)f.pending_heals,
          (unsigned long long)f.healed_pages, (unsigned long long)r.pending_heals);
    EXPECT_OK(lunsnap_close(a));
    /* Durably: a fresh open reads everything from first copies, and keeps the count. */
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    CHECK(lun_reads(a, 1, 11) && lun_reads(a, 2, 22) && lun_reads(a, 3, 11), "a LUN reads wrong after the heal");
    CHECK(violations(a) == 0, "check after the heal found violations");
    r = pool_of(a);
    CHECK(r.pending_heals == 0 && r.healed_pages == f.healed_pages,
          "reopened after the heal: %llu pending heals (want 0), %llu healed (want %llu)",
          (unsigned long long)r.pending_heals, (unsigned long long)r.healed_pages,
          (unsigned long long)f.healed_pages);
    EXPECT_OK(lunsnap_close(a));

    /* Every second copy damaged, the superblocks' too: reads never see it (they use
     * the first copies); a scrub finds and rewrites them. */
    section = "scrub";
    uint64_t damaged2 = damage_range(&d, 2 + l.mirror, l.meta_pages);
    damage_page(&d, l.device_pages - 2);
    damage_page(&d, l.device_pages - 1);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    CHECK(lun_reads(a, 1, 11) && lun_reads(a, 2, 22), "a LUN reads wrong with damaged second copies");
    lunsnap_pool_info before = pool_of(a);
    CHECK(before.pending_heals == 2, "damaged second superblock copies: %llu pending heals, want 2 (found at open)",
          (unsigned long long)before.pending_heals);

    /* Refused calls: no scrub, nothing written, no progress. */
    scrub_progress pr = {0, 0, 0, true};
    lunsnap_scrub_report rep;
    memset(&rep, 0x33, sizeof rep);
    rep.struct_size = 0;
    EXPECT_MSG(lunsnap_scrub(a, on_progress, &pr, &rep), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "lunsnap_scrub: `out->struct_size` is 0");
    EXPECT(lunsnap_scrub(a, on_progress, &pr, NULL), LUNSNAP_RESULT_NULL_POINTER);
    rep.struct_size = sizeof rep;
    EXPECT(lunsnap_scrub(NULL, on_progress, &pr, &rep), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_scrub(forged(), on_progress, &pr, &rep), LUNSNAP_RESULT_INVALID_HANDLE);
    CHECK(pr.calls == 0 && all_bytes((const uint8_t *)&rep + sizeof(size_t), sizeof rep - sizeof(size_t), 0x33),
          "a refused scrub called progress (%llu times) or wrote *out", (unsigned long long)pr.calls);
    uint64_t addr = 77;
    size_t len = 77;
    char msg[512];
    EXPECT_MSG(lunsnap_scrub_lost(a, 0, &addr, msg, sizeof msg, &len), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "the last lunsnap_scrub on this handle listed 0 lost pages");

    EXPECT_OK(lunsnap_scrub(a, on_progress, &pr, &rep));
    CHECK(rep.struct_size == sizeof rep, "lunsnap_scrub changed struct_size");
    /* Every page in use had its second copy damaged: each metadata page the scrub
     * read (all its pages but the 4 superblock copies) is healed, and so are the two
     * superblock copies the open found bad. */
    CHECK(rep.pages > 4 && rep.healed == rep.pages - 4 + 2 && rep.healed <= damaged2 + 2 && rep.lost_count == 0 &&
              rep.lost_listed == 0,
          "scrub: %llu pages (4 of them superblock copies), %llu healed (%llu second copies damaged, and 2 "
          "superblocks), %llu lost",
          (unsigned long long)rep.pages, (unsigned long long)rep.healed, (unsigned long long)damaged2,
          (unsigned long long)rep.lost_count);
    CHECK(pr.calls > 0 && pr.in_order && pr.last_done <= pr.total,
          "progress: %llu calls, last %llu of %llu, %s", (unsigned long long)pr.calls,
          (unsigned long long)pr.last_done, (unsigned long long)pr.total, pr.in_order ? "in order" : "out of order");
    lunsnap_pool_info after = pool_of(a);
    CHECK(after.healed_pages == before.healed_pages + rep.healed && after.pending_heals == 0,
          "after the scrub: %llu healed (want %llu), %llu pending", (unsigned long long)after.healed_pages,
          (unsigned long long)(before.healed_pages + rep.healed), (unsigned long long)after.pending_heals);
    CHECK(after.generation > before.generation, "the scrub healed but did not commit: generation %llu",
          (unsigned long long)after.generation);
    EXPECT(lunsnap_scrub_lost(a, 0, &addr, msg, sizeof msg, &len), LUNSNAP_RESULT_INVALID_ARGUMENT);
    CHECK(addr == 77 && len == 77, "a refused lunsnap_scrub_lost wrote its out-parameters");
    /* Again, without a progress callback: nothing left to heal, nothing committed. A
     * shorter report gets the fields inside its struct_size only. */
    lunsnap_scrub_report again;
    memset(&again, 0x33, sizeof again);
    again.struct_size = offsetof(lunsnap_scrub_report, lost_count);
    EXPECT_OK(lunsnap_scrub(a, NULL, NULL, &again));
    CHECK(again.pages == rep.pages && again.healed == 0, "a second scrub: %llu pages (want %llu), %llu healed",
          (unsigned long long)again.pages, (unsigned long long)rep.pages, (unsigned long long)again.healed);
    CHECK(pool_of(a).generation == after.generation, "a scrub of a clean array committed");
    CHECK(all_bytes((const uint8_t *)&again.lost_count,
                    sizeof again - offsetof(lunsnap_scrub_report, lost_count), 0x33),
          "lunsnap_scrub wrote past struct_size");
    CHECK(violations(a) == 0, "check after the scrub found violations");
    EXPECT_OK(lunsnap_close(a));
    /* The proof that the scrub rewrote the second copies: now every first copy is
     * damaged (the superblocks' too), and everything still reads. */
    damage_range(&d, 2, l.meta_pages);
    damage_page(&d, 0);
    damage_page(&d, 1);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (a) {
        CHECK(lun_reads(a, 1, 11) && lun_reads(a, 2, 22) && lun_reads(a, 3, 11),
              "a LUN reads wrong from the copies the scrub rewrote");
        CHECK(violations(a) == 0, "check over the copies the scrub rewrote found violations");
        CHECK(pool_of(a).pending_heals > 2, "damaged first copies: no pending heals");
        EXPECT_OK(lunsnap_scrub(a, NULL, NULL, &rep));
        CHECK(rep.lost_count == 0 && pool_of(a).pending_heals == 0, "the last scrub: %llu lost",
              (unsigned long long)rep.lost_count);
        EXPECT_OK(lunsnap_close(a));
    }
    hostdev_destroy(&d);

    /* With one copy nothing can be healed: a scrub names the pages lost. */
    section = "scrub, one copy";
    if (!hostdev_init(&d, PAGE, MD_BLOCKS)) {
        CHECK(false, "out of memory");
        return;
    }
    cb = hostdev_callbacks(&d);
    o.metadata_copies = 1;
    a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    EXPECT_OK(lunsnap_create_lun(a, 1, MD_LUN_SIZE));
    write_lun(a, 1, 11, MD_LUN_SIZE);
    EXPECT_OK(lunsnap_flush(a));
    l = layout_of(a, &d);
    EXPECT_OK(lunsnap_scrub(a, NULL, NULL, &rep));
    CHECK(rep.healed == 0 && rep.lost_count == 0 && rep.pages > 0, "a clean array of one copy: %llu healed, %llu lost",
          (unsigned long long)rep.healed, (unsigned long long)rep.lost_count);
    CHECK(l.copies == 1 && memcmp(page_at(&d, 0), page_at(&d, l.device_pages - 2), PAGE) == 0 &&
              memcmp(page_at(&d, 1), page_at(&d, l.device_pages - 1), PAGE) == 0,
          "one metadata copy: the superblocks still have two");
    /* The metadata damaged under the open array: the scrub reads the device. */
    uint64_t damaged1 = damage_range(&d, 2, l.meta_pages);
    memset(&rep, 0, sizeof rep);
    rep.struct_size = sizeof rep;
    EXPECT_OK(lunsnap_scrub(a, NULL, NULL, &rep));
    CHECK(rep.lost_count >= 1 && rep.lost_count <= damaged1 && rep.lost_listed == rep.lost_count && rep.healed == 0,
          "one copy, %llu pages damaged: %llu lost, %llu listed, %llu healed", (unsigned long long)damaged1,
          (unsigned long long)rep.lost_count, (unsigned long long)rep.lost_listed, (unsigned long long)rep.healed);
    for (uint64_t i = 0; i < rep.lost_listed; i++) {
        addr = 0;
        len = 0;
        EXPECT_OK(lunsnap_scrub_lost(a, (size_t)i, &addr, msg, sizeof msg, &len));
        char want[64];
        snprintf(want, sizeof want, "metadata page %llu: no good copy left: ", (unsigned long long)addr);
        CHECK(addr >= 2 && addr < 2 + l.meta_pages && strncmp(msg, want, strlen(want)) == 0 && len == strlen(msg),
              "lost page %llu: address %llu, message \"%s\" (%zu bytes)", (unsigned long long)i,
              (unsigned long long)addr, msg, len);
        if (i == 0) {
            printf("  lost page, as lunsnap_scrub_lost gives it: %s\n", msg);
        }
    }
    size_t full = 0;
    EXPECT_OK(lunsnap_scrub_lost(a, 0, &addr, NULL, 0, &full));
    CHECK(full > 0, "lost page 0: empty message");
    EXPECT(lunsnap_scrub_lost(a, (size_t)rep.lost_listed, &addr, msg, sizeof msg, &len),
           LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_scrub_lost(a, SIZE_MAX, &addr, msg, sizeof msg, &len), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT_MSG(lunsnap_scrub_lost(a, 0, NULL, msg, sizeof msg, &len), LUNSNAP_RESULT_NULL_POINTER,
               "`out_addr` is NULL");
    EXPECT(lunsnap_scrub_lost(a, 0, &addr, msg, sizeof msg, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_scrub_lost(a, 0, &addr, NULL, 8, &len), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_scrub_lost(NULL, 0, &addr, msg, sizeof msg, &len), LUNSNAP_RESULT_NULL_POINTER);
    lunsnap_free(a);
    hostdev_destroy(&d);
}

/* The newest commit's superblock damaged in both copies. */
static void test_commit_lost(void) {
    section = "commit lost";
    hostdev d;
    if (!hostdev_init(&d, PAGE, MD_BLOCKS)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    /* No discard: after g1's commit the library discards the extents g1 no longer
     * maps, which g0 (what a rollback opens) still does, and this host zeroes what is
     * discarded: the rolled-back LUN would read zeros there. */
    cb.discard = NULL;
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    /* Generation g0: LUN 1 holds version 11; generation g1: version 22. */
    EXPECT_OK(lunsnap_create_lun(a, 1, MD_LUN_SIZE));
    write_lun(a, 1, 11, MD_LUN_SIZE);
    EXPECT_OK(lunsnap_flush(a));
    uint64_t g0 = pool_of(a).generation;
    write_lun(a, 1, 22, MD_LUN_SIZE);
    EXPECT_OK(lunsnap_flush(a));
    uint64_t g1 = pool_of(a).generation;
    md_layout l = layout_of(a, &d);
    lunsnap_free(a); /* no further commit */
    CHECK(g1 == g0 + 1 && d.npending == 0, "generations %llu then %llu, %llu blocks not flushed",
          (unsigned long long)g0, (unsigned long long)g1, (unsigned long long)d.npending);
    uint64_t first = g1 % 2, second = l.device_pages - 2 + g1 % 2;
    CHECK(page_txid(&d, first) == g1 && page_txid(&d, second) == g1 && page_txid(&d, 1 - first) == g0,
          "superblock pages %llu and %llu hold generations %llu and %llu, page %llu %llu (want %llu, %llu)",
          (unsigned long long)first, (unsigned long long)second, (unsigned long long)page_txid(&d, first),
          (unsigned long long)page_txid(&d, second), (unsigned long long)(1 - first),
          (unsigned long long)page_txid(&d, 1 - first), (unsigned long long)g1, (unsigned long long)g0);

    /* One copy damaged: nothing lost, the open heals it. */
    damage_page(&d, first);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (a) {
        lunsnap_pool_info p = pool_of(a);
        CHECK(p.generation == g1 && p.pending_heals == 1 && p.rollback_lost_generation == 0,
              "one superblock copy damaged: generation %llu (want %llu), %llu pending heals (want 1), rollback %llu",
              (unsigned long long)p.generation, (unsigned long long)g1, (unsigned long long)p.pending_heals,
              (unsigned long long)p.rollback_lost_generation);
        CHECK(lun_reads(a, 1, 22), "one superblock copy damaged: LUN 1 is not generation %llu's",
              (unsigned long long)g1);
        lunsnap_free(a);
    }

    /* Both copies damaged (their headers still name generation g1): refused. */
    damage_page(&d, second);
    lunsnap_array *const sentinel = forged();
    char want[200];
    snprintf(want, sizeof want,
             "lunsnap_open_callbacks: both copies of the superblock of generation %llu are damaged: that commit is "
             "lost and opening would roll the array back to generation %llu",
             (unsigned long long)g1, (unsigned long long)g0);
    a = sentinel;
    EXPECT_MSG(lunsnap_open_callbacks(&cb, NULL, &a), LUNSNAP_RESULT_COMMIT_LOST, want);
    printf("  %s\n", last_message(NULL));
    CHECK(last_message_has(NULL, "from C: open with lunsnap_open_options.allow_rollback set to 1"),
          "the COMMIT_LOST message does not say how C allows the rollback: \"%s\"", last_message(NULL));
    lunsnap_open_options oo = open_defaults();
    EXPECT_MSG(lunsnap_open_callbacks(&cb, &oo, &a), LUNSNAP_RESULT_COMMIT_LOST, want);
    /* Options from an older header (no allow_rollback field) take the default, 0. */
    oo.allow_rollback = 1;
    oo.struct_size = offsetof(lunsnap_open_options, allow_rollback);
    EXPECT(lunsnap_open_callbacks(&cb, &oo, &a), LUNSNAP_RESULT_COMMIT_LOST);
    oo = open_defaults();
    oo.allow_rollback = 2;
    EXPECT_MSG(lunsnap_open_callbacks(&cb, &oo, &a), LUNSNAP_RESULT_INVALID_OPTIONS,
               "allow_rollback is 2: it must be 0 or 1");
    CHECK(a == sentinel, "a refused open wrote *out");
    const char *s = lunsnap_strerror(LUNSNAP_RESULT_COMMIT_LOST);
    CHECK(strstr(s, "roll") != NULL, "lunsnap_strerror(COMMIT_LOST) = \"%s\"", s);

    /* Allowed: the array opens at g0 and says so. */
    oo = open_defaults();
    oo.allow_rollback = 1;
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, &oo, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }
    lunsnap_pool_info p = pool_of(a);
    CHECK(p.generation == g0 && p.rollback_lost_generation == g1 && p.rollback_kept_generation == g0,
          "rolled back: generation %llu, rollback %llu -> %llu (want %llu, %llu -> %llu)",
          (unsigned long long)p.generation, (unsigned long long)p.rollback_lost_generation,
          (unsigned long long)p.rollback_kept_generation, (unsigned long long)g0, (unsigned long long)g1,
          (unsigned long long)g0);
    CHECK(lun_reads(a, 1, 11), "rolled back: LUN 1 is not generation %llu's", (unsigned long long)g0);
    size_t nv = violations(a);
    CHECK(nv == 1, "rolled back: check found %zu violations, want 1 (the notice)", nv);
    if (nv >= 1) {
        uint32_t sev = 0;
        EXPECT_OK(lunsnap_check_severity(a, 0, &sev));
        char m[512];
        size_t len = 0;
        EXPECT_OK(lunsnap_check_message(a, 0, m, sizeof m, &len));
        CHECK(sev == LUNSNAP_SEVERITY_NOTICE && strstr(m, "rolled back") != NULL,
              "the rollback's violation: severity %u, \"%s\"", sev, m);
    }
    /* The handle keeps allow_rollback: a reopen before any commit rolls back again. */
    EXPECT_OK(lunsnap_reopen(a));
    p = pool_of(a);
    CHECK(p.generation == g0 && p.rollback_lost_generation == g1, "reopened: generation %llu, rollback %llu",
          (unsigned long long)p.generation, (unsigned long long)p.rollback_lost_generation);
    /* A commit writes over the damaged slot and records the rollback. */
    write_lun(a, 1, 33, 4096);
    EXPECT_OK(lunsnap_close(a));
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (a) {
        p = pool_of(a);
        CHECK(p.generation > g0 && p.rollback_lost_generation == g1 && p.rollback_kept_generation == g0,
              "after the commit: generation %llu, rollback %llu -> %llu", (unsigned long long)p.generation,
              (unsigned long long)p.rollback_lost_generation, (unsigned long long)p.rollback_kept_generation);
        nv = violations(a);
        uint32_t sev = 0;
        CHECK(nv == 1 && lunsnap_check_severity(a, 0, &sev) == LUNSNAP_RESULT_OK && sev == LUNSNAP_SEVERITY_NOTICE,
              "the rollback is still reported: %zu violations, severity %u", nv, sev);
        uint8_t w[4096];
        fill_bytes(w, sizeof w, 33);
        EXPECT_OK(lunsnap_read(a, 1, 0, md_got, sizeof w));
        CHECK(memcmp(md_got, w, sizeof w) == 0, "the write after the rollback is lost");
        uint64_t g = p.generation;
        lunsnap_free(a);
        /* Both copies zeroed: the generation they held is unknown, so it "may be" lost. */
        memset(page_at(&d, g % 2), 0, PAGE);
        memset(page_at(&d, l.device_pages - 2 + g % 2), 0, PAGE);
        snprintf(want, sizeof want, "superblock of generation %llu are damaged: that commit may be lost",
                 (unsigned long long)g);
        EXPECT_MSG(lunsnap_open_callbacks(&cb, NULL, &a), LUNSNAP_RESULT_COMMIT_LOST, want);
    }
    hostdev_destroy(&d);
}

/* ---- repair, lost ranges --------------------------------------------------------------------- */

/* A repair's report, its struct_size set and every other byte 0x33. */
static lunsnap_repair_report blank_report(void) {
    lunsnap_repair_report r;
    memset(&r, 0x33, sizeof r);
    r.struct_size = sizeof r;
    return r;
}

/* The first page of [2, 2 + meta_pages) that is a mapping leaf (a B-tree node of level 0
 * holding extent slots, docs/FORMAT.md §4.4) whose first key is above `after`; 0 if none. */
static uint64_t next_mapping_leaf(hostdev *d, const md_layout *l, uint64_t after_page) {
    for (uint64_t pg = after_page + 1; pg < 2 + l->meta_pages; pg++) {
        const uint8_t *p = page_at(d, pg);
        uint64_t first_key = 0;
        for (int i = 7; i >= 0; i--) {
            first_key = first_key << 8 | p[40 + i];
        }
        if (memcmp(p, "LSNP", 4) == 0 && p[4] == 4 && p[36] == 0 && p[37] == 4 && first_key > 0) {
            return pg;
        }
    }
    return 0;
}

#define RP_BLOCKS 8192u                /* 32 MiB */
#define RP_LUN_SIZE (8u * 1024 * 1024) /* 2048 extents: three mapping leaves or more */

static void test_repair(void) {
    section = "repair";
    hostdev d;
    uint8_t *want = malloc(RP_LUN_SIZE), *got = malloc(RP_LUN_SIZE), *saved = NULL;
    if (!want || !got || !hostdev_init(&d, PAGE, RP_BLOCKS)) {
        CHECK(false, "out of memory");
        free(want);
        free(got);
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        goto out;
    }
    fill_bytes(want, RP_LUN_SIZE, 44);
    EXPECT_OK(lunsnap_create_lun(a, 1, RP_LUN_SIZE));
    EXPECT_OK(lunsnap_write(a, 1, 0, want, RP_LUN_SIZE));
    EXPECT_OK(lunsnap_create_copy(a, 1, 2, true));
    EXPECT_OK(lunsnap_create_lun(a, 3, MD_LUN_SIZE));
    write_lun(a, 3, 33, MD_LUN_SIZE);
    md_layout l = layout_of(a, &d);
    EXPECT_OK(lunsnap_close(a));
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (!a) {
        goto out;
    }
    uint64_t g0 = pool_of(a).generation;
    lunsnap_free(a);

    /* A healthy array: a repair loses nothing. */
    lunsnap_repair_report rep = blank_report();
    EXPECT_OK(lunsnap_repair_callbacks(&cb, NULL, 1, &rep));
    CHECK(rep.struct_size == sizeof rep && rep.dry_run == 1 && rep.complete == 1 && rep.lost_ranges == 0 &&
              rep.lost_bytes == 0 && rep.unreadable_count == 0 && rep.luns_kept == 3 && rep.rebuilt == 0 &&
              rep.generation == g0,
          "a dry run on a healthy array: dry_run %u complete %u, %llu lost ranges, %llu LUNs kept, generation %llu",
          rep.dry_run, rep.complete, (unsigned long long)rep.lost_ranges, (unsigned long long)rep.luns_kept,
          (unsigned long long)rep.generation);
    uint32_t lun = 77;
    uint64_t off = 77, len = 77;
    EXPECT_MSG(lunsnap_repair_lost(0, &lun, &off, &len), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "the calling thread's last repair lost 0 ranges");

    /* Both copies of a leaf of LUN 1's mapping (not its first) damaged: find one a repair
     * would lose (a leaf left from an earlier commit loses nothing). */
    size_t bytes = (size_t)RP_BLOCKS * PAGE;
    saved = malloc(bytes);
    if (!saved) {
        CHECK(false, "out of memory");
        goto out;
    }
    memcpy(saved, d.durable, bytes);
    uint64_t leaf = 0;
    for (uint64_t pg = next_mapping_leaf(&d, &l, 1); pg != 0; pg = next_mapping_leaf(&d, &l, pg)) {
        damage_page(&d, pg);
        damage_page(&d, pg + l.mirror);
        rep = blank_report();
        EXPECT_OK(lunsnap_repair_callbacks(&cb, NULL, 1, &rep));
        if (rep.lost_ranges > 0) {
            leaf = pg;
            break;
        }
        memcpy(d.durable, saved, bytes);
    }
    CHECK(leaf != 0, "no leaf of LUN 1's mapping could be lost");
    if (leaf == 0) {
        goto out;
    }
    memcpy(saved, d.durable, bytes);

    /* The dry run: a report, the lost ranges, and not a byte written. */
    uint64_t writes = d.writes, flushes = d.flushes;
    rep = blank_report();
    EXPECT_OK(lunsnap_repair_callbacks(&cb, NULL, 1, &rep));
    CHECK(rep.dry_run == 1 && rep.complete == 0 && rep.unreadable_count == 1 && rep.luns_kept == 3 &&
              rep.rebuilt == 2 && rep.lost_ranges == 2 && rep.lost_record_ranges == 0 && rep.bad_records == 0 &&
              rep.orphaned == 0 && rep.hosts == 0 && rep.hosts_lost == 0 && rep.generation == g0,
          "dry run: complete %u, %llu unreadable, %llu kept, %llu rebuilt, %llu lost ranges, generation %llu",
          rep.complete, (unsigned long long)rep.unreadable_count, (unsigned long long)rep.luns_kept,
          (unsigned long long)rep.rebuilt, (unsigned long long)rep.lost_ranges, (unsigned long long)rep.generation);
    CHECK(d.writes == writes && d.flushes == flushes && memcmp(saved, d.durable, bytes) == 0,
          "a dry run wrote to the device (%llu writes, %llu flushes)", (unsigned long long)(d.writes - writes),
          (unsigned long long)(d.flushes - flushes));
    uint32_t lun2 = 0;
    uint64_t off2 = 0, len2 = 0;
    EXPECT_OK(lunsnap_repair_lost(0, &lun, &off, &len));
    EXPECT_OK(lunsnap_repair_lost(1, &lun2, &off2, &len2));
    CHECK(lun == 1 && lun2 == 2 && off > 0 && off == off2 && len == len2 && len > 0 && off + len < RP_LUN_SIZE &&
              rep.lost_bytes == 2 * len,
          "lost: LUN %u at %llu (%llu bytes), LUN %u at %llu (%llu bytes); %llu bytes in all", lun,
          (unsigned long long)off, (unsigned long long)len, lun2, (unsigned long long)off2,
          (unsigned long long)len2, (unsigned long long)rep.lost_bytes);
    printf("  repair --dry-run: LUNs 1 and 2 lose %llu bytes at offset %llu\n", (unsigned long long)len,
           (unsigned long long)off);
    EXPECT(lunsnap_repair_lost(2, &lun, &off2, &len2), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT(lunsnap_repair_lost(SIZE_MAX, &lun, &off2, &len2), LUNSNAP_RESULT_INVALID_ARGUMENT);
    EXPECT_MSG(lunsnap_repair_lost(0, NULL, &off2, &len2), LUNSNAP_RESULT_NULL_POINTER, "`out_lun` is NULL");
    EXPECT(lunsnap_repair_lost(0, &lun, NULL, &len2), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_repair_lost(0, &lun, &off2, NULL), LUNSNAP_RESULT_NULL_POINTER);
    CHECK(lun == 1, "a refused lunsnap_repair_lost wrote *out_lun");
    /* Refused calls: nothing written, not even to the report. */
    rep = blank_report();
    EXPECT_MSG(lunsnap_repair_callbacks(&cb, NULL, 2, &rep), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "`dry_run` is 2: it must be 0 (repair) or 1 (only report)");
    EXPECT(lunsnap_repair_callbacks(NULL, NULL, 1, &rep), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_repair_callbacks(&cb, NULL, 1, NULL), LUNSNAP_RESULT_NULL_POINTER);
    lunsnap_open_options oo = open_defaults();
    oo.allow_rollback = 3;
    EXPECT(lunsnap_repair_callbacks(&cb, &oo, 1, &rep), LUNSNAP_RESULT_INVALID_OPTIONS);
    CHECK(all_bytes((const uint8_t *)&rep + sizeof(size_t), sizeof rep - sizeof(size_t), 0x33),
          "a refused repair wrote *out");
    rep.struct_size = 0;
    EXPECT_MSG(lunsnap_repair_callbacks(&cb, NULL, 1, &rep), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "`out->struct_size` is 0");
    CHECK(d.writes == writes && memcmp(saved, d.durable, bytes) == 0, "a refused repair wrote to the device");
    EXPECT_OK(lunsnap_repair_lost(1, &lun2, &off2, &len2));
    CHECK(lun2 == 2, "a refused repair replaced the last repair's lost ranges");
    /* A shorter report (an older header) gets the fields inside its struct_size only. */
    rep = blank_report();
    rep.struct_size = offsetof(lunsnap_repair_report, hosts);
    EXPECT_OK(lunsnap_repair_callbacks(&cb, NULL, 1, &rep));
    CHECK(rep.rebuilt == 2 && all_bytes((const uint8_t *)&rep.hosts, sizeof rep - offsetof(lunsnap_repair_report, hosts),
                                        0x33),
          "a short report: rebuilt %llu, or written past struct_size", (unsigned long long)rep.rebuilt);

    /* The repair: one commit, then the array opens. */
    rep = blank_report();
    EXPECT_OK(lunsnap_repair_callbacks(&cb, NULL, 0, &rep));
    CHECK(rep.dry_run == 0 && rep.lost_ranges == 2 && rep.generation == g0 + 1 && d.npending == 0,
          "repair: dry_run %u, %llu lost ranges, generation %llu (want %llu), %llu blocks not flushed", rep.dry_run,
          (unsigned long long)rep.lost_ranges, (unsigned long long)rep.generation, (unsigned long long)(g0 + 1),
          (unsigned long long)d.npending);
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (!a) {
        goto out;
    }
    CHECK(pool_of(a).generation == g0 + 1, "the repaired array opens at generation %llu",
          (unsigned long long)pool_of(a).generation);
    /* A read that touches the lost range: LOST_DATA, with the core's message. */
    char msg[256];
    snprintf(msg, sizeof msg, "lunsnap_read: %llu bytes of LUN 1 at offset %llu were lost to metadata damage",
             (unsigned long long)len, (unsigned long long)off);
    EXPECT_MSG(lunsnap_read(a, 1, 0, got, RP_LUN_SIZE), LUNSNAP_RESULT_LOST_DATA, msg);
    CHECK(last_message_has(a, "write or discard them") && last_message_has(a, msg),
          "the handle's message: \"%s\"", last_message(a));
    printf("  %s\n", last_message(a));
    snprintf(msg, sizeof msg, "4096 bytes of LUN 2 at offset %llu", (unsigned long long)(off + len - 4096));
    EXPECT_MSG(lunsnap_read(a, 2, off + len - 4096, got, 8192), LUNSNAP_RESULT_LOST_DATA, msg);
    snprintf(msg, sizeof msg, "512 bytes of LUN 2 at offset %llu", (unsigned long long)off);
    EXPECT_MSG(lunsnap_read(a, 2, off - 512, got, 1024), LUNSNAP_RESULT_LOST_DATA, msg);
    CHECK(strstr(lunsnap_strerror(LUNSNAP_RESULT_LOST_DATA), "lost to metadata damage") != NULL,
          "lunsnap_strerror(LOST_DATA) = \"%s\"", lunsnap_strerror(LUNSNAP_RESULT_LOST_DATA));
    /* What was not lost reads right, in the LUN, its copy and the other LUN. */
    for (uint32_t n = 1; n <= 2; n++) {
        memset(got, 0xee, RP_LUN_SIZE);
        EXPECT_OK(lunsnap_read(a, n, 0, got, off));
        EXPECT_OK(lunsnap_read(a, n, off + len, got + off + len, RP_LUN_SIZE - off - len));
        CHECK(memcmp(got, want, off) == 0 && memcmp(got + off + len, want + off + len, RP_LUN_SIZE - off - len) == 0,
              "LUN %u reads wrong around its lost range", n);
    }
    CHECK(lun_reads(a, 3, 33), "LUN 3 reads wrong after the repair");
    /* lun_info, lunsnap_lost_ranges and check say what was lost. */
    lunsnap_lun_info li;
    memset(&li, 0, sizeof li);
    li.struct_size = sizeof li;
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(li.lost_bytes == len, "lun_info(1).lost_bytes %llu, want %llu", (unsigned long long)li.lost_bytes,
          (unsigned long long)len);
    EXPECT_OK(lunsnap_get_lun_info(a, 3, &li));
    CHECK(li.lost_bytes == 0, "lun_info(3).lost_bytes %llu", (unsigned long long)li.lost_bytes);
    lunsnap_lost_range ranges[4];
    memset(ranges, 0, sizeof ranges);
    size_t count = 99;
    EXPECT_OK(lunsnap_lost_ranges(a, 1, ranges, 4, &count));
    CHECK(count == 1 && ranges[0].offset == off && ranges[0].length == len,
          "lunsnap_lost_ranges(1): %zu ranges, the first %llu+%llu", count, (unsigned long long)ranges[0].offset,
          (unsigned long long)ranges[0].length);
    count = 99;
    EXPECT_OK(lunsnap_lost_ranges(a, 2, NULL, 0, &count));
    CHECK(count == 1, "lunsnap_lost_ranges(2) counts %zu", count);
    EXPECT_OK(lunsnap_lost_ranges(a, 3, ranges, 4, &count));
    CHECK(count == 0, "lunsnap_lost_ranges(3): %zu", count);
    EXPECT(lunsnap_lost_ranges(a, 9, ranges, 4, &count), LUNSNAP_RESULT_NO_SUCH_LUN);
    EXPECT(lunsnap_lost_ranges(a, MAX_LUNS, ranges, 4, &count), LUNSNAP_RESULT_LUN_OUT_OF_RANGE);
    EXPECT(lunsnap_lost_ranges(a, 1, NULL, 4, &count), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_lost_ranges(a, 1, ranges, 4, NULL), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_lost_ranges(NULL, 1, ranges, 4, &count), LUNSNAP_RESULT_NULL_POINTER);
    /* lunsnap_map marks the lost range (a hole in the mapping, but lost); lunsnap_diff
     * reports it even between LUN 1 and its copy, which lost it alike. */
    lunsnap_map_range mr[8];
    memset(mr, 0, sizeof mr);
    EXPECT_OK(lunsnap_map(a, 1, 0, RP_LUN_SIZE, mr, 8, &count));
    CHECK(count == 3 && mr[0].offset == 0 && mr[0].length == off && mr[0].data && !mr[0].lost &&
              mr[1].offset == off && mr[1].length == len && !mr[1].data && mr[1].lost &&
              mr[2].offset == off + len && mr[2].data && !mr[2].lost,
          "lunsnap_map(1) after the repair: %zu ranges, the second %llu+%llu data %d lost %d", count,
          (unsigned long long)mr[1].offset, (unsigned long long)mr[1].length, mr[1].data, mr[1].lost);
    EXPECT_OK(lunsnap_map(a, 3, 0, 4096, mr, 8, &count));
    CHECK(count >= 1 && !mr[0].lost, "lunsnap_map(3) marks a lost range");
    lunsnap_diff_range dr[4];
    EXPECT_OK(lunsnap_diff(a, 1, 2, 0, RP_LUN_SIZE, dr, 4, &count));
    CHECK(count == 1 && dr[0].offset == off && dr[0].length == len,
          "lunsnap_diff(1, 2) after the repair: %zu ranges, the first %llu+%llu", count,
          (unsigned long long)dr[0].offset, (unsigned long long)dr[0].length);
    size_t nv = violations(a);
    CHECK(nv == 2, "check after the repair: %zu violations, want 2 notices", nv);
    for (size_t i = 0; i < nv; i++) {
        uint32_t sev = 0;
        size_t mlen = 0;
        char m[512];
        EXPECT_OK(lunsnap_check_severity(a, i, &sev));
        EXPECT_OK(lunsnap_check_message(a, i, m, sizeof m, &mlen));
        CHECK(sev == LUNSNAP_SEVERITY_NOTICE && strstr(m, "lost to metadata damage") != NULL,
              "violation %zu: severity %u, \"%s\"", i, sev, m);
    }
    /* Written, the range reads what was written, and is no longer lost. */
    fill_bytes(want + off, len, 55);
    EXPECT_OK(lunsnap_write(a, 1, off, want + off, len));
    memset(got, 0xee, RP_LUN_SIZE);
    EXPECT_OK(lunsnap_read(a, 1, 0, got, RP_LUN_SIZE));
    CHECK(memcmp(got, want, RP_LUN_SIZE) == 0, "LUN 1 does not read what was written over its lost range");
    EXPECT_OK(lunsnap_lost_ranges(a, 1, ranges, 4, &count));
    EXPECT_OK(lunsnap_get_lun_info(a, 1, &li));
    CHECK(count == 0 && li.lost_bytes == 0, "after the write: %zu lost ranges, %llu lost bytes", count,
          (unsigned long long)li.lost_bytes);
    /* Discarded, the copy's range reads as zeros. */
    EXPECT_OK(lunsnap_discard(a, 2, off, len));
    EXPECT_OK(lunsnap_read(a, 2, off, got, len));
    CHECK(all_bytes(got, len, 0), "copy 2's discarded range does not read as zeros");
    CHECK(violations(a) == 0, "check after the lost ranges were written and discarded");
    EXPECT_OK(lunsnap_close(a));
    /* Durably. */
    a = NULL;
    EXPECT_OK(lunsnap_open_callbacks(&cb, NULL, &a));
    if (a) {
        EXPECT_OK(lunsnap_read(a, 1, 0, got, RP_LUN_SIZE));
        CHECK(memcmp(got, want, RP_LUN_SIZE) == 0, "LUN 1 after a reopen");
        EXPECT_OK(lunsnap_lost_ranges(a, 2, ranges, 4, &count));
        CHECK(count == 0, "copy 2 after a reopen: %zu lost ranges", count);
        lunsnap_free(a);
    }

#if defined(LUNSNAP_FEATURE_STD)
    /* An image file: the same, through lunsnap_repair_file. */
    {
        char dir[] = "/tmp/lunsnap-test-repair-XXXXXX";
        if (mkdtemp(dir) == NULL) {
            CHECK(false, "mkdtemp failed");
            goto out;
        }
        char path[sizeof dir + 32];
        snprintf(path, sizeof path, "%s/array.img", dir);
        a = NULL;
        EXPECT_OK(lunsnap_format_file(path, BS, BLOCKS, &o, &a));
        if (a) {
            EXPECT_OK(lunsnap_create_lun(a, 1, LUN_SIZE));
            EXPECT_OK(lunsnap_close(a));
        }
        rep = blank_report();
        EXPECT_OK(lunsnap_repair_file(path, BS, NULL, 0, &rep));
        CHECK(rep.complete == 1 && rep.dry_run == 0 && rep.luns_kept == 1 && rep.lost_ranges == 0,
              "repair of a healthy file: complete %u, %llu LUNs kept", rep.complete,
              (unsigned long long)rep.luns_kept);
        EXPECT_OK(lunsnap_open_file(path, BS, NULL, &a));
        lunsnap_free(a);
        EXPECT(lunsnap_repair_file(NULL, BS, NULL, 1, &rep), LUNSNAP_RESULT_NULL_POINTER);
        snprintf(path, sizeof path, "%s/missing.img", dir);
        EXPECT_MSG(lunsnap_repair_file(path, BS, NULL, 1, &rep), LUNSNAP_RESULT_INVALID_PATH, "cannot open");
        snprintf(path, sizeof path, "%s/array.img", dir);
        EXPECT_MSG(lunsnap_repair_file(path, 512, NULL, 1, &rep), LUNSNAP_RESULT_BLOCK_SIZE_MISMATCH,
                   "lunsnap_repair_file: ");
        unlink(path);
        rmdir(dir);
    }
#endif

out:
    free(saved);
    free(want);
    free(got);
    hostdev_destroy(&d);
}

/* ---- background freeing: lunsnap_reclaim, lunsnap_pending_bytes, lunsnap_reclaim_pending ---- */

#define RC_BLOCKS 4096u            /* 16 MiB of 4 KiB blocks */
#define RC_LUN (6u * 1024u * 1024u) /* 1536 extents: a mapping of an interior node and several leaves */
#define RC_CHUNK (1024u * 1024u)

static lunsnap_reclaim_stats reclaim_sentinel(void) {
    lunsnap_reclaim_stats st;
    memset(&st, 0x5a, sizeof st);
    st.struct_size = sizeof st;
    return st;
}

static uint64_t pending_of(lunsnap_array *a) {
    uint64_t n = UINT64_MAX;
    EXPECT_OK(lunsnap_pending_bytes(a, &n));
    return n;
}

static bool reclaim_waits(lunsnap_array *a) {
    bool w = false;
    EXPECT_OK(lunsnap_reclaim_pending(a, &w));
    return w;
}

/* Writes `size` bytes of LUN `lun` from 0 (version `seed`, never zeros), or checks
 * that it reads them back (`check`). */
static bool whole_lun(lunsnap_array *a, uint32_t lun, uint64_t size, uint8_t seed, bool check) {
    static uint8_t buf[RC_CHUNK], got[RC_CHUNK];
    bool ok = true;
    for (uint64_t off = 0; off < size; off += RC_CHUNK) {
        size_t len = (size_t)(size - off < RC_CHUNK ? size - off : RC_CHUNK);
        fill_bytes(buf, len, (uint8_t)(seed + off / RC_CHUNK));
        if (check) {
            ok = ok && lunsnap_read(a, lun, off, got, len) == LUNSNAP_RESULT_OK && memcmp(buf, got, len) == 0;
        } else {
            ok = ok && lunsnap_write(a, lun, off, buf, len) == LUNSNAP_RESULT_OK;
        }
    }
    return ok;
}

static void test_reclaim(void) {
    section = "reclaim";
    CHECK(LUNSNAP_RECLAIM_PER_FLUSH == 4096 && sizeof(lunsnap_reclaim_stats) == sizeof(size_t) + 4 * 8 &&
              offsetof(lunsnap_reclaim_stats, work) == sizeof(size_t) &&
              offsetof(lunsnap_reclaim_stats, remaining) == sizeof(size_t) + 3 * 8 &&
              offsetof(lunsnap_pool_info, reclaim_queue) + 8 == sizeof(lunsnap_pool_info),
          "lunsnap_reclaim_stats is %zu bytes; reclaim_queue at %zu of pool_info's %zu", sizeof(lunsnap_reclaim_stats),
          offsetof(lunsnap_pool_info, reclaim_queue), sizeof(lunsnap_pool_info));
    hostdev d;
    if (!hostdev_init(&d, BS, RC_BLOCKS)) {
        CHECK(false, "out of memory");
        return;
    }
    lunsnap_device_callbacks cb = hostdev_callbacks(&d);
    lunsnap_format_options o = small_opts();
    lunsnap_array *a = NULL;
    EXPECT_OK(lunsnap_format_callbacks(&cb, &o, &a));
    if (!a) {
        hostdev_destroy(&d);
        return;
    }

    /* Nothing waits on a fresh array: no work, no commit. */
    lunsnap_pool_info p0 = pool_of(a);
    CHECK(!reclaim_waits(a) && pending_of(a) == 0 && p0.reclaim_queue == 0, "a fresh array has something to reclaim");
    lunsnap_reclaim_stats st = reclaim_sentinel();
    EXPECT_OK(lunsnap_reclaim(a, 1000, &st));
    CHECK(st.struct_size == sizeof st && st.work == 0 && st.nodes_freed == 0 && st.extent_refs == 0 &&
              st.remaining == 0,
          "reclaim with nothing waiting: work %llu, remaining %llu", (unsigned long long)st.work,
          (unsigned long long)st.remaining);
    EXPECT_OK(lunsnap_reclaim(a, 1000, NULL)); /* out is optional */
    CHECK(pool_of(a).generation == p0.generation, "a reclaim with nothing to do committed");

    /* LUN 1 written whole (its mapping: a root over several leaves), LUN 2's first 64
     * KiB, copy 3 of LUN 2 sharing them. */
    EXPECT_OK(lunsnap_create_lun(a, 1, RC_LUN));
    CHECK(whole_lun(a, 1, RC_LUN, 1, false), "writing LUN 1 failed: %s", last_message(a));
    EXPECT_OK(lunsnap_create_lun(a, 2, LUN_SIZE));
    CHECK(whole_lun(a, 2, 16 * EXTENT, 2, false), "writing LUN 2 failed: %s", last_message(a));
    EXPECT_OK(lunsnap_create_copy(a, 2, 3, true));
    EXPECT_OK(lunsnap_flush(a));
    lunsnap_pool_info pb = pool_of(a);
    CHECK(pb.allocated_bytes == RC_LUN + 16 * EXTENT, "allocated %llu before the delete",
          (unsigned long long)pb.allocated_bytes);

    /* delete returns at once: the reservation goes, the data waits in the free queue. */
    EXPECT_OK(lunsnap_delete(a, 1, false));
    lunsnap_pool_info pd = pool_of(a);
    uint64_t pend = pending_of(a);
    CHECK(pd.reserved_bytes + RC_LUN == pb.reserved_bytes && pd.allocated_bytes == pb.allocated_bytes &&
              pd.luns + 1 == pb.luns && pd.reclaim_queue == 1 && pd.generation > pb.generation && reclaim_waits(a),
          "after the delete: reserved %llu -> %llu, allocated %llu -> %llu, %llu queued",
          (unsigned long long)pb.reserved_bytes, (unsigned long long)pd.reserved_bytes,
          (unsigned long long)pb.allocated_bytes, (unsigned long long)pd.allocated_bytes,
          (unsigned long long)pd.reclaim_queue);
    CHECK(pend == RC_LUN, "pending after LUN 1's delete: %llu bytes, want %u", (unsigned long long)pend, RC_LUN);
    /* Sharing stays exact while the queue waits. */
    lunsnap_lun_info li = {.struct_size = sizeof li};
    EXPECT_OK(lunsnap_get_lun_info(a, 2, &li));
    CHECK(li.exclusive_bytes == 0 && li.shared_bytes == 16 * EXTENT, "LUN 2 while the queue waits: exclusive %llu, "
          "shared %llu", (unsigned long long)li.exclusive_bytes, (unsigned long long)li.shared_bytes);
    MAP_IS(a, 2, 0, LUN_SIZE, "0+128:s 128+384:h");
    MAP_ALLOC_IS(a, 2, 0, LUN_SIZE, "0+128:d 128+384:h");

    /* Bad arguments: refused before any work (nothing freed, nothing written). */
    st = reclaim_sentinel();
    st.struct_size = 0;
    lunsnap_reclaim_stats st0 = st;
    EXPECT_MSG(lunsnap_reclaim(a, 1000, &st), LUNSNAP_RESULT_INVALID_ARGUMENT,
               "lunsnap_reclaim: `out->struct_size` is 0: set it to sizeof the struct");
    st.struct_size = LUNSNAP_STRUCT_SIZE_MAX + 1;
    EXPECT(lunsnap_reclaim(a, 1000, &st), LUNSNAP_RESULT_INVALID_ARGUMENT);
    st.struct_size = 0;
    lunsnap_pool_info pr = pool_of(a);
    CHECK(memcmp(&st, &st0, sizeof st) == 0 && pr.reclaim_queue == pd.reclaim_queue &&
              pr.generation == pd.generation && pending_of(a) == RC_LUN,
          "a refused reclaim wrote *out or did some work");
    uint64_t u = 99;
    bool w = true;
    EXPECT_MSG(lunsnap_pending_bytes(a, NULL), LUNSNAP_RESULT_NULL_POINTER, "lunsnap_pending_bytes: `out` is NULL");
    EXPECT_MSG(lunsnap_reclaim_pending(a, NULL), LUNSNAP_RESULT_NULL_POINTER,
               "lunsnap_reclaim_pending: `out` is NULL");
    lunsnap_reclaim_stats sv = reclaim_sentinel(), sv0 = sv;
    EXPECT_MSG(lunsnap_reclaim(NULL, 1000, &sv), LUNSNAP_RESULT_NULL_POINTER, "lunsnap_reclaim: `array` is NULL");
    EXPECT(lunsnap_reclaim(forged(), 1000, &sv), LUNSNAP_RESULT_INVALID_HANDLE);
    EXPECT(lunsnap_pending_bytes(NULL, &u), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_reclaim_pending(NULL, &w), LUNSNAP_RESULT_NULL_POINTER);
    EXPECT(lunsnap_reclaim(forged(), 1000, NULL), LUNSNAP_RESULT_INVALID_HANDLE);
    EXPECT(lunsnap_pending_bytes(forged(), &u), LUNSNAP_RESULT_INVALID_HANDLE);
    CHECK(u == 99 && w && memcmp(&st, &st0, sizeof st) == 0 && memcmp(&sv, &sv0, sizeof sv) == 0,
          "a refused call wrote its out-parameter");
    CHECK(strstr(last_message(a), "lunsnap_reclaim_pending: `out` is NULL") != NULL,
          "the handle's last message: \"%s\"", last_message(a));

    /* A budget of 0 does nothing: no work, no commit; remaining says what waits. */
    st = reclaim_sentinel();
    EXPECT_OK(lunsnap_reclaim(a, 0, &st));
    lunsnap_pool_info pz = pool_of(a);
    CHECK(st.work == 0 && st.nodes_freed == 0 && st.extent_refs == 0 && st.remaining == pd.reclaim_queue &&
              pz.generation == pd.generation && pz.allocated_bytes == pd.allocated_bytes &&
              pz.reclaim_queue == pd.reclaim_queue && pending_of(a) == RC_LUN,
          "reclaim with budget 0: work %llu, remaining %llu, generation %llu -> %llu", (unsigned long long)st.work,
          (unsigned long long)st.remaining, (unsigned long long)pd.generation, (unsigned long long)pz.generation);

    /* Budget 1: the root first (an interior node: freed, its children queued in its
     * place), committed; then one leaf a call, each with all its extent references
     * (a leaf is handled whole). Every call says what remains, as pool_info does, and
     * allocated and pending bytes drop by the extents released. */
    st = reclaim_sentinel();
    EXPECT_OK(lunsnap_reclaim(a, 1, &st));
    lunsnap_pool_info p1 = pool_of(a);
    CHECK(st.work == 1 && st.nodes_freed == 1 && st.extent_refs == 0 && st.remaining >= 2 &&
              st.remaining == p1.reclaim_queue && p1.generation > pd.generation &&
              p1.allocated_bytes == pd.allocated_bytes && pending_of(a) == RC_LUN && reclaim_waits(a),
          "the first reclaim of budget 1: work %llu, nodes %llu, refs %llu, remaining %llu (pool %llu)",
          (unsigned long long)st.work, (unsigned long long)st.nodes_freed, (unsigned long long)st.extent_refs,
          (unsigned long long)st.remaining, (unsigned long long)p1.reclaim_queue);
    CHECK(violations(a) == 0, "check with the free queue half worked off");
    /* The queue is durable: a power cut keeps what the reclaim committed. */
    hostdev_power_cut(&d, HOSTDEV_CUT_DROP_ALL);
    hostdev_power_on(&d);
    EXPECT_OK(lunsnap_reopen(a));
    lunsnap_pool_info pc = pool_of(a);
    CHECK(pc.reclaim_queue == st.remaining && pc.generation == p1.generation && pending_of(a) == RC_LUN,
          "after a power cut: %llu queued (want %llu), generation %llu (want %llu)",
          (unsigned long long)pc.reclaim_queue, (unsigned long long)st.remaining, (unsigned long long)pc.generation,
          (unsigned long long)p1.generation);
    unsigned calls = 1, leaves = 0;
    uint64_t refs = 0, prev = RC_LUN;
    const char *bad = NULL;
    while (st.remaining > 0 && bad == NULL) {
        st = reclaim_sentinel();
        lunsnap_result r = lunsnap_reclaim(a, 1, &st);
        calls++;
        uint64_t now = pending_of(a);
        lunsnap_pool_info p = pool_of(a);
        if (r != LUNSNAP_RESULT_OK) {
            bad = lunsnap_strerror(r);
        } else if (st.nodes_freed != 1 || st.extent_refs == 0 || st.work != 1 + st.extent_refs) {
            bad = "a call of budget 1 did not free exactly one leaf with its references";
        } else if (p.reclaim_queue != st.remaining) {
            bad = "remaining is not the pool's reclaim_queue";
        } else if (prev - now != st.extent_refs * EXTENT || p.allocated_bytes + (RC_LUN - now) != pd.allocated_bytes) {
            bad = "pending or allocated bytes did not drop by the extents released";
        } else if (calls > 1000) {
            bad = "no end";
        }
        refs += st.extent_refs;
        leaves++;
        prev = now;
    }
    CHECK(bad == NULL && leaves >= 2 && refs == RC_LUN / EXTENT,
          "budget 1 freed LUN 1's mapping in %u calls (%u leaves, %llu extent references): %s", calls, leaves,
          (unsigned long long)refs, bad ? bad : "ok");
    printf("  lunsnap_reclaim, budget 1: a deleted LUN's %u KiB freed in %u calls (its root, then %u leaves with "
           "%llu extent references), each committed\n",
           RC_LUN / 1024, calls, leaves, (unsigned long long)refs);
    lunsnap_pool_info pe = pool_of(a);
    CHECK(!reclaim_waits(a) && pending_of(a) == 0 && pe.reclaim_queue == 0 &&
              pe.allocated_bytes + RC_LUN == pb.allocated_bytes &&
              pe.free_bytes == pe.capacity_bytes - pe.allocated_bytes,
          "after the queue was worked off: %llu queued, allocated %llu (want %llu)",
          (unsigned long long)pe.reclaim_queue, (unsigned long long)pe.allocated_bytes,
          (unsigned long long)(pb.allocated_bytes - RC_LUN));
    CHECK(violations(a) == 0, "check after the reclaim");

    /* A deleted copy shares its whole mapping with LUN 2: nothing waits to be freed;
     * the reclaim only drops the root's reference (one unit of work, no node freed).
     * A struct_size ending before extent_refs: only work and nodes_freed are written. */
    EXPECT_OK(lunsnap_delete(a, 3, false));
    CHECK(reclaim_waits(a) && pending_of(a) == 0, "a deleted copy sharing everything: %llu bytes pending",
          (unsigned long long)pending_of(a));
    st = reclaim_sentinel();
    st.struct_size = offsetof(lunsnap_reclaim_stats, extent_refs);
    EXPECT_OK(lunsnap_reclaim(a, 100, &st));
    CHECK(st.struct_size == offsetof(lunsnap_reclaim_stats, extent_refs) && st.work == 1 && st.nodes_freed == 0 &&
              all_bytes((const uint8_t *)&st + offsetof(lunsnap_reclaim_stats, extent_refs),
                        sizeof st - offsetof(lunsnap_reclaim_stats, extent_refs), 0x5a),
          "reclaim of a shared mapping into a short struct: work %llu, nodes %llu, or written past struct_size",
          (unsigned long long)st.work, (unsigned long long)st.nodes_freed);
    CHECK(!reclaim_waits(a) && pool_of(a).allocated_bytes == pe.allocated_bytes,
          "the shared mapping's reclaim freed data");

    /* attach queues the image it replaces. A flush with nothing to commit leaves the
     * queue; one that commits works it off first (LUNSNAP_RECLAIM_PER_FLUSH units: more
     * than this small mapping needs). */
    EXPECT_OK(lunsnap_create_copy(a, 2, 3, true));
    CHECK(whole_lun(a, 3, 16 * EXTENT, 3, false), "writing copy 3 failed: %s", last_message(a));
    EXPECT_OK(lunsnap_flush(a));
    EXPECT_OK(lunsnap_attach(a, 3));
    lunsnap_pool_info pa = pool_of(a);
    CHECK(pending_of(a) == 16 * EXTENT && pa.reclaim_queue > 0, "after refreshing copy 3: %llu bytes pending",
          (unsigned long long)pending_of(a));
    EXPECT_OK(lunsnap_flush(a));
    lunsnap_pool_info pn = pool_of(a);
    CHECK(pn.generation == pa.generation && pn.reclaim_queue == pa.reclaim_queue,
          "a flush with nothing to commit reclaimed (generation %llu -> %llu)", (unsigned long long)pa.generation,
          (unsigned long long)pn.generation);
    static uint8_t blk[EXTENT];
    fill_bytes(blk, sizeof blk, 9);
    EXPECT_OK(lunsnap_write(a, 2, 32 * EXTENT, blk, sizeof blk)); /* a hole of both: one new extent */
    EXPECT_OK(lunsnap_flush(a));
    lunsnap_pool_info pf = pool_of(a);
    CHECK(pf.reclaim_queue == 0 && !reclaim_waits(a) && pending_of(a) == 0 &&
              pf.allocated_bytes + 16 * EXTENT == pa.allocated_bytes + EXTENT,
          "a committing flush: %llu queued, allocated %llu -> %llu", (unsigned long long)pf.reclaim_queue,
          (unsigned long long)pa.allocated_bytes, (unsigned long long)pf.allocated_bytes);

    /* restore and detach queue what they drop: copy 3 rewrites two extents, LUN 2 is
     * restored from it (LUN 2's old extents 0 and 1, and its extent 32, wait: the rest
     * is copy 3's too), then copy 3 is detached (its mapping is now LUN 2's: nothing
     * more waits). */
    CHECK(whole_lun(a, 3, 2 * EXTENT, 4, false), "writing copy 3 failed: %s", last_message(a));
    EXPECT_OK(lunsnap_restore(a, 3));
    CHECK(pending_of(a) == 3 * EXTENT, "after the restore: %llu bytes pending, want %u",
          (unsigned long long)pending_of(a), 3 * EXTENT);
    EXPECT_OK(lunsnap_detach(a, 3));
    lunsnap_pool_info pt = pool_of(a);
    CHECK(pending_of(a) == 3 * EXTENT && pt.reclaim_queue == 2, "after the detach: %llu bytes pending, %llu queued",
          (unsigned long long)pending_of(a), (unsigned long long)pt.reclaim_queue);
    CHECK(RECLAIM_ALL(a) == 3 * EXTENT, "restore and detach: not 3 extents freed");
    CHECK(whole_lun(a, 2, 2 * EXTENT, 4, true), "LUN 2 does not read copy 3's data after the restore");

    /* LUN 2 now holds copy 3's 16 extents (its extent 32 went with the restore). */
    /* A write that needs space only the queue holds frees it synchronously: LUN 5 as big
     * as the unreserved space, written whole and deleted; LUN 6 of the same size,
     * written whole, fits only if the writes take LUN 5's extents back. */
    lunsnap_pool_info ps = pool_of(a);
    uint64_t big = ps.unreserved_bytes / RC_CHUNK * RC_CHUNK;
    EXPECT_OK(lunsnap_create_lun(a, 5, big));
    CHECK(whole_lun(a, 5, big, 5, false), "writing LUN 5 failed: %s", last_message(a));
    EXPECT_OK(lunsnap_delete(a, 5, false));
    EXPECT_OK(lunsnap_create_lun(a, 6, big));
    lunsnap_pool_info pw = pool_of(a);
    CHECK(pending_of(a) == big && pw.free_bytes < big, "before LUN 6's writes: %llu pending, %llu free, want %llu "
          "pending and less free", (unsigned long long)pending_of(a), (unsigned long long)pw.free_bytes,
          (unsigned long long)big);
    CHECK(whole_lun(a, 6, big, 6, false), "writing LUN 6 (%llu bytes; %llu free, the rest in the free queue) "
          "failed: %s", (unsigned long long)big, (unsigned long long)pw.free_bytes, last_message(a));
    CHECK(whole_lun(a, 6, big, 6, true), "LUN 6 does not read what was written");
    lunsnap_pool_info pq = pool_of(a);
    CHECK(pq.reclaim_queue < pw.reclaim_queue || pq.reclaim_queue == 0, "the writes reclaimed nothing");
    RECLAIM_ALL(a);
    EXPECT_OK(lunsnap_flush(a));
    pq = pool_of(a);
    CHECK(pq.allocated_bytes == big + 16 * EXTENT && pq.reclaim_queue == 0,
          "after LUN 6's writes and the reclaim: allocated %llu, want %llu", (unsigned long long)pq.allocated_bytes,
          (unsigned long long)(big + 16 * EXTENT));
    CHECK(violations(a) == 0, "check after the synchronous reclaim");

    /* A failing write in a reclaim's commit: DEVICE_IO, the handle poisoned (reclaim
     * then refuses, even with budget 0); a reopen resumes from the committed queue. */
    EXPECT_OK(lunsnap_delete(a, 6, false));
    lunsnap_pool_info pg = pool_of(a);
    d.fail_write_at = 1;
    st = reclaim_sentinel();
    st0 = st;
    EXPECT(lunsnap_reclaim(a, LUNSNAP_RECLAIM_PER_FLUSH, &st), LUNSNAP_RESULT_DEVICE_IO);
    hostdev_heal(&d);
    CHECK(memcmp(&st, &st0, sizeof st) == 0, "a failed reclaim wrote *out");
    EXPECT(lunsnap_reclaim(a, 1, &st), LUNSNAP_RESULT_POISONED);
    EXPECT(lunsnap_reclaim(a, 0, NULL), LUNSNAP_RESULT_POISONED);
    bool poisoned = false;
    EXPECT_OK(lunsnap_is_poisoned(a, &poisoned));
    CHECK(poisoned, "a failed reclaim did not poison the handle");
    EXPECT_OK(lunsnap_reopen(a));
    lunsnap_pool_info po = pool_of(a);
    CHECK(po.reclaim_queue == pg.reclaim_queue && po.generation == pg.generation && pending_of(a) == big,
          "after a failed reclaim and a reopen: %llu queued (want %llu), %llu pending (want %llu)",
          (unsigned long long)po.reclaim_queue, (unsigned long long)pg.reclaim_queue,
          (unsigned long long)pending_of(a), (unsigned long long)big);
    CHECK(RECLAIM_ALL(a) == big, "LUN 6's space");
    CHECK(violations(a) == 0, "check at the end");
    EXPECT_OK(lunsnap_close(a));
    hostdev_destroy(&d);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_version_and_messages();
    test_format_mem();
    test_callbacks();
    test_failing_io();
    test_handles();
    test_failed_reopen();
    test_luns_and_copies();
    test_io();
    test_hosts();
    test_grants();
    test_online();
    test_groups();
    test_failing_access_commits();
    test_map_and_diff();
    test_write_zeroes();
    test_detect_zeros();
    test_ranges_as_hosts();
    test_discard_callback();
    test_error_messages();
    test_struct_size();
    test_new_queries();
    test_device_detail();
    test_metadata_copies();
    test_heal_and_scrub();
    test_commit_lost();
    test_repair();
    test_reclaim();
#if defined(LUNSNAP_FEATURE_STD)
    test_files();
#endif
    printf("%u passed, %u failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
