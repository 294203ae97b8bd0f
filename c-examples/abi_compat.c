/*
 * abi_compat.c: a program built against an older lunsnap.h keeps working.
 *
 * It does not include include/lunsnap.h. It declares, as an older header would, the
 * growable structs with fewer fields than the library has (lunsnap_lun_info without
 * its last three fields, lunsnap_pool_info without its last twelve, lunsnap_format_options
 * without cache_bytes, array_id and metadata_copies, lunsnap_open_options with
 * struct_size alone, lunsnap_device_callbacks without discard), and only the functions
 * it calls. It also declares the three structs as 0.2.0 had them, the fields just
 * before metadata_copies, allow_rollback and the pool's metadata_copies, healed_pages,
 * pending_heals and rollback generations were appended (the pool's first new field
 * lands in what was the old struct's tail padding), and lunsnap_pool_info as it was just
 * before reclaim_queue (background freeing) was appended. Each struct sits at the very end
 * of a heap block of exactly its size followed by a canary, so a library writing past
 * the caller's struct_size is caught by the canary in a plain run, by ASan
 * (heap-buffer-overflow) and by valgrind (invalid write); a library reading past it
 * reads the canary (0xc5 bytes: an invalid metadata_copies and allow_rollback).
 *
 * Checks: the library fills every field the old struct has, with the right values;
 * writes nothing past it; input structs shorter than the library's take the defaults
 * for the fields they lack (the cache budget, the array id, two metadata copies, no
 * rollback allowed: an image whose newest commit is damaged is refused with code 17,
 * which this older header does not name, a NULL discard callback); and a program that
 * set struct_size to the old size gets the same results as one built against the
 * current header would (the LUN's size, reservation, the pool, the least device).
 * Background freeing needs nothing from an older program: a deleted LUN's space waits
 * in the free queue (still counted as allocated) until a committing lunsnap_flush,
 * which it already calls, frees it. Exit status 1 on failure.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- "lunsnap.h" as an older version had it ------------------------------------------ */

typedef uint32_t lunsnap_result;
#define LUNSNAP_RESULT_OK 0u
#define LUNSNAP_RESULT_INVALID_ARGUMENT 3u
typedef struct lunsnap_array lunsnap_array;

typedef struct {
    size_t struct_size;
    uint32_t extent_size;
    uint32_t max_luns;
    /* (newer: cache_bytes, array_id) */
} lunsnap_format_options;

typedef struct {
    size_t struct_size;
    /* (newer: cache_bytes, allow_rollback) */
} lunsnap_open_options;

/* The same three as 0.2.0 had them: everything before metadata_copies, allow_rollback
 * and the pool's metadata_copies (which now sits in this struct's tail padding). */
typedef struct {
    size_t struct_size;
    uint32_t extent_size;
    uint32_t max_luns;
    uint64_t cache_bytes;
    uint8_t array_id[16];
    /* (newer: metadata_copies) */
} lunsnap_format_options_020;

typedef struct {
    size_t struct_size;
    uint64_t cache_bytes;
    /* (newer: allow_rollback) */
} lunsnap_open_options_020;

typedef struct {
    size_t struct_size;
    uint64_t capacity_bytes;
    uint64_t allocated_bytes;
    uint64_t reserved_bytes;
    uint64_t unreserved_bytes;
    uint64_t free_bytes;
    uint64_t metadata_used_bytes;
    uint64_t metadata_provisioned_bytes;
    uint64_t generation;
    uint32_t extent_size;
    uint32_t luns;
    uint32_t max_luns;
    /* (4 bytes of padding; newer: metadata_copies, healed_pages, pending_heals,
     * rollback_lost_generation, rollback_kept_generation) */
} lunsnap_pool_info_020;

/* lunsnap_pool_info just before reclaim_queue was appended. */
typedef struct {
    size_t struct_size;
    uint64_t capacity_bytes;
    uint64_t allocated_bytes;
    uint64_t reserved_bytes;
    uint64_t unreserved_bytes;
    uint64_t free_bytes;
    uint64_t metadata_used_bytes;
    uint64_t metadata_provisioned_bytes;
    uint64_t generation;
    uint32_t extent_size;
    uint32_t luns;
    uint32_t max_luns;
    uint32_t metadata_copies;
    uint64_t healed_pages;
    uint64_t pending_heals;
    uint64_t rollback_lost_generation;
    uint64_t rollback_kept_generation;
    /* (newer: reclaim_queue) */
} lunsnap_pool_info_pre_reclaim;

