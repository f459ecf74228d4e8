/* Allocation before and after main: in a .preinit_array function (the first user code
 * the dynamic linker runs), in a constructor, in an atexit handler and in a destructor.
 * Under LD_PRELOAD all of it must come from unimem, with no initialisation order issue. */
#include "check.h"

struct node {
    struct node *next;
    char *text;
    size_t len;
};

static unsigned char *preinit_block;
static struct node *ctor_list;
static int ctor_count;

static void preinit(int argc, char **argv, char **envp) {
    (void)argc, (void)argv, (void)envp;
    preinit_block = malloc(1000);
    if (preinit_block) fill(preinit_block, 1000, 1);
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_entry)(int, char **, char **) = preinit;

__attribute__((constructor(101))) static void build_list(void) {
    shim_init();
    for (int i = 0; i < 1000; i++) {
        struct node *n = malloc(sizeof *n);
        if (!n) abort();
        n->len = (size_t)(i * 37) % 3000;
        n->text = malloc(n->len + 1);
        if (!n->text) abort();
        fill(n->text, n->len, (uint64_t)i);
        n->next = ctor_list;
        ctor_list = n;
        ctor_count++;
    }
    /* realloc and calloc before main as well */
    char *s = strdup("constructed before main");
    s = realloc(s, 1 << 16);
    if (!s || strcmp(s, "constructed before main") != 0) abort();
    free(s);
    free(calloc(100, 100));
}

static void *at_exit_block;

static void after_main(void) {
    /* Runs after main returns: allocate, check, free. */
    char *p = malloc(5000);
    CHECK(p, "malloc in an atexit handler");
    expect_managed(p);
    fill(p, 5000, 9);
    CHECK(verify(p, 5000, 9), "atexit block");
    free(p);
    free(at_exit_block);
}

__attribute__((destructor)) static void last(void) {
    void *p = calloc(10, 10);
    CHECK(p, "calloc in a destructor");
    expect_managed(p);
    free(p);
}

int main(void) {
    shim_init();
    CHECK(preinit_block, "malloc in .preinit_array returned NULL");
    expect_managed(preinit_block);
    CHECK(verify(preinit_block, 1000, 1), "preinit block content");
    free(preinit_block);

    CHECK(ctor_count == 1000, "constructor built %d nodes", ctor_count);
    int i = 999;
    for (struct node *n = ctor_list, *next; n; n = next, i--) {
        next = n->next;
        expect_managed(n);
        expect_managed(n->text);
        CHECK(n->len == (size_t)(i * 37) % 3000 && verify(n->text, n->len, (uint64_t)i), "node %d", i);
        free(n->text);
        free(n);
    }
    at_exit_block = malloc(123);
    CHECK(atexit(after_main) == 0, "atexit");
    pass("early");
    return 0;
}
