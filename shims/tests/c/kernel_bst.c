/* Sample: a binary search tree built with plain malloc, looked up for many keys by a WGSL
 * kernel through the C API, checked against the CPU; the CPU inserts keys and changes
 * values, and the kernel runs again. Linked with -lunimem. Without a Vulkan device it prints
 * "SKIP" and exits 0, unless UNIMEM_REQUIRE_DEVICE=1. */
#include "check.h"

struct tree {
    uint32_t key;       /* byte 0 */
    uint32_t value;     /* byte 4 */
    struct tree *left;  /* byte 8 */
    struct tree *right; /* byte 16 */
};

struct args {
    uint32_t *keys;    /* words 0-1 */
    uint32_t *out;     /* words 2-3 */
    struct tree *root; /* words 4-5 */
};

static const char *LOOKUP =
    "fn lookup(id: u32) {\n"
    "    let key = unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu);\n"
    "    var p = unimem_arg_ptr(4u);\n"
    "    var value = 0xffffffffu;\n"
    "    while (p != 0lu) {\n"
    "        let k = unimem_load_u32(p);\n"
    "        if (k == key) { value = unimem_load_u32(p + 4lu); break; }\n"
    "        p = unimem_load_ptr(p + select(16lu, 8lu, key < k));\n"
    "    }\n"
    "    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, value);\n"
    "}\n";

enum { NODES = 200000, LOOKUPS = 50000 };

static uint32_t key_of(uint32_t i) { return (i * 2654435761u) ^ 0x5bd1e995u; }

static void insert(struct tree **slot, uint32_t key, uint32_t value) {
    while (*slot) {
        if ((*slot)->key == key) {
            (*slot)->value = value;
            return;
        }
        slot = key < (*slot)->key ? &(*slot)->left : &(*slot)->right;
    }
    struct tree *n = malloc(sizeof *n);
    n->key = key;
    n->value = value;
    n->left = n->right = NULL;
    *slot = n;
}

static uint32_t find(const struct tree *t, uint32_t key) {
    while (t) {
        if (t->key == key) return t->value;
        t = key < t->key ? t->left : t->right;
    }
    return UINT32_MAX;
}

static void check(const struct tree *root, const uint32_t *keys, const uint32_t *out) {
    for (int i = 0; i < LOOKUPS; i++)
        CHECK(out[i] == find(root, keys[i]), "lookup %d of key %u: kernel %u, CPU %u", i, keys[i],
              out[i], find(root, keys[i]));
}

static void free_tree(struct tree *t) {
    while (t) { /* iterative: rotate the left subtree up */
        if (t->left) {
            struct tree *l = t->left;
            t->left = l->right;
            l->right = t;
            t = l;
        } else {
            struct tree *r = t->right;
            free(t);
            t = r;
        }
    }
}

int main(void) {
    unimem_kernel *k = unimem_kernel_create(LOOKUP, "lookup");
    if (!k) kernel_create_failed("kernel_bst");
    struct tree *root = NULL;
    for (uint32_t i = 0; i < NODES; i++) insert(&root, key_of(i), i);
    uint32_t *keys = malloc(LOOKUPS * sizeof *keys);
    for (uint32_t j = 0; j < LOOKUPS; j++) keys[j] = j % 8 == 7 ? key_of(NODES + j) : key_of(j * 7919u % NODES);
    uint32_t *out = calloc(LOOKUPS, sizeof *out);
    struct args a = {keys, out, root};
    CHECK(unimem_launch(k, LOOKUPS, &a, sizeof a) == 0, "%s", unimem_last_error());
    unimem_stats first;
    CHECK(unimem_get_stats(&first) == 0, "%s", unimem_last_error());
    check(root, keys, out);
    /* The CPU changes values and inserts keys that were absent. */
    for (uint32_t i = 0; i < NODES; i += 9973) insert(&root, key_of(i), 42);
    for (uint32_t j = 7; j < LOOKUPS; j += 8 * 101) insert(&root, key_of(NODES + j), 4242);
    CHECK(unimem_launch(k, LOOKUPS, &a, sizeof a) == 0, "%s", unimem_last_error());
    check(root, keys, out);
    unimem_stats s;
    CHECK(unimem_get_stats(&s) == 0, "%s", unimem_last_error());
    /* Migrating, the tree moves before the first dispatch (the launch finds it from the root
     * argument: UNIMEM_DISCOVER) or by device faults (UNIMEM_DISCOVER=off); in place every live
     * block is mapped before the dispatch (mapping copies nothing), so there are no faults.
     * (Counted over the first launch: nodes the CPU inserted later may fault in new blocks.) */
    int in_place = s.mapped_in_place > 0;
    const char *discover = getenv("UNIMEM_DISCOVER");
    int walked = !discover || strcmp(discover, "off") != 0;
    uint64_t tree_bytes = (uint64_t)NODES * sizeof(struct tree);
    CHECK(s.launches >= 2, "launches %lu", (unsigned long)s.launches);
    CHECK(in_place ? s.device_faults == 0
                   : first.bytes_to_device >= tree_bytes && (first.device_faults == 0) == walked,
          "first launch: device faults %lu, %lu bytes to device (tree: %lu); mapped in place %lu; UNIMEM_DISCOVER=%s",
          (unsigned long)first.device_faults, (unsigned long)first.bytes_to_device,
          (unsigned long)tree_bytes, (unsigned long)s.mapped_in_place, discover ? discover : "(unset)");
    unimem_kernel_destroy(k);
    free_tree(root);
    free(keys);
    free(out);
    printf("PASS kernel_bst (%lu device faults, %lu replay rounds)\n", (unsigned long)s.device_faults,
           (unsigned long)s.replay_rounds);
    return 0;
}