/* A code this header does not name (newer: LUNSNAP_RESULT_COMMIT_LOST): an older
 * program sees a failure, and lunsnap_strerror and lunsnap_last_error_message say
 * what it is. */
#define CODE_COMMIT_LOST 17u

typedef struct {
    size_t struct_size;
    void *ctx;
    uint32_t block_size;
    uint64_t block_count;
    int32_t (*read)(void *ctx, uint64_t lba, uint8_t *buf, size_t len);
    int32_t (*write)(void *ctx, uint64_t lba, const uint8_t *buf, size_t len);
    int32_t (*flush)(void *ctx);
    /* (newer: discard) */
} lunsnap_device_callbacks;

typedef struct {
    size_t struct_size;
    uint32_t lun;
    uint32_t kind;
    uint64_t size;
    uint8_t has_parent;
    uint8_t attached;
    uint32_t parent;
    uint64_t created_generation;
    uint64_t attached_generation;
    uint64_t reserved_bytes;
    /* (newer: exclusive_bytes, shared_bytes, online) */
} lunsnap_lun_info;

typedef struct {
    size_t struct_size;
    uint64_t capacity_bytes;
    uint64_t allocated_bytes;
    uint64_t reserved_bytes;
    uint64_t unreserved_bytes;
    uint64_t free_bytes;
    /* (newer: metadata_used_bytes, metadata_provisioned_bytes, generation, extent_size,
     * luns, max_luns) */
} lunsnap_pool_info;

const char *lunsnap_strerror(uint32_t code);
lunsnap_result lunsnap_last_error_message(const lunsnap_array *array, char *buf, size_t buf_len,
                                          size_t *out_len);
lunsnap_result lunsnap_format_options_init(lunsnap_format_options *opts, size_t struct_size);
lunsnap_result lunsnap_open_options_init(lunsnap_open_options *opts, size_t struct_size);
lunsnap_result lunsnap_min_device_bytes(const lunsnap_format_options *opts, uint64_t *out);
lunsnap_result lunsnap_format_mem(uint32_t block_size, uint64_t block_count, const lunsnap_format_options *opts,
                                  lunsnap_array **out);
lunsnap_result lunsnap_format_callbacks(const lunsnap_device_callbacks *dev, const lunsnap_format_options *opts,
                                        lunsnap_array **out);
lunsnap_result lunsnap_open_callbacks(const lunsnap_device_callbacks *dev, const lunsnap_open_options *opts,
                                      lunsnap_array **out);
lunsnap_result lunsnap_create_lun(lunsnap_array *array, uint32_t lun, uint64_t size);
lunsnap_result lunsnap_create_copy(lunsnap_array *array, uint32_t parent, uint32_t lun, bool attached);
lunsnap_result lunsnap_write(lunsnap_array *array, uint32_t lun, uint64_t offset, const uint8_t *buf, size_t len);
lunsnap_result lunsnap_delete(lunsnap_array *array, uint32_t lun, bool orphan_copies);
lunsnap_result lunsnap_flush(lunsnap_array *array);
lunsnap_result lunsnap_get_lun_info(lunsnap_array *array, uint32_t lun, lunsnap_lun_info *out);
lunsnap_result lunsnap_get_pool_info(lunsnap_array *array, lunsnap_pool_info *out);
lunsnap_result lunsnap_close(lunsnap_array *array);

/* ---- the program ------------------------------------------------------------------------ */

#define CANARY 0xc5
#define CANARY_BYTES 64
#define EXTENT 4096u

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL abi_compat.c:%d: ", __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            putchar('\n');                                                                         \
        }                                                                                          \
    } while (0)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        lunsnap_result r_ = (call);                                                                \
        if (r_ != LUNSNAP_RESULT_OK) {                                                             \
            char m_[256];                                                                          \
            size_t n_;                                                                             \
            lunsnap_last_error_message(NULL, m_, sizeof m_, &n_);                                  \
            printf("FAIL abi_compat.c:%d: %s: %s\n", __LINE__, #call, m_);                         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A heap block of `size` bytes followed by the canary, filled with `fill`; the struct
 * is the block's start, so anything past `size` hits the canary (and, under ASan and
 * valgrind, the block's end is where the struct ends: see the separate exact block). */
