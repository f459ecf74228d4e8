/* The C API used the way a program that includes unimem.h will use it: linked with
 * -lunimem (no dlsym, no LD_PRELOAD). Linking the library also makes its malloc the
 * program's, since it comes before libc in the search order. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unimem.h"

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static int global;

int main(void) {
    int local;
    /* Queries accept any pointer. */
    CHECK(unimem_heap_of(NULL) == UNIMEM_HEAP_NONE);
    CHECK(unimem_is_managed(NULL) == 0);
    CHECK(unimem_heap_of(&local) == UNIMEM_HEAP_NONE && unimem_is_managed(&local) == 0);
    CHECK(unimem_heap_of(&global) == UNIMEM_HEAP_NONE);
    CHECK(unimem_heap_of((void *)UINTPTR_MAX) == UNIMEM_HEAP_NONE);

    char *m = malloc(100);
    CHECK(unimem_heap_of(m) == UNIMEM_HEAP_MANAGED && unimem_is_managed(m) == 1);
    CHECK(unimem_is_internal() == 0);
    unimem_internal_enter();
    CHECK(unimem_is_internal() == 1);
    char *i = malloc(100);
    CHECK(unimem_heap_of(i) == UNIMEM_HEAP_INTERNAL && unimem_is_managed(i) == 0);
    unimem_internal_exit();
    CHECK(unimem_is_internal() == 0);
    /* A zero-length range is a successful no-op for any pointer (the runtime need not
     * start); the location and the advice are still checked. */
    const void *ptrs[] = {NULL, &local, m, (void *)UINTPTR_MAX};
    for (int k = 0; k < 4; k++) {
        CHECK(unimem_prefetch(ptrs[k], 0, UNIMEM_HOST) == 0);
        CHECK(unimem_prefetch(ptrs[k], 0, UNIMEM_DEVICE) == 0);
        CHECK(unimem_advise(ptrs[k], 0, UNIMEM_ADVISE_READ_MOSTLY) == 0);
        CHECK(unimem_advise(ptrs[k], 0, UNIMEM_ADVISE_CLEAR) == 0);
        CHECK(unimem_discard((void *)ptrs[k], 0) == 0);
        CHECK(unimem_prefetch(ptrs[k], 0, 2) == -1);
        CHECK(strstr(unimem_last_error(), "location 2"));
        CHECK(unimem_advise(ptrs[k], 0, -1) == -1);
        CHECK(strstr(unimem_last_error(), "advice -1"));
    }
    free(m);
    free(i);
    printf("PASS capi\n");
    return 0;
}
