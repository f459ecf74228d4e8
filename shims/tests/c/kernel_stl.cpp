/* Sample: C++ standard containers, unchanged, walked by WGSL kernels. A std::map (libstdc++'s
 * red-black tree) is looked up for many keys, and a std::vector of std::list is summed list
 * by list; both were built with plain operator new (malloc, under LD_PRELOAD). The CPU then
 * erases and inserts map entries (rotations move nodes around) and splices, erases and
 * pushes list nodes, and the kernels run again on the same containers. Every result is
 * checked against the CPU. Linked with -lunimem. Without a Vulkan device it prints "SKIP" and
 * exits 0, unless UNIMEM_REQUIRE_DEVICE=1.
 *
 * The kernels take the node layout as arguments, measured here on the library's own types
 * (libstdc++: a tree node is colour, parent, left, right, then the value; a list node is
 * next, prev, then the value; a std::list object holds its sentinel node). */
#include "check.h"

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <vector>

using Map = std::map<uint32_t, uint32_t>;
using List = std::list<uint64_t>;

/* Looks up key i of the keys array: the value, or 0xffffffff when absent. */
static const char *LOOKUP =
    "fn lookup(id: u32) {\n"
    "    let key = unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu);\n"
    "    var p = unimem_arg_ptr(4u);\n"
    "    let left = u64(unimem_arg_u32(6u));\n"
    "    let right = u64(unimem_arg_u32(7u));\n"
    "    let at = u64(unimem_arg_u32(8u));\n"
    "    var value = 0xffffffffu;\n"
    "    while (p != 0lu) {\n"
    "        let k = unimem_load_u32(p + at);\n"
    "        if (k == key) { value = unimem_load_u32(p + at + 4lu); break; }\n"
    "        p = unimem_load_ptr(p + select(right, left, key < k));\n"
    "    }\n"
    "    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, value);\n"
    "}\n";

struct lookup_args {
    const uint32_t *keys;   /* words 0-1 */
    uint32_t *out;          /* words 2-3 */
    const void *root;       /* words 4-5 */
    uint32_t left, right;   /* words 6, 7: offsets of the child pointers in a node */
    uint32_t value;         /* word 8: offset of the key (the value follows it) */
    uint32_t pad;
};

/* Sums list i of the vector: from the sentinel's next node round to the sentinel. */
static const char *SUM =
    "fn sum(id: u32) {\n"
    "    let sentinel = unimem_arg_ptr(0u) + u64(id) * u64(unimem_arg_u32(4u));\n"
    "    let at = u64(unimem_arg_u32(5u));\n"
    "    var total = 0lu;\n"
    "    var p = unimem_load_ptr(sentinel);\n"
    "    while (p != sentinel && unimem_running()) {\n"
    "        total += unimem_load_u64(p + at);\n"
    "        p = unimem_load_ptr(p);\n"
    "    }\n"
    "    unimem_store_u64(unimem_arg_ptr(2u) + u64(id) * 8lu, total);\n"
    "}\n";

struct sum_args {
    const List *lists; /* words 0-1 */
    uint64_t *out;     /* words 2-3 */
    uint32_t stride;   /* word 4: sizeof(std::list) */
    uint32_t value;    /* word 5: offset of the value in a list node */
};

enum { ENTRIES = 100000, LOOKUPS = 40000, LISTS = 2000 };

static uint32_t key_of(uint32_t i) { return (i * 2654435761u) ^ 0x5bd1e995u; }

static void check_lookups(const Map &m, const std::vector<uint32_t> &keys, const std::vector<uint32_t> &out) {
    for (size_t i = 0; i < keys.size(); i++) {
        auto it = m.find(keys[i]);
        uint32_t want = it == m.end() ? UINT32_MAX : it->second;
        CHECK(out[i] == want, "lookup %zu of key %u: kernel %u, CPU %u", i, keys[i], out[i], want);
    }
}

static void check_sums(const std::vector<List> &lists, const std::vector<uint64_t> &out) {
    for (size_t i = 0; i < lists.size(); i++) {
        uint64_t want = 0;
        for (uint64_t v : lists[i]) want += v;
        CHECK(out[i] == want, "list %zu (%zu nodes): kernel %lu, CPU %lu", i, lists[i].size(),
              (unsigned long)out[i], (unsigned long)want);
    }
}

