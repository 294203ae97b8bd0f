/*
 * backup_cycle.c: the backup and restore processes of HP's Business Copy VA guide through the C API.
 *
 * HP's "Business Copy VA integration guide" partitions its procedures into four
 * processes: configuration (steps 1c 2c 4c 5c 6c 7c 8c, once), backup (1c 3c 4c 6c
 * 7c 9c, on a schedule), restore (1r 2r 3r 4r, on demand) and maintenance (10c, by
 * hand). This program runs a condensed version of all four (examples/backup_cycle.rs
 * is the full one) against a lunsnap array: a toy database writes to three parent
 * LUNs forming the volume group vg_db (1 data, 2 index, 3 redo), and LUNs 11, 12
 * and 13 are their business copies. Each step prints the guide's step number and the
 * lunsnap calls it maps to, and is verified block by block:
 *   - the copies stay frozen while the parents change;
 *   - the backup (an FNV-1a checksum of each copy, read whole) matches the database
 *     as it was when the copy was made;
 *   - the restore brings that content back to the damaged parents;
 *   - a power cut loses nothing committed and keeps nothing uncommitted;
 *   - the maintenance options (attach/attach, attach/detach, create/delete) release
 *     what they should; a close and reopen keeps everything; lunsnap_check is clean;
 *   - what attach, detach and delete drop is freed in the background: it waits in the
 *     free queue (lunsnap_pending_bytes says how much) until the host, idle, calls
 *     lunsnap_reclaim, and the allocated space then drops by exactly that much.
 * The copies of vg_db are made as one consistency group (lunsnap_create_copies,
 * lunsnap_attach_many: one point in time for the three LUNs); the database host
 * writes, and the backup host reads, through lunsnap_write_as and lunsnap_read_as
 * with array security on from step 5c (armsecure: the backup host may only read the
 * copies and cannot see the parents); "deactivate" takes LUNs offline.
 * Any mismatch stops the program with a message and exit status 1.
 *
 * The array lives in a sparse 10 MiB image file in a new directory under /tmp
 * (removed at exit), or, in a build without the file device (LUNSNAP_NO_STD), on a
 * memory device.
 */

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define DEV_BLOCK 4096u
#define DEV_BYTES (10 * MIB)
#define MAX_LUNS 64u
#define BLOCK 4096u /* the database's block */
#define NVOL 3
#define HOST_DB 0x50060b0000c2620aull     /* the database server's WWN */
#define HOST_BACKUP 0x50060b0000c2620bull /* the backup server's WWN */

typedef struct {
    const char *name;
    uint32_t lun, copy;
    uint64_t size;
    uint32_t loaded; /* blocks the initial load writes */
} volume;

static const volume VG[NVOL] = {
    {"data", 1, 11, 2 * MIB, 384},
    {"index", 2, 12, 1 * MIB, 192},
    {"redo", 3, 13, 512 * KIB, 64},
};
#define MAX_BLOCKS (2 * MIB / BLOCK)

/* What the database believes each LUN holds: the version of each block (0: never
 * written, reads as zeros). Block 0 is the volume-group header, written once. */
typedef struct {
    uint32_t v[NVOL][MAX_BLOCKS];
} image;

static lunsnap_array *va;
static image db;
static uint32_t next_version = 1;
static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t bytes_written, bytes_read;
static uint8_t blk[BLOCK], expect_blk[BLOCK];
static uint8_t chunk[256 * KIB];

#if defined(LUNSNAP_FEATURE_STD)
static char dir[] = "/tmp/lunsnap-backup-cycle-XXXXXX";
static char path[sizeof dir + 16];
static bool made_dir;

static void remove_image(void) {
    if (made_dir) {
        unlink(path);
        rmdir(dir);
    }
}
#endif

static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void step(const char *num, const char *text) {
    printf("  %-5s %s\n", num, text);
}

static void detail(const char *text) {
    printf("        %s\n", text);
}

static void pool(const char *note) {
    lunsnap_pool_info p = {.struct_size = sizeof p};
    TRY(lunsnap_get_pool_info(va, &p));
    printf("        pool: capacity %" PRIu64 " KiB, reserved %" PRIu64 " KiB, allocated %" PRIu64
           " KiB, generation %" PRIu64 "%s%s\n",
           p.capacity_bytes / KIB, p.reserved_bytes / KIB, p.allocated_bytes / KIB, p.generation, *note ? ": " : "",
           note);
}