static void *guarded(size_t size, uint8_t fill) {
    uint8_t *p = malloc(size + CANARY_BYTES);
    if (!p) {
        printf("out of memory\n");
        exit(1);
    }
    memset(p, fill, size);
    memset(p + size, CANARY, CANARY_BYTES);
    return p;
}

static bool canary_intact(const void *block, size_t size) {
    const uint8_t *p = (const uint8_t *)block + size;
    for (size_t i = 0; i < CANARY_BYTES; i++) {
        if (p[i] != CANARY) {
            return false;
        }
    }
    return true;
}

/* A block of exactly `size` bytes: the sanitizers flag any write past it. */
static void *exact(size_t size, uint8_t fill) {
    void *p = malloc(size);
    if (!p) {
        printf("out of memory\n");
        exit(1);
    }
    memset(p, fill, size);
    return p;
}

/* A host device: a plain memory buffer without discard, as an older program had. */
typedef struct {
    uint8_t *mem;
    uint32_t block_size;
    uint64_t block_count;
} ramdev;

static int32_t ram_read(void *ctx, uint64_t lba, uint8_t *buf, size_t len) {
    ramdev *d = ctx;
    memcpy(buf, d->mem + lba * d->block_size, len);
    return 0;
}

static int32_t ram_write(void *ctx, uint64_t lba, const uint8_t *buf, size_t len) {
    ramdev *d = ctx;
    memcpy(d->mem + lba * d->block_size, buf, len);
    return 0;
}

