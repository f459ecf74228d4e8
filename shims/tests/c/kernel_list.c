/* Sample: a linked list built with plain malloc, summed per segment by a WGSL kernel through
 * the C API, checked against the CPU; then the CPU mutates a few nodes and launches again;
 * then a bad pointer gives a clear error and the runtime stays usable, and with object checks
 * so does a freed node among live ones. Linked with -lunimem.
 * Without a Vulkan device it prints "SKIP" and exits 0, unless UNIMEM_REQUIRE_DEVICE=1. */
#include "check.h"

struct node {
    uint32_t value;
    struct node *next;
};

/* The launch arguments, as the kernel reads them (word index = byte offset / 4). */
struct args {
    struct node **starts; /* words 0-1 */
    uint32_t *out;        /* words 2-3 */
    uint32_t seg;         /* word 4 */
};

static const char *SUM =
    "fn sum(id: u32) {\n"
    "    let starts = unimem_arg_ptr(0u);\n"
    "    let out = unimem_arg_ptr(2u);\n"
    "    let seg = unimem_arg_u32(4u);\n"
    "    var p = unimem_load_ptr(starts + u64(id) * 8lu);\n"
    "    var s = 0u;\n"
    "    for (var k = 0u; k < seg && p != 0lu; k++) {\n"
    "        s += unimem_load_u32(p);\n"
    "        p = unimem_load_ptr(p + 8lu);\n"
    "    }\n"
    "    unimem_store_u32(out + u64(id) * 4lu, s);\n"
    "}\n";

enum { LEN = 200000, SEG = 100, N = LEN / SEG };

static void check_sums(struct node **starts, const uint32_t *out) {
    for (int i = 0; i < N; i++) {
        uint32_t s = 0;
        struct node *p = starts[i];
        for (int k = 0; k < SEG && p; k++, p = p->next) s += p->value;
        CHECK(out[i] == s, "segment %d: kernel %u, CPU %u", i, out[i], s);
    }
}