/* The host is idle: it works the free queue off with lunsnap_reclaim, a budget at a
 * time, and checks that allocated space dropped by exactly what waited. Returns the
 * bytes freed; prints what it did after `what`. */
static uint64_t idle_reclaim(const char *what) {
    uint64_t waiting = 0;
    lunsnap_pool_info p0 = {.struct_size = sizeof p0}, p1 = {.struct_size = sizeof p1};
    TRY(lunsnap_pending_bytes(va, &waiting));
    TRY(lunsnap_get_pool_info(va, &p0));
    ENSURE(p0.reclaim_queue > 0, "%s: nothing waits in the free queue", what);
    lunsnap_reclaim_stats st = {.struct_size = sizeof st};
    unsigned calls = 0;
    uint64_t work = 0;
    do {
        TRY(lunsnap_reclaim(va, 64, &st));
        calls++;
        work += st.work;
    } while (st.remaining > 0);
    TRY(lunsnap_get_pool_info(va, &p1));
    bool pending = true;
    TRY(lunsnap_reclaim_pending(va, &pending));
    ENSURE(!pending && p1.reclaim_queue == 0 && p1.allocated_bytes + waiting == p0.allocated_bytes,
           "%s: reclaim left %" PRIu64 " queue entries, allocated %" PRIu64 " -> %" PRIu64 " KiB (%" PRIu64
           " KiB were pending)",
           what, p1.reclaim_queue, p0.allocated_bytes / KIB, p1.allocated_bytes / KIB, waiting / KIB);
    printf("        background freeing: %s queued %" PRIu64 " KiB; the idle host's lunsnap_reclaim(budget 64) x %u "
           "(%" PRIu64 " units of work) freed it: allocated %" PRIu64 " -> %" PRIu64 " KiB\n",
           what, waiting / KIB, calls, work, p0.allocated_bytes / KIB, p1.allocated_bytes / KIB);
    return waiting;
}

static lunsnap_lun_info info(uint32_t lun) {
    lunsnap_lun_info i = {.struct_size = sizeof i};
    TRY(lunsnap_get_lun_info(va, lun, &i));
    return i;
}

static void show_lun(uint32_t lun, const char *note) {
    lunsnap_lun_info i = info(lun);
    printf("        LUN %2u: %s of %" PRIu64 " KiB%s%s, reserved %" PRIu64 " KiB, exclusive %" PRIu64
           " KiB, shared %" PRIu64 " KiB%s%s\n",
           lun, i.kind == LUNSNAP_LUN_KIND_COPY ? "copy" : "LUN", i.size / KIB,
           i.kind == LUNSNAP_LUN_KIND_COPY ? (i.attached ? " (attached)" : " (detached)") : "",
           i.online ? "" : " (offline)", i.reserved_bytes / KIB, i.exclusive_bytes / KIB, i.shared_bytes / KIB,
           *note ? ": " : "", note);
}

/* ---- the toy database ----------------------------------------------------------- */

static void db_write(int vol, uint32_t block) {
    uint32_t v = next_version++;
    fill(blk, BLOCK, VG[vol].lun, v, (uint64_t)block * BLOCK);
    TRY(lunsnap_write_as(va, HOST_DB, VG[vol].lun, (uint64_t)block * BLOCK, blk, BLOCK));
    db.v[vol][block] = v;
    bytes_written += BLOCK;
}

static uint32_t load(void) {
    uint32_t n = 0;
    for (int vol = 0; vol < NVOL; vol++) {
        for (uint32_t b = 0; b < VG[vol].loaded; b++, n++) {
            db_write(vol, b);
        }
    }
    return n;
}

/* `n` transactions: each updates a data block, an index block and appends to the
 * redo log (never block 0, the volume-group header). Returns blocks written. */
static uint32_t redo_head = 1;
static uint32_t transactions(unsigned n) {
    uint32_t blocks = 0;
    for (unsigned t = 0; t < n; t++) {
        db_write(0, 1 + (uint32_t)(rnd() % (VG[0].size / BLOCK - 1)));
        db_write(1, 1 + (uint32_t)(rnd() % (VG[1].size / BLOCK - 1)));
        db_write(2, redo_head);
        redo_head = redo_head + 1 < VG[2].size / BLOCK ? redo_head + 1 : 1;
        blocks += 3;
    }
    return blocks;
}

/* Reads LUN `lun` whole and counts the blocks that differ from `versions` of the
 * pattern of LUN `pattern` (a copy holds its parent's pattern). */
