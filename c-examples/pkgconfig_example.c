/*
 * pkgconfig_example.c: a program built the way a user of the installed library
 * builds one, with nothing but pkg-config:
 *
 *   cc -o example pkgconfig_example.c $(pkg-config --cflags --libs lunsnap)
 *   cc -o example pkgconfig_example.c $(pkg-config --cflags lunsnap) \
 *       $(pkg-config --static --libs lunsnap)      (static: the native libraries too)
 *
 * `make pkgconfig-example` (part of `make test`) installs lunsnap into a temporary
 * prefix with `make install PREFIX=...`, copies this file there, builds it both ways
 * against the installed tree only, and runs it. It formats an in-memory array, makes
 * a LUN and a business copy, checks that the copy stays frozen, and shows the full
 * message of a refused call. Exit status 1 on failure.
 */

#include <lunsnap.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define STR_(x) #x
#define STR(x) STR_(x)

static int fail(const char *what, lunsnap_result r) {
    char msg[256];
    size_t len = 0;
    lunsnap_last_error_message(NULL, msg, sizeof msg, &len);
    fprintf(stderr, "pkgconfig_example: %s: %s (code %u)\n", what, msg, (unsigned)r);
    return 1;
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        lunsnap_result r_ = (call);                                                                \
        if (r_ != LUNSNAP_RESULT_OK) {                                                             \
            return fail(#call, r_);                                                                \
        }                                                                                          \
    } while (0)

int main(void) {
    const char *want = STR(LUNSNAP_VERSION_MAJOR) "." STR(LUNSNAP_VERSION_MINOR) "." STR(LUNSNAP_VERSION_PATCH);
    if (strcmp(lunsnap_version(), want) != 0) {
        fprintf(stderr, "pkgconfig_example: the library is %s, the header %s\n", lunsnap_version(), want);
        return 1;
    }
    lunsnap_format_options o;
    TRY(lunsnap_format_options_init(&o, sizeof o));
    o.max_luns = 16;
    uint64_t min = 0;
    TRY(lunsnap_min_device_bytes(&o, &min));
    lunsnap_array *a = NULL;
    TRY(lunsnap_format_mem(4096, 16384, &o, &a)); /* 64 MiB, sparse */
    TRY(lunsnap_create_lun(a, 1, 1 << 20));
    static uint8_t one[4096], two[4096], got[4096];
    memset(one, 1, sizeof one);
    memset(two, 2, sizeof two);
    TRY(lunsnap_write(a, 1, 0, one, sizeof one));
    TRY(lunsnap_create_copy(a, 1, 11, true));
    TRY(lunsnap_write(a, 1, 0, two, sizeof two));
    TRY(lunsnap_read(a, 11, 0, got, sizeof got));
    if (memcmp(got, one, sizeof got) != 0) {
        fprintf(stderr, "pkgconfig_example: the copy did not stay frozen\n");
        return 1;
    }
    lunsnap_result r = lunsnap_create_lun(a, 2, 1ull << 40);
    char msg[256];
    size_t len = 0;
    TRY(lunsnap_last_error_message(a, msg, sizeof msg, &len));
    if (r == LUNSNAP_RESULT_OK || len == 0) {
        fprintf(stderr, "pkgconfig_example: a 1 TiB LUN on 64 MiB was not refused with a message\n");
        return 1;
    }
    lunsnap_pool_info p;
    p.struct_size = sizeof p;
    TRY(lunsnap_get_pool_info(a, &p));
    TRY(lunsnap_close(a));
    printf("pkgconfig_example: liblunsnap %s: LUN 1 and its frozen copy 11 on a 64 MiB array (the least for "
           "these options: %llu bytes; %u LUNs); a 1 TiB LUN refused: \"%s\"\n",
           lunsnap_version(), (unsigned long long)min, p.luns, msg);
    return 0;
}
