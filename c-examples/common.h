/*
 * common.h: small helpers shared by the examples (not by the test suite, which
 * counts failures instead of stopping at the first).
 */

#ifndef COMMON_H
#define COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunsnap.h"

/* The full message of this thread's last failed lunsnap call (a static buffer). */
static inline const char *last_error(void) {
    static char msg[512];
    size_t len = 0;
    if (lunsnap_last_error_message(NULL, msg, sizeof msg, &len) != LUNSNAP_RESULT_OK) {
        msg[0] = '\0';
    }
    return msg;
}

/* Runs a lunsnap call; on failure prints where, the call, the result code and the
 * call's full message, and exits with status 1. */
#define TRY(call)                                                                      \
    do {                                                                               \
        lunsnap_result try_r_ = (call);                                                \
        if (try_r_ != LUNSNAP_RESULT_OK) {                                             \
            fprintf(stderr, "%s:%d: %s failed: %s (code %u)\n", __FILE__, __LINE__,    \
                    #call, last_error(), (unsigned)try_r_);                            \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Runs a lunsnap call that must fail with `want`; exits with status 1 otherwise. */
#define EXPECT_CODE(call, want)                                                        \
    do {                                                                               \
        lunsnap_result exp_r_ = (call);                                                \
        if (exp_r_ != (lunsnap_result)(want)) {                                        \
            fprintf(stderr, "%s:%d: %s gave %s (code %u), expected %s (code %u)\n",    \
                    __FILE__, __LINE__, #call, lunsnap_strerror(exp_r_),               \
                    (unsigned)exp_r_, lunsnap_strerror(want), (unsigned)(want));       \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

/* Exits with status 1 and a message unless `cond` holds. */
#define ENSURE(cond, ...)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

#define KIB ((uint64_t)1024)
#define MIB (1024 * KIB)
#define SECTOR 512u

/* Deterministic content: byte i of sector `sector` of version `version` of the
 * data of LUN `lun` (version 0 is reserved for "never written": all zeros). Each
 * sector starts with a 16-byte header (lun, version, sector) so a mismatch can be
 * explained. */
static inline void fill_sector(uint8_t *s, uint32_t lun, uint32_t version, uint64_t sector) {
    if (version == 0) {
        memset(s, 0, SECTOR);
        return;
    }
    uint32_t hdr[4] = {0x4c554e53u /* "LUNS" */, lun, version, (uint32_t)sector};
    memcpy(s, hdr, sizeof hdr);
    uint64_t x = ((uint64_t)lun << 48) ^ ((uint64_t)version << 32) ^ sector ^ 0x9e3779b97f4a7c15ull;
    for (size_t i = sizeof hdr; i < SECTOR; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s[i] = (uint8_t)x;
    }
}

/* Fills `len` bytes (a multiple of 512) for byte offset `off` of `lun`, version `v`. */
static inline void fill(uint8_t *buf, size_t len, uint32_t lun, uint32_t v, uint64_t off) {
    for (size_t d = 0; d < len; d += SECTOR) {
        fill_sector(buf + d, lun, v, (off + d) / SECTOR);
    }
}

/* The version a sector holds, if it is exactly (lun, some version, sector); -1 if
 * it is not the pattern of any version of that LUN at that offset. */
static inline int64_t sector_version(const uint8_t *s, uint32_t lun, uint64_t sector) {
    static const uint8_t zero[SECTOR];
    if (memcmp(s, zero, SECTOR) == 0) {
        return 0;
    }
    uint32_t hdr[4];
    memcpy(hdr, s, sizeof hdr);
    if (hdr[0] != 0x4c554e53u || hdr[1] != lun || hdr[3] != (uint32_t)sector || hdr[2] == 0) {
        return -1;
    }
    uint8_t want[SECTOR];
    fill_sector(want, lun, hdr[2], sector);
    return memcmp(s, want, SECTOR) == 0 ? (int64_t)hdr[2] : -1;
}

/* FNV-1a 64 over `len` bytes, continuing from `h` (start with FNV_INIT). */
#define FNV_INIT 0xcbf29ce484222325ull
static inline uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t len) {
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

#endif /* COMMON_H */
