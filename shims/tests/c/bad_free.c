/* One misuse of the heap per run, chosen by argv[1]. The program prints the address it is
 * about to misuse ("addr 0x...") on stdout, then misuses it; under libunimem.so it must
 * die of SIGABRT with one line on stderr naming that address (checked by bad_free.rs).
 * Nothing else is written to stderr. */
#include "check.h"

#include <malloc.h>

static int global_int;

static void announce(const void *p) {
    printf("addr %p\n", p);
    fflush(stdout);
}

int main(int argc, char **argv) {
    shim_init();
    CHECK(argc == 2, "usage: bad_free CASE");
    const char *c = argv[1];
    int local = 0;
    void *volatile stack = &local; /* volatile: hide the misuse from the compiler */
    void *volatile global = &global_int;
    char *small = malloc(48), *large = malloc(1 << 20);
    expect_managed(small);
    expect_managed(large);

    if (!strcmp(c, "double_free_small")) {
        announce(small);
        free(small);
        free(small);
    } else if (!strcmp(c, "double_free_large")) {
        announce(large);
        free(large);
        free(large);
    } else if (!strcmp(c, "free_stack")) {
        announce(stack);
        free(stack);
    } else if (!strcmp(c, "free_global")) {
        announce(global);
        free(global);
    } else if (!strcmp(c, "free_interior_small")) {
        announce(small + 16);
        free(small + 16);
    } else if (!strcmp(c, "free_interior_large")) {
        announce(large + 4096);
        free(large + 4096);
    } else if (!strcmp(c, "realloc_stack")) {
        announce(stack);
        free(realloc(stack, 100));
    } else if (!strcmp(c, "realloc_freed")) {
        announce(small);
        free(small);
        free(realloc(small, 100));
    } else if (!strcmp(c, "usable_size_global")) {
        announce(global);
        malloc_usable_size(global);
    } else {
        CHECK(0, "unknown case %s", c);
    }
    printf("survived %s\n", c);
    return 0;
}