static uint32_t diff(uint32_t lun, uint32_t pattern, const uint32_t *versions, uint64_t size) {
    uint32_t bad = 0;
    for (uint64_t off = 0; off < size; off += sizeof chunk) {
        size_t len = size - off < sizeof chunk ? (size_t)(size - off) : sizeof chunk;
        TRY(lunsnap_read(va, lun, off, chunk, len));
        bytes_read += len;
        for (size_t b = 0; b < len; b += BLOCK) {
            uint64_t block = (off + b) / BLOCK;
            fill(expect_blk, BLOCK, pattern, versions[block], off + b);
            bad += memcmp(chunk + b, expect_blk, BLOCK) != 0;
        }
    }
    return bad;
}

static void verify_parents(const image *img, const char *when) {
    for (int vol = 0; vol < NVOL; vol++) {
        uint32_t bad = diff(VG[vol].lun, VG[vol].lun, img->v[vol], VG[vol].size);
        ENSURE(bad == 0, "%s: parent LUN %u has %u blocks that differ from the database", when, VG[vol].lun, bad);
    }
}

static void verify_copies(const image *img, const char *when) {
    for (int vol = 0; vol < NVOL; vol++) {
        uint32_t bad = diff(VG[vol].copy, VG[vol].lun, img->v[vol], VG[vol].size);
        ENSURE(bad == 0, "%s: copy LUN %u has %u blocks that differ from its point-in-time image", when,
               VG[vol].copy, bad);
    }
}

/* FNV-1a 64 of a LUN read whole by `host` (the "backup to tape"). */
static uint64_t checksum(uint64_t host, uint32_t lun, uint64_t size) {
    uint64_t h = FNV_INIT;
    for (uint64_t off = 0; off < size; off += sizeof chunk) {
        size_t len = size - off < sizeof chunk ? (size_t)(size - off) : sizeof chunk;
        TRY(lunsnap_read_as(va, host, lun, off, chunk, len));
        bytes_read += len;
        h = fnv1a(h, chunk, len);
    }
    return h;
}

/* The checksum the database's image of a volume must have. */
static uint64_t image_checksum(int vol, const image *img) {
    uint64_t h = FNV_INIT;
    for (uint64_t b = 0; b < VG[vol].size / BLOCK; b++) {
        fill(expect_blk, BLOCK, VG[vol].lun, img->v[vol][b], b * BLOCK);
        h = fnv1a(h, expect_blk, BLOCK);
    }
    return h;
}

/* ---- 2c / 7c: export and import of the volume group -------------------------------- */

typedef struct {
    lunsnap_lun_info info;
    uint8_t header[BLOCK];
} exported;

static void export_vg(exported *e) {
    for (int vol = 0; vol < NVOL; vol++) {
        e[vol].info = info(VG[vol].lun);
        TRY(lunsnap_read(va, VG[vol].lun, 0, e[vol].header, BLOCK));
    }
}