int main(void) {
    unimem_kernel *k = unimem_kernel_create(SUM, "sum");
    if (!k) kernel_create_failed("kernel_list");
    struct node **nodes = malloc(LEN * sizeof *nodes);
    struct node *next = NULL;
    for (int i = LEN - 1; i >= 0; i--) {
        struct node *n = malloc(sizeof *n);
        n->value = (uint32_t)(i % 977);
        n->next = next;
        nodes[i] = next = n;
    }
    struct node **starts = malloc(N * sizeof *starts);
    for (int i = 0; i < N; i++) starts[i] = nodes[i * SEG];
    uint32_t *out = calloc(N, sizeof *out);
    struct args a = {starts, out, SEG};

    unimem_stats s0, s1, s2;
    CHECK(unimem_get_stats(&s0) == 0, "%s", unimem_last_error());
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    check_sums(starts, out);
    CHECK(unimem_get_stats(&s1) == 0, "%s", unimem_last_error());
    CHECK(s1.launches == s0.launches + 1, "launches %lu", (unsigned long)s1.launches);

    /* The CPU changes a few nodes; the next launch sees them. */
    for (int i = 0; i < LEN; i += 20011) nodes[i]->value += 1000;
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    check_sums(starts, out);
    CHECK(unimem_get_stats(&s2) == 0, "%s", unimem_last_error());
    CHECK(s2.launches == s1.launches + 1, "launches");
    int in_place = s1.mapped_in_place > s0.mapped_in_place;
    if (in_place) {
        /* In place (UNIMEM_IN_PLACE): the kernel read the host pages; nothing was copied,
         * and the change needed nothing new mapped. */
        CHECK(s2.bytes_to_device == s0.bytes_to_device, "in place, %lu bytes moved",
              (unsigned long)(s2.bytes_to_device - s0.bytes_to_device));
        CHECK(s2.mapped_in_place == s1.mapped_in_place, "the change mapped %lu blocks",
              (unsigned long)(s2.mapped_in_place - s1.mapped_in_place));
    } else {
        CHECK(s2.bytes_to_device - s1.bytes_to_device < s1.bytes_to_device - s0.bytes_to_device,
              "the second launch moved less (%lu vs %lu bytes)",
              (unsigned long)(s2.bytes_to_device - s1.bytes_to_device),
              (unsigned long)(s1.bytes_to_device - s0.bytes_to_device));
        CHECK(s1.bytes_to_device > s0.bytes_to_device, "migrating, the first launch moved nothing");
    }

    /* A pointer the allocator never handed out: a clear error, and the runtime stays usable. */
    struct node on_stack = {1, NULL};
    starts[0] = &on_stack;
    CHECK(unimem_launch(k, N, &a, sizeof a) == -1, "a stack pointer must fail");
    const char *e = unimem_last_error();
    CHECK(e && strstr(e, "kernel `sum`") && strstr(e, "invocation 0") &&
              strstr(e, "outside unimem's managed heap"),
          "%s", e ? e : "(null)");
    /* A static sentinel node (a common C idiom): the program's static data is named. */
    static struct node sentinel = {0, NULL};
    starts[0] = &sentinel;
    CHECK(unimem_launch(k, N, &a, sizeof a) == -1, "a global must fail");
    e = unimem_last_error();
    CHECK(e && strstr(e, "in the static data of /") && strstr(e, "(a global or static variable)"), "%s", e ? e : "(null)");
    starts[0] = nodes[0];
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    unimem_stats r0, r1;
    CHECK(unimem_get_stats(&r0) == 0, "%s", unimem_last_error());
    check_sums(starts, out);
    CHECK(unimem_get_stats(&r1) == 0, "%s", unimem_last_error());
    if (in_place)
        CHECK(r1.cpu_faults == r0.cpu_faults, "in place the kernel's output is in host RAM: %lu CPU faults",
              (unsigned long)(r1.cpu_faults - r0.cpu_faults));
    else
        CHECK(r1.cpu_faults > r0.cpu_faults, "without advice the kernel's output is on the device");

    /* Remembered advice: after every launch, out comes home with it. */
    CHECK(unimem_advise(out, N * sizeof *out, UNIMEM_ADVISE_PREFERRED_HOST) == 0, "%s", unimem_last_error());
    for (int launch = 0; launch < 2; launch++) {
        CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
        CHECK(unimem_get_stats(&r0) == 0, "%s", unimem_last_error());
        check_sums(starts, out);
        CHECK(unimem_get_stats(&r1) == 0, "%s", unimem_last_error());
        CHECK(r1.cpu_faults == r0.cpu_faults, "launch %d: %lu CPU faults reading advised output", launch,
              (unsigned long)(r1.cpu_faults - r0.cpu_faults));
    }
    CHECK(unimem_advise(out, 4, 99) == -1, "bad advice");

    /* The step limit: an invocation makes 2 * SEG + 2 accessor calls (its start, two per node,
     * the store). */
    CHECK(unimem_kernel_set_max_steps(k, SEG) == 0, "%s", unimem_last_error());
    CHECK(unimem_launch(k, N, &a, sizeof a) == -1, "a limit below the walk must fail");
    e = unimem_last_error();
    CHECK(e && strstr(e, "kernel `sum`") && strstr(e, "step limit") && strstr(e, "(the step limit is 100 per invocation and round)"), "%s", e ? e : "(null)");
    CHECK(unimem_kernel_set_max_steps(k, 2 * SEG + 2) == 0, "%s", unimem_last_error());
    CHECK(unimem_launch(k, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    check_sums(starts, out);
    CHECK(unimem_kernel_set_max_steps(NULL, 5) == -1, "a NULL kernel");
    e = unimem_last_error();
    CHECK(e && strstr(e, "unimem_kernel_set_max_steps: kernel is NULL"), "%s", e ? e : "(null)");
    /* A node freed while the list still points to it (use after free). Its neighbours are
     * live, so only object checks (UNIMEM_CHECK_OBJECTS=on when a kernel is created) catch
     * it: the launch fails, naming the address. */
    setenv("UNIMEM_CHECK_OBJECTS", "on", 1);
    unimem_kernel *checked = unimem_kernel_create(SUM, "sum");
    unsetenv("UNIMEM_CHECK_OBJECTS");
    CHECK(checked, "%s", unimem_last_error());
    CHECK(unimem_launch(checked, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    check_sums(starts, out);
    struct node *victim = nodes[5];
    char want[64];
    snprintf(want, sizeof want, "(address %p, in the managed heap but in no live allocation", (void *)victim);
    free(victim);
    nodes[5] = NULL;
    CHECK(unimem_launch(checked, N, &a, sizeof a) == -1, "with object checks a freed node must fail");
    e = unimem_last_error();
    CHECK(e && strstr(e, "kernel `sum`: invocation 0 dereferenced a pointer into memory that holds no live allocation") &&
              strstr(e, want) && strstr(e, "at line 8 of its source (`unimem_load_u32(p)`)"),
          "%s", e ? e : "(null)");
    /* (Without them the kernel reads the freed node's memory as it is: here the slot was
     * soon reused, by the error message's string among others.) */
    nodes[4]->next = nodes[6];
    CHECK(unimem_launch(checked, N, &a, sizeof a) == 0, "%s", unimem_last_error());
    check_sums(starts, out);
    unimem_kernel_destroy(checked);
    unimem_kernel_destroy(k);
    unimem_kernel_destroy(NULL);
    for (int i = 0; i < LEN; i++) free(nodes[i]);
    free(nodes);
    free(starts);
    free(out);
    printf("PASS kernel_list (%lu device faults, %lu replay rounds)\n",
           (unsigned long)(s2.device_faults - s0.device_faults),
           (unsigned long)(s2.replay_rounds - s0.replay_rounds));
    return 0;
}