static int32_t ram_flush(void *ctx) {
    (void)ctx;
    return 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("abi_compat: a program built against an older lunsnap.h (shorter structs)\n");

    /* Options: init fills the old struct's fields only; format takes the defaults
     * for the rest. */
    lunsnap_format_options *fo = guarded(sizeof *fo, 0x11);
    TRY(lunsnap_format_options_init(fo, sizeof *fo));
    CHECK(canary_intact(fo, sizeof *fo), "lunsnap_format_options_init wrote past the old struct");
    CHECK(fo->struct_size == sizeof *fo && fo->extent_size == 16384 && fo->max_luns == 1024,
          "old format options: size %zu, extent %u, max_luns %u", fo->struct_size, fo->extent_size, fo->max_luns);
    lunsnap_format_options *fx = exact(sizeof *fx, 0x11);
    TRY(lunsnap_format_options_init(fx, sizeof *fx));
    /* The fields the old options lack take their defaults: the least device they
     * format on is the defaults' (two metadata copies; the canary read as
     * metadata_copies would be refused, one copy would need less). */
    uint64_t min_default = 0, min_old = 0, min_020 = 0;
    TRY(lunsnap_min_device_bytes(NULL, &min_default));
    TRY(lunsnap_min_device_bytes(fo, &min_old));
    TRY(lunsnap_min_device_bytes(fx, &min_020));
    CHECK(min_old == min_default && min_020 == min_default, "least device: %llu with the old options, %llu "
          "(exact block), defaults %llu", (unsigned long long)min_old, (unsigned long long)min_020,
          (unsigned long long)min_default);
    lunsnap_format_options_020 *f2 = guarded(sizeof *f2, 0x11);
    TRY(lunsnap_format_options_init((lunsnap_format_options *)f2, sizeof *f2));
    CHECK(canary_intact(f2, sizeof *f2), "lunsnap_format_options_init wrote past 0.2.0's struct");
    CHECK(f2->struct_size == sizeof *f2 && f2->extent_size == 16384 && f2->max_luns == 1024 &&
              f2->cache_bytes == 4u << 20,
          "0.2.0's format options: size %zu, extent %u, cache %llu", f2->struct_size, f2->extent_size,
          (unsigned long long)f2->cache_bytes);
    TRY(lunsnap_min_device_bytes((const lunsnap_format_options *)f2, &min_020));
    CHECK(min_020 == min_default, "least device with 0.2.0's options: %llu, defaults %llu",
          (unsigned long long)min_020, (unsigned long long)min_default);
    fo->extent_size = EXTENT;
    fo->max_luns = 16;
    lunsnap_array *a = NULL;
    TRY(lunsnap_format_mem(4096, 4096, fo, &a));

    static uint8_t data[64 * 1024];
    memset(data, 0x5a, sizeof data);
    TRY(lunsnap_create_lun(a, 1, 256 * 1024));
    TRY(lunsnap_write(a, 1, 0, data, sizeof data));
    TRY(lunsnap_create_copy(a, 1, 2, true));
    TRY(lunsnap_create_lun(a, 3, 1024)); /* reserves a whole extent */

    /* LUN info: every old field right, nothing past the struct. */
    lunsnap_lun_info *li = guarded(sizeof *li, 0xee);
    li->struct_size = sizeof *li;
    TRY(lunsnap_get_lun_info(a, 2, li));
    CHECK(canary_intact(li, sizeof *li), "lunsnap_get_lun_info wrote past the old struct");
    CHECK(li->struct_size == sizeof *li, "struct_size changed to %zu", li->struct_size);
    CHECK(li->lun == 2 && li->kind == 1 && li->size == 256 * 1024 && li->has_parent == 1 && li->attached == 1 &&
              li->parent == 1 && li->created_generation > 0 && li->attached_generation > 0 &&
              li->reserved_bytes == 256 * 1024,
          "old lun_info of copy 2: lun %u kind %u size %llu parent %u/%u reserved %llu", li->lun, li->kind,
          (unsigned long long)li->size, li->has_parent, li->parent, (unsigned long long)li->reserved_bytes);
    TRY(lunsnap_get_lun_info(a, 3, li));
    CHECK(li->size == 1024 && li->reserved_bytes == EXTENT && li->kind == 0 && li->has_parent == 0,
          "old lun_info of LUN 3: size %llu reserved %llu", (unsigned long long)li->size,
          (unsigned long long)li->reserved_bytes);
    CHECK(canary_intact(li, sizeof *li), "lunsnap_get_lun_info wrote past the old struct");
    lunsnap_lun_info *lx = exact(sizeof *lx, 0xee);
    lx->struct_size = sizeof *lx;
    TRY(lunsnap_get_lun_info(a, 1, lx));
    CHECK(lx->lun == 1 && lx->size == 256 * 1024, "exact-size lun_info: lun %u", lx->lun);

    /* Pool info likewise. */
    lunsnap_pool_info *p = guarded(sizeof *p, 0xee);
    p->struct_size = sizeof *p;
    TRY(lunsnap_get_pool_info(a, p));
    CHECK(canary_intact(p, sizeof *p), "lunsnap_get_pool_info wrote past the old struct");
    CHECK(p->capacity_bytes > 0 && p->reserved_bytes == 2 * 256 * 1024 + EXTENT &&
              p->unreserved_bytes == p->capacity_bytes - p->reserved_bytes && p->allocated_bytes == 64 * 1024 &&
              p->free_bytes == p->capacity_bytes - p->allocated_bytes,
          "old pool_info: capacity %llu reserved %llu allocated %llu", (unsigned long long)p->capacity_bytes,
          (unsigned long long)p->reserved_bytes, (unsigned long long)p->allocated_bytes);
    lunsnap_pool_info *px = exact(sizeof *px, 0xee);
    px->struct_size = sizeof *px;
    TRY(lunsnap_get_pool_info(a, px));
    CHECK(px->reserved_bytes == p->reserved_bytes, "exact-size pool_info differs");
    /* 0.2.0's pool_info: its fields, and the new metadata_copies in its padding, but
     * nothing past it. */
    lunsnap_pool_info_020 *p2 = guarded(sizeof *p2, 0xee);
    p2->struct_size = sizeof *p2;
    TRY(lunsnap_get_pool_info(a, (lunsnap_pool_info *)p2));
    CHECK(canary_intact(p2, sizeof *p2), "lunsnap_get_pool_info wrote past 0.2.0's struct");
    CHECK(p2->struct_size == sizeof *p2 && p2->reserved_bytes == p->reserved_bytes && p2->generation > 0 &&
              p2->extent_size == EXTENT && p2->luns == 3 && p2->max_luns == 16 && p2->metadata_used_bytes > 0 &&
              p2->metadata_used_bytes < p2->metadata_provisioned_bytes,
          "0.2.0's pool_info: generation %llu, extent %u, %u LUNs of %u, metadata %llu of %llu",
          (unsigned long long)p2->generation, p2->extent_size, p2->luns, p2->max_luns,
          (unsigned long long)p2->metadata_used_bytes, (unsigned long long)p2->metadata_provisioned_bytes);

    /* The pool information as it was just before reclaim_queue: all of it, nothing
     * past it (the library's struct is 8 bytes longer). */
    lunsnap_pool_info_pre_reclaim *pr = guarded(sizeof *pr, 0xee);
    pr->struct_size = sizeof *pr;
    TRY(lunsnap_get_pool_info(a, (lunsnap_pool_info *)pr));
    CHECK(canary_intact(pr, sizeof *pr), "lunsnap_get_pool_info wrote past the struct without reclaim_queue");
    CHECK(pr->struct_size == sizeof *pr && pr->reserved_bytes == p->reserved_bytes &&
              pr->allocated_bytes == p->allocated_bytes && pr->luns == 3 && pr->metadata_copies == 2 &&
              pr->healed_pages == 0 && pr->pending_heals == 0 && pr->rollback_lost_generation == 0 &&
              pr->rollback_kept_generation == 0 && pr->generation == p2->generation,
          "pool_info without reclaim_queue: %u LUNs, %u metadata copies, generation %llu",
          pr->luns, pr->metadata_copies, (unsigned long long)pr->generation);
    lunsnap_pool_info_pre_reclaim *prx = exact(sizeof *prx, 0xee);
    prx->struct_size = sizeof *prx;
    TRY(lunsnap_get_pool_info(a, (lunsnap_pool_info *)prx));
    CHECK(prx->rollback_kept_generation == 0 && prx->generation == pr->generation,
          "exact-size pool_info without reclaim_queue differs");

    /* A struct_size the library refuses is still refused with the old layout. */
    li->struct_size = 0;
    CHECK(lunsnap_get_lun_info(a, 1, li) == LUNSNAP_RESULT_INVALID_ARGUMENT, "struct_size 0 accepted");
    TRY(lunsnap_close(a));

    /* Device callbacks without discard, open options with struct_size alone. */
    ramdev d = {.block_size = 512, .block_count = 16384};
    d.mem = calloc(d.block_count, d.block_size);
    lunsnap_device_callbacks *cb = exact(sizeof *cb, 0);
    cb->struct_size = sizeof *cb;
    cb->ctx = &d;
    cb->block_size = d.block_size;
    cb->block_count = d.block_count;
    cb->read = ram_read;
    cb->write = ram_write;
    cb->flush = ram_flush;
    a = NULL;
    TRY(lunsnap_format_callbacks(cb, fo, &a));
    TRY(lunsnap_create_lun(a, 1, 128 * 1024));
    TRY(lunsnap_write(a, 1, 0, data, sizeof data));
    TRY(lunsnap_delete(a, 1, false)); /* its extents wait in the free queue */
    TRY(lunsnap_close(a));
    lunsnap_open_options *oo = guarded(sizeof *oo, 0x22);
    TRY(lunsnap_open_options_init(oo, sizeof *oo));
    CHECK(canary_intact(oo, sizeof *oo) && oo->struct_size == sizeof *oo,
          "lunsnap_open_options_init and the old struct");
    a = NULL;
    TRY(lunsnap_open_callbacks(cb, oo, &a));
    p->struct_size = sizeof *p;
    TRY(lunsnap_get_pool_info(a, p));
    CHECK(p->reserved_bytes == 0 && p->allocated_bytes == sizeof data && canary_intact(p, sizeof *p),
          "reopened: reserved %llu, allocated %llu (the deleted LUN's data waiting in the free queue)",
          (unsigned long long)p->reserved_bytes, (unsigned long long)p->allocated_bytes);
    /* The program's next committing flush frees it (no discard callback to call). */
    TRY(lunsnap_create_lun(a, 2, 128 * 1024));
    TRY(lunsnap_write(a, 2, 0, data, EXTENT));
    TRY(lunsnap_flush(a));
    TRY(lunsnap_get_pool_info(a, p));
    CHECK(p->reserved_bytes == 128 * 1024 && p->allocated_bytes == EXTENT && canary_intact(p, sizeof *p),
          "after a write and a flush: reserved %llu, allocated %llu (want one extent)",
          (unsigned long long)p->reserved_bytes, (unsigned long long)p->allocated_bytes);
    TRY(lunsnap_close(a));

    /* An image whose newest commit's superblock is damaged in both copies: the old
     * open options (no allow_rollback) refuse the rollback, as NULL does. The slot is
     * found as any reader of docs/FORMAT.md would: superblock slots in pages 0 and 1
     * (second copies in the device's last two), the generation at byte 24. */
    uint64_t pages = d.block_count * d.block_size / 4096, gen[2] = {0, 0};
    for (int slot = 0; slot < 2; slot++) {
        for (int i = 7; i >= 0; i--) {
            gen[slot] = gen[slot] << 8 | d.mem[slot * 4096 + 24 + i];
        }
    }
    uint64_t newest = gen[1] > gen[0] ? 1 : 0;
    d.mem[newest * 4096 + 100] ^= 0xff;
    d.mem[(pages - 2 + newest) * 4096 + 100] ^= 0xff;
    lunsnap_open_options_020 *o2 = guarded(sizeof *o2, 0x22);
    TRY(lunsnap_open_options_init((lunsnap_open_options *)o2, sizeof *o2));
    CHECK(canary_intact(o2, sizeof *o2) && o2->cache_bytes == 4u << 20, "0.2.0's open options");
    const void *opens[3] = {NULL, oo, o2};
    for (int i = 0; i < 3; i++) {
        a = NULL;
        lunsnap_result r = lunsnap_open_callbacks(cb, opens[i], &a);
        char m[512];
        size_t n = 0;
        lunsnap_last_error_message(NULL, m, sizeof m, &n);
        CHECK(r == CODE_COMMIT_LOST && a == NULL && strstr(m, "superblock of generation") != NULL,
              "open of a lost commit with %s options: %u (%s): %s", i == 0 ? "NULL" : i == 1 ? "old" : "0.2.0's",
              (unsigned)r, lunsnap_strerror(r), m);
        if (i == 0) {
            printf("abi_compat: a lost commit gives code %u (%s): %s\n", (unsigned)r, lunsnap_strerror(r), m);
        }
        if (r == LUNSNAP_RESULT_OK) {
            lunsnap_close(a);
        }
    }

    free(fo);
    free(fx);
    free(li);
    free(lx);
    free(p);
    free(px);
    free(f2);
    free(p2);
    free(pr);
    free(prx);
    free(o2);
    free(cb);
    free(oo);
    free(d.mem);
    if (failures != 0) {
        printf("abi_compat: %d checks failed\n", failures);
        return 1;
    }
    printf("abi_compat: the old layouts (lun_info %zu bytes, pool_info %zu, format options %zu, open options %zu, "
           "callbacks %zu) were filled and read within their struct_size, nothing written past it\n",
           sizeof(lunsnap_lun_info), sizeof(lunsnap_pool_info), sizeof(lunsnap_format_options),
           sizeof(lunsnap_open_options), sizeof(lunsnap_device_callbacks));
    printf("abi_compat: and 0.2.0's (pool_info %zu bytes, format options %zu, open options %zu): two metadata "
           "copies and no rollback by default\n",
           sizeof(lunsnap_pool_info_020), sizeof(lunsnap_format_options_020), sizeof(lunsnap_open_options_020));
    printf("abi_compat: and pool_info without reclaim_queue (%zu bytes); a deleted LUN's space came back with the "
           "program's next flush\n",
           sizeof(lunsnap_pool_info_pre_reclaim));
    printf("abi_compat: all checks passed\n");
    return 0;
}