/* The backup host imports the copies: what it discovers must match the export. */
static void import_vg(const exported *e) {
    for (int vol = 0; vol < NVOL; vol++) {
        lunsnap_lun_info c = info(VG[vol].copy);
        ENSURE(c.kind == LUNSNAP_LUN_KIND_COPY && c.has_parent && c.parent == e[vol].info.lun && c.attached &&
                   c.online && c.size == e[vol].info.size,
               "copy %u does not match the export of LUN %u", VG[vol].copy, e[vol].info.lun);
        TRY(lunsnap_read_as(va, HOST_BACKUP, VG[vol].copy, 0, blk, BLOCK));
        ENSURE(memcmp(blk, e[vol].header, BLOCK) == 0, "copy %u: volume-group header differs from the export",
               VG[vol].copy);
    }
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("lunsnap backup_cycle (C): HP Business Copy VA's backup and restore processes\n");
    lunsnap_format_options fo;
    TRY(lunsnap_format_options_init(&fo, sizeof fo));
    fo.max_luns = MAX_LUNS;
    memcpy(fo.array_id, "VA7100-demo-0001", 16);

    /* ---------------------------------------------------------------- setup */
    printf("\nsetup: the parent LUNs exist and are in use (the guide's starting assumption)\n");
#if defined(LUNSNAP_FEATURE_STD)
    ENSURE(mkdtemp(dir) != NULL, "mkdtemp failed");
    made_dir = true;
    atexit(remove_image);
    snprintf(path, sizeof path, "%s/va7100.img", dir);
    TRY(lunsnap_format_file(path, DEV_BLOCK, DEV_BYTES / DEV_BLOCK, &fo, &va));
    printf("  setup format the virtual array, array-id VA7100-demo-0001, on %s (%" PRIu64
           " MiB sparse file) -> lunsnap_format_file\n",
           path, DEV_BYTES / MIB);
#else
    TRY(lunsnap_format_mem(DEV_BLOCK, DEV_BYTES / DEV_BLOCK, &fo, &va));
    printf("  setup format the virtual array, array-id VA7100-demo-0001, on a %" PRIu64
           " MiB memory device -> lunsnap_format_mem\n",
           DEV_BYTES / MIB);
#endif
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_create_lun(va, VG[vol].lun, VG[vol].size));
    }
    step("setup", "create vg_db's parent LUNs -> lunsnap_create_lun(1, 2 MiB), (2, 1 MiB), (3, 512 KiB)");
    TRY(lunsnap_add_host(va, HOST_DB, "db-server"));
    TRY(lunsnap_add_host(va, HOST_BACKUP, "backup-server"));
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_grant(va, VG[vol].lun, HOST_DB, LUNSNAP_ACCESS_READ_WRITE));
    }
    step("setup", "the database server uses them -> lunsnap_add_host(db-server), (backup-server), "
                  "lunsnap_grant(1..3, db-server, READ_WRITE); security still off");
    uint32_t n = load();
    TRY(lunsnap_flush(va));
    printf("  setup the database loads its tables -> lunsnap_write_as(db-server) of %u blocks, lunsnap_flush\n", n);
    pool("each LUN reserves its full size");

    /* ------------------------------------------------------- configuration */
    printf("\nconfiguration process (once): steps 1c 2c 4c 5c 6c 7c 8c\n");
    TRY(lunsnap_flush(va));
    step("1c.", "prepare the parents: quiesce the database, deactivate vg_db -> lunsnap_flush");
    exported exp[NVOL];
    export_vg(exp);
    step("2c.", "capture the configuration: export vg_db -> lunsnap_get_lun_info(1..3), read of each header");

    uint32_t parents[NVOL], copies[NVOL];
    for (int vol = 0; vol < NVOL; vol++) {
        parents[vol] = VG[vol].lun;
        copies[vol] = VG[vol].copy;
    }
    TRY(lunsnap_create_copies(va, parents, copies, NVOL, false));
    step("4c.", "define the copies detached, as one group (armcopy -p 1 -s 11 -a false, ...) -> "
                "lunsnap_create_copies({1, 2, 3}, {11, 12, 13}, false)");
    EXPECT_CODE(lunsnap_read(va, 11, 0, blk, BLOCK), LUNSNAP_RESULT_DETACHED);
    show_lun(11, "no data, no reservation; lunsnap_read -> LUNSNAP_RESULT_DETACHED");
    lunsnap_pool_info before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
    TRY(lunsnap_get_pool_info(va, &before));
    TRY(lunsnap_attach_many(va, copies, NVOL));
    image at_copy = db;
    step("4c.", "make the copy of the volume group at one point in time (armcopy -s 11 -a true, ...) -> "
                "lunsnap_attach_many({11, 12, 13})");
    for (int vol = 0; vol < NVOL; vol++) {
        ENSURE(info(VG[vol].copy).attached_generation == info(11).attached_generation,
               "copy %u was not made at the group's point in time", VG[vol].copy);
    }
    TRY(lunsnap_get_pool_info(va, &after));
    ENSURE(after.allocated_bytes == before.allocated_bytes, "attaching moved data");
    ENSURE(after.reserved_bytes == before.reserved_bytes + 3584 * KIB, "the copies did not reserve their parents' sizes");
    pool("no data moved; each copy reserves its parent's size");
    show_lun(11, "every extent it maps is shared with LUN 1");
    lunsnap_result r = lunsnap_create_copy(va, 1, 21, true);
    ENSURE(after.unreserved_bytes < VG[0].size, "the pool has room for a further copy of LUN 1");
    EXPECT_CODE(r, LUNSNAP_RESULT_NO_SPACE);
    detail("full-size reservation: a further attached copy of LUN 1 does not fit -> "
           "lunsnap_create_copy(1, 21, true) = LUNSNAP_RESULT_NO_SPACE; nothing changed");
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_grant(va, VG[vol].copy, HOST_BACKUP, LUNSNAP_ACCESS_READ));
    }
    TRY(lunsnap_set_security(va, true));
    step("5c.", "set permissions on the copies (armsecure) -> lunsnap_grant(11..13, backup-server, READ), "
                "lunsnap_set_security(true)");
    {
        uint32_t seen[8];
        size_t nseen = 0;
        TRY(lunsnap_visible_luns(va, HOST_BACKUP, seen, 8, &nseen));
        ENSURE(nseen == NVOL && seen[0] == 11 && seen[1] == 12 && seen[2] == 13,
               "the backup server discovers %zu LUNs, not just the copies", nseen);
        TRY(lunsnap_visible_luns(va, HOST_DB, seen, 8, &nseen));
        ENSURE(nseen == NVOL && seen[0] == 1 && seen[1] == 2 && seen[2] == 3,
               "the database server discovers %zu LUNs, not just the parents", nseen);
        EXPECT_CODE(lunsnap_read_as(va, HOST_BACKUP, 1, 0, blk, BLOCK), LUNSNAP_RESULT_NO_SUCH_LUN);
        EXPECT_CODE(lunsnap_write_as(va, HOST_BACKUP, 11, 0, blk, BLOCK), LUNSNAP_RESULT_READ_ONLY_ACCESS);
        EXPECT_CODE(lunsnap_read_as(va, HOST_DB, 11, 0, blk, BLOCK), LUNSNAP_RESULT_NO_SUCH_LUN);
    }
    detail("the backup server discovers only LUNs 11..13 and may not write them "
           "(LUNSNAP_RESULT_READ_ONLY_ACCESS); to it LUN 1 does not exist (LUNSNAP_RESULT_NO_SUCH_LUN); "
           "the database server sees only its parents");
    n = transactions(100);
    TRY(lunsnap_flush(va));
    printf("  %-5s release the parents: the database resumes -> 100 transactions, "
           "lunsnap_write_as(db-server) of %u blocks, lunsnap_flush\n",
           "6c.", n);
    verify_copies(&at_copy, "6c");
    verify_parents(&db, "6c");
    show_lun(11, "the copy's own space grows as the parent moves on");
    detail("verified: the copies still read the point-in-time image; the parents read the new data");
    import_vg(exp);
    step("7c.", "configure the copies: import vg_db as vg_db_bc -> lunsnap_get_lun_info(11..13), header reads: match");
    step("8c.", "update the copies, if needed -> not needed: copied from quiesced parents");

    /* ---------------------------------------------------------------- backup */
    printf("\nbackup process (on a schedule): steps 1c 3c 4c 6c 7c 9c\n");
    TRY(lunsnap_flush(va));
    step("1c.", "quiesce the database, deactivate vg_db -> lunsnap_flush");
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_set_online(va, VG[vol].copy, false));
    }
    EXPECT_CODE(lunsnap_read_as(va, HOST_BACKUP, 11, 0, blk, BLOCK), LUNSNAP_RESULT_OFFLINE);
    step("3c.", "prepare the copies: the backup host deactivates vg_db_bc -> lunsnap_set_online(11..13, false): "
                "I/O gives LUNSNAP_RESULT_OFFLINE");
    lunsnap_lun_info old = info(11);
    TRY(lunsnap_get_pool_info(va, &before));
    TRY(lunsnap_attach_many(va, copies, NVOL));
    image at_backup = db;
    uint32_t redo_at_backup = redo_head;
    step("4c.", "make the copy: refresh the attached copies at one point in time -> lunsnap_attach_many({11, 12, "
                "13}) (management works offline; the grants are kept)");
    lunsnap_lun_info fresh = info(11);
    TRY(lunsnap_get_pool_info(va, &after));
    ENSURE(fresh.exclusive_bytes == 0 && fresh.attached_generation > old.attached_generation,
           "the refreshed copy still holds space of its own");
    ENSURE(after.allocated_bytes == before.allocated_bytes && after.reclaim_queue > 0,
           "lunsnap_attach_many freed the old images at once, or queued nothing");
    uint64_t freed = idle_reclaim("lunsnap_attach_many (the old copies' own extents)");
    TRY(lunsnap_get_pool_info(va, &after));
    ENSURE(freed > 0 && after.allocated_bytes + freed == before.allocated_bytes, "refreshing the copies freed nothing");
    n = transactions(150);
    TRY(lunsnap_flush(va));
    printf("  %-5s release the parents: the database resumes -> 150 transactions, "
           "lunsnap_write_as(db-server) of %u blocks, lunsnap_flush\n",
           "6c.", n);
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_set_online(va, VG[vol].copy, true));
    }
    import_vg(exp);
    step("7c.", "import vg_db_bc on the backup host -> lunsnap_set_online(11..13, true), lunsnap_get_lun_info, "
                "lunsnap_read_as(backup-server) of each header: match");
    verify_copies(&at_backup, "backup 7c");
    detail("verified: the copies still read the database as it was at 1c");
    uint64_t catalog[NVOL];
    for (int vol = 0; vol < NVOL; vol++) {
        catalog[vol] = checksum(HOST_BACKUP, VG[vol].copy, VG[vol].size);
        uint64_t want = image_checksum(vol, &at_backup);
        ENSURE(catalog[vol] == want, "backup of LUN %u: checksum %016" PRIx64 ", the database at 1c gives %016" PRIx64,
               VG[vol].copy, catalog[vol], want);
    }
    step("9c.", "use the copy: back it up to \"tape\" -> lunsnap_read_as(backup-server, 11..13) whole, FNV-1a 64 "
                "of each");
    for (int vol = 0; vol < NVOL; vol++) {
        printf("        backup catalog: LUN %u (%-5s %4" PRIu64 " KiB) fnv1a64 %016" PRIx64 "\n", VG[vol].copy,
               VG[vol].name, VG[vol].size / KIB, catalog[vol]);
    }
    detail("verified: every checksum equals the database's image at 1c");

    /* --------------------------------------------------------------- restore */
    printf("\nrestore process (on demand): steps 1r 2r 3r 4r\n");
    memset(blk, 0xEE, BLOCK);
    for (uint64_t b = 100; b < 150; b++) {
        TRY(lunsnap_write(va, 1, b * BLOCK, blk, BLOCK));
    }
    TRY(lunsnap_discard(va, 2, 0, 256 * KIB));
    step("!!", "the data is damaged: a runaway job overwrites 50 blocks of LUN 1 and trims the first 256 KiB of "
               "LUN 2 -> lunsnap_write(1, ..), lunsnap_discard(2, 0, 256 KiB)");
    uint32_t bad1 = diff(1, 1, db.v[0], VG[0].size), bad2 = diff(2, 2, db.v[1], VG[1].size);
    ENSURE(bad1 == 50, "LUN 1: %u damaged blocks, 50 expected", bad1);
    ENSURE(bad2 == 64, "LUN 2: %u damaged blocks, 64 expected", bad2);
    printf("        damage found: LUN 1 has %u bad blocks, LUN 2 has %u (its header included)\n", bad1, bad2);
    for (int vol = 0; vol < NVOL; vol++) {
        ENSURE(checksum(HOST_BACKUP, VG[vol].copy, VG[vol].size) == catalog[vol],
               "copy %u no longer matches the catalog",
               VG[vol].copy);
    }
    step("1r.", "prepare the copies: they hold the backup -> lunsnap_read_as(backup-server, 11..13) whole: "
                "checksums match the catalog");
    TRY(lunsnap_flush(va));
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_set_online(va, VG[vol].lun, false));
    }
    EXPECT_CODE(lunsnap_write_as(va, HOST_DB, 1, 0, blk, BLOCK), LUNSNAP_RESULT_OFFLINE);
    step("2r.", "prepare the parents: stop the database, deactivate vg_db -> lunsnap_flush, "
                "lunsnap_set_online(1..3, false)");
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_restore(va, VG[vol].copy));
    }
    step("3r.", "copy to parent (armcopy -r 1) -> lunsnap_restore(11), (12), (13)");
    for (int vol = 0; vol < NVOL; vol++) {
        TRY(lunsnap_set_online(va, VG[vol].lun, true));
    }
    for (int vol = 0; vol < NVOL; vol++) {
        uint64_t now = checksum(HOST_DB, VG[vol].lun, VG[vol].size);
        ENSURE(now == catalog[vol], "restored LUN %u: checksum %016" PRIx64 ", the backup has %016" PRIx64,
               VG[vol].lun, now, catalog[vol]);
    }
    db = at_backup;
    redo_head = redo_at_backup;
    verify_parents(&db, "4r");
    for (int vol = 0; vol < NVOL; vol++) {
        lunsnap_lun_info c = info(VG[vol].copy);
        ENSURE(c.attached && c.exclusive_bytes == 0, "copy %u changed by the restore", VG[vol].copy);
    }
    step("4r.", "release the parents: the database restarts on the restored data -> lunsnap_set_online(1..3, "
                "true), lunsnap_read_as(db-server, 1..3)");
    detail("verified: each parent's checksum equals the catalog; every block is the database's at 1c");
    show_lun(1, "parent and copy share every extent again");

    /* ------------------------------------------------------------- power cut */
    printf("\ncrash safety: a power cut after the restore\n");
    n = transactions(50);
    TRY(lunsnap_flush(va));
    lunsnap_pool_info committed_pool = {.struct_size = sizeof committed_pool};
    TRY(lunsnap_get_pool_info(va, &committed_pool));
    image committed = db;
    uint32_t committed_redo = redo_head;
    uint32_t lost = transactions(20);
    printf("  %-5s the database runs 50 transactions (%u blocks) and flushes, then 20 more (%u blocks) never "
           "flushed\n",
           "app", n, lost);
    TRY(lunsnap_reopen(va));
    step("cut", "power cut before the next flush -> lunsnap_reopen (closes without committing, opens again)");
    lunsnap_pool_info p = {.struct_size = sizeof p};
    TRY(lunsnap_get_pool_info(va, &p));
    ENSURE(p.generation == committed_pool.generation, "reopened at generation %" PRIu64 ", the last commit is %" PRIu64,
           p.generation, committed_pool.generation);
    db = committed;
    redo_head = committed_redo;
    verify_parents(&db, "after the power cut");
    verify_copies(&at_backup, "after the power cut");
    size_t violations = 1;
    TRY(lunsnap_check(va, &violations));
    ENSURE(violations == 0, "check after the power cut: %zu violations", violations);
    printf("        reopened at generation %" PRIu64 ", the last commit: the flushed transactions are there, the "
           "unflushed ones are not; the copies still hold the backup; lunsnap_check: clean\n",
           p.generation);

    /* ----------------------------------------------------------- maintenance */
    printf("\nmaintenance process (by hand): step 10c\n");
    n = transactions(100);
    TRY(lunsnap_flush(va));
    printf("        (the database ran 100 more transactions, %u blocks: the copies have aged)\n", n);
    step("3c.", "prepare the copies to discard: the backup host deactivates vg_db_bc -> nothing in the array");
    EXPECT_CODE(lunsnap_delete(va, 1, false), LUNSNAP_RESULT_HAS_COPIES);
    step("10c.", "a parent with copies is not deleted by accident -> lunsnap_delete(1, false) = "
                 "LUNSNAP_RESULT_HAS_COPIES");
    lunsnap_lun_info aged = info(12);
    TRY(lunsnap_attach(va, 12));
    image at_refresh = db;
    lunsnap_lun_info now = info(12);
    ENSURE(aged.exclusive_bytes > 0 && now.exclusive_bytes == 0, "copy 12 had not aged, or still holds space");
    step("10c.", "option 2, attach/attach: discard copy 12 by making it again -> lunsnap_attach(12)");
    printf("        LUN 12: exclusive %" PRIu64 " -> %" PRIu64 " KiB: the consumption cycle starts over\n",
           aged.exclusive_bytes / KIB, now.exclusive_bytes / KIB);
    ENSURE(idle_reclaim("lunsnap_attach(12)") == aged.exclusive_bytes, "the refresh of copy 12 did not free its "
           "own %" PRIu64 " KiB", aged.exclusive_bytes / KIB);
    TRY(lunsnap_get_pool_info(va, &before));
    uint64_t own = info(11).exclusive_bytes;
    ENSURE(own > 0, "copy 11 had not aged");
    TRY(lunsnap_detach(va, 11));
    TRY(lunsnap_get_pool_info(va, &after));
    step("10c.", "option 3, attach/detach: discard copy 11, keep its number -> lunsnap_detach(11)");
    ENSURE(after.reserved_bytes + VG[0].size == before.reserved_bytes &&
               after.allocated_bytes == before.allocated_bytes,
           "detach did not release the copy's reservation at once, or freed its space before a reclaim");
    ENSURE(idle_reclaim("lunsnap_detach(11)") == own, "detach did not free the copy's own space");
    TRY(lunsnap_get_pool_info(va, &after));
    ENSURE(after.allocated_bytes + own == before.allocated_bytes, "detach did not release the copy's space");
    printf("        pool: reserved %" PRIu64 " -> %" PRIu64 " KiB, allocated %" PRIu64 " -> %" PRIu64
           " KiB (the copy's own %" PRIu64 " KiB freed)\n",
           before.reserved_bytes / KIB, after.reserved_bytes / KIB, before.allocated_bytes / KIB,
           after.allocated_bytes / KIB, own / KIB);
    EXPECT_CODE(lunsnap_read(va, 11, 0, blk, BLOCK), LUNSNAP_RESULT_DETACHED);
    detail("lunsnap_read(11, ..) = LUNSNAP_RESULT_DETACHED until lunsnap_attach(11)");
    TRY(lunsnap_get_pool_info(va, &before));
    TRY(lunsnap_delete(va, 13, false));
    TRY(lunsnap_get_pool_info(va, &after));
    lunsnap_lun_info gone = {.struct_size = sizeof gone};
    EXPECT_CODE(lunsnap_get_lun_info(va, 13, &gone), LUNSNAP_RESULT_NO_SUCH_LUN);
    step("10c.", "option 1, create/delete: discard copy 13 for good -> lunsnap_delete(13, false)");
    printf("        lunsnap_get_lun_info(13) = LUNSNAP_RESULT_NO_SUCH_LUN; pool: reserved %" PRIu64 " -> %" PRIu64
           " KiB\n",
           before.reserved_bytes / KIB, after.reserved_bytes / KIB);

    /* ------------------------------------------------------ close and reopen */
    printf("\nclose and reopen: everything survives\n");