/* The map's root node (the header's parent), or null. */
static const void *root_of(const Map &m) { return m.end()._M_node->_M_parent; }

int main() {
    shim_init();
    unimem_kernel *lookup = unimem_kernel_create(LOOKUP, "lookup");
    if (!lookup) kernel_create_failed("kernel_stl");
    unimem_kernel *sum = unimem_kernel_create(SUM, "sum");
    CHECK(sum, "%s", unimem_last_error());

    /* ---- std::map ---- */
    Map m;
    for (uint32_t i = 0; i < ENTRIES; i++) m[key_of(i)] = i;
    Map::iterator first = m.begin();
    expect_managed(first._M_node);
    std::vector<uint32_t> keys(LOOKUPS), out(LOOKUPS, 0);
    expect_managed(keys.data());
    for (uint32_t j = 0; j < LOOKUPS; j++) keys[j] = j % 8 == 7 ? key_of(ENTRIES + j) : key_of(j * 7919u % ENTRIES);
    using Base = std::_Rb_tree_node_base;
    using Node = std::_Rb_tree_node<Map::value_type>;
    const Node *node = static_cast<const Node *>(first._M_node);
    lookup_args la = {keys.data(), out.data(), root_of(m), offsetof(Base, _M_left), offsetof(Base, _M_right),
                      (uint32_t)((const char *)node->_M_valptr() - (const char *)node), 0};
    CHECK(unimem_launch(lookup, LOOKUPS, &la, sizeof la) == 0, "%s", unimem_last_error());
    check_lookups(m, keys, out);
    /* Erase and insert: rebalancing rotates nodes and may change the root. */
    for (uint32_t i = 0; i < ENTRIES; i += 7) m.erase(key_of(i));
    for (uint32_t j = 7; j < LOOKUPS; j += 8 * 13) m[key_of(ENTRIES + j)] = 4242 + j;
    for (uint32_t i = 1; i < ENTRIES; i += 997) m[key_of(i)] = 42;
    la.root = root_of(m);
    std::fill(out.begin(), out.end(), 0);
    CHECK(unimem_launch(lookup, LOOKUPS, &la, sizeof la) == 0, "%s", unimem_last_error());
    check_lookups(m, keys, out);

    /* ---- std::vector<std::list> ---- */
    std::vector<List> lists(LISTS);
    expect_managed(lists.data());
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (uint32_t i = 0; i < LISTS; i++)
        for (uint64_t n = rnd(&x) % 300; n > 0; n--) lists[i].push_back(rnd(&x) >> 20);
    lists[0].clear(); /* an empty list: the sentinel points to itself */
    auto *list_node = static_cast<std::_List_node<uint64_t> *>(lists[1].begin()._M_node);
    expect_managed(list_node);
    std::vector<uint64_t> sums(LISTS, 0);
    sum_args sa = {lists.data(), sums.data(), (uint32_t)sizeof(List),
                   (uint32_t)((char *)list_node->_M_valptr() - (char *)list_node)};
    CHECK(unimem_launch(sum, LISTS, &sa, sizeof sa) == 0, "%s", unimem_last_error());
    check_sums(lists, sums);
    /* Splice nodes between lists, erase some, push new ones at both ends. */
    for (uint32_t i = 2; i + 1 < LISTS; i += 5) lists[i].splice(lists[i].begin(), lists[i + 1]);
    for (uint32_t i = 3; i < LISTS; i += 11)
        for (auto it = lists[i].begin(); it != lists[i].end();) it = *it % 3 == 0 ? lists[i].erase(it) : std::next(it);
    for (uint32_t i = 0; i < LISTS; i += 3) lists[i].push_front(i), lists[i].push_back(7 * i);
    std::fill(sums.begin(), sums.end(), 0);
    CHECK(unimem_launch(sum, LISTS, &sa, sizeof sa) == 0, "%s", unimem_last_error());
    check_sums(lists, sums);

    unimem_stats s;
    CHECK(unimem_get_stats(&s) == 0, "%s", unimem_last_error());
    CHECK(s.launches >= 4, "launches %lu", (unsigned long)s.launches);
    unimem_kernel_destroy(lookup);
    unimem_kernel_destroy(sum);
    printf("PASS kernel_stl (%zu map entries, %d lists; %lu device faults, %lu replay rounds)\n", m.size(), LISTS,
           (unsigned long)s.device_faults, (unsigned long)s.replay_rounds);
    return 0;
}