#if defined(LUNSNAP_FEATURE_STD)
    TRY(lunsnap_close(va));
    va = NULL;
    TRY(lunsnap_open_file(path, DEV_BLOCK, NULL, &va));
    step("end", "lunsnap_close commits and frees; lunsnap_open_file -> the array as it was left:");
#else
    TRY(lunsnap_flush(va));
    TRY(lunsnap_reopen(va));
    step("end", "lunsnap_flush, lunsnap_reopen (a memory device does not outlive its handle) -> the array:");
#endif
    static const struct {
        uint32_t lun;
        lunsnap_lun_kind kind;
        uint8_t has_parent;
        uint32_t parent;
        uint8_t attached;
    } layout[] = {
        {1, LUNSNAP_LUN_KIND_LUN, 0, 0, 1},  {2, LUNSNAP_LUN_KIND_LUN, 0, 0, 1},   {3, LUNSNAP_LUN_KIND_LUN, 0, 0, 1},
        {11, LUNSNAP_LUN_KIND_COPY, 1, 1, 0}, {12, LUNSNAP_LUN_KIND_COPY, 1, 2, 1},
    };
    uint32_t nums[8];
    size_t count = 0;
    TRY(lunsnap_luns(va, nums, 8, &count));
    ENSURE(count == 5, "%zu LUNs after reopen, 5 expected", count);
    for (size_t i = 0; i < count; i++) {
        lunsnap_lun_info l = info(nums[i]);
        ENSURE(l.lun == layout[i].lun && l.kind == layout[i].kind && l.has_parent == layout[i].has_parent &&
                   (!l.has_parent || l.parent == layout[i].parent) && l.attached == layout[i].attached,
               "LUN #%zu after reopen is not as left", i);
        show_lun(nums[i], "");
    }
    verify_parents(&db, "after reopen");
    bool secure = false;
    TRY(lunsnap_security_enabled(va, &secure));
    size_t nseen = 0;
    TRY(lunsnap_visible_luns(va, HOST_BACKUP, nums, 8, &nseen));
    ENSURE(secure && nseen == 2 && nums[0] == 11 && nums[1] == 12,
           "after reopen: security %d, the backup server discovers %zu LUNs (want 11 and 12)", (int)secure, nseen);
    detail("security is still on; the backup server discovers copies 11 and 12 (the grant on 13 went with it)");
    idle_reclaim("lunsnap_delete(13), still in the free queue after the reopen,");
    uint32_t stale = diff(12, 2, at_refresh.v[1], VG[1].size);
    ENSURE(stale == 0, "copy 12: %u blocks differ from its refresh", stale);
    violations = 1;
    TRY(lunsnap_check(va, &violations));
    ENSURE(violations == 0, "check at the end: %zu violations", violations);
    detail("verified: the parents read the database, copy 12 its refresh of 10c; lunsnap_check: clean");
    pool("");
    TRY(lunsnap_close(va));
    printf("\nsummary: configuration, backup, restore, power cut and maintenance verified; %" PRIu64
           " KiB written by the database, %" PRIu64 " KiB read back to check; 0 mismatches\n",
           bytes_written / KIB, bytes_read / KIB);
    return 0;
}
