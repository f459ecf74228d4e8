"""Sample: CPython's own objects walked by a kernel, unchanged.

Run under LD_PRELOAD=libunimem.so with PYTHONMALLOC=malloc (pymalloc serves small objects
from arenas of its own, outside unimem's heap; with malloc every object comes from unimem).
A list of ints and a list of (key, value) tuples are read by WGSL kernels through the
interpreter's object layout (PyListObject, PyTupleObject, PyLongObject), the results checked
against Python; the program then changes the lists (new int objects, an append that may move
the list's item array) and launches again. A small int (a static object of the interpreter,
not heap memory) makes a clear error, and the runtime stays usable.

With `--pymalloc` (run with pymalloc on) it checks instead that a kernel reaching a
pymalloc'ed object fails with an error that says so and names the fix.

Prints "PASS kernel_objects"; without a Vulkan device "SKIP ...", unless
UNIMEM_REQUIRE_DEVICE=1.
"""

import array
import ctypes
import os
import sys

NAME = "kernel_objects"


def fail(msg):
    print(f"FAIL {NAME}: {msg}")
    sys.exit(1)


lib = ctypes.CDLL(None)  # the preloaded libunimem.so
try:
    lib.unimem_kernel_create.restype = ctypes.c_void_p
except AttributeError:
    fail("unimem's C API is not in this process: run under LD_PRELOAD=libunimem.so")
lib.unimem_kernel_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
lib.unimem_kernel_destroy.argtypes = [ctypes.c_void_p]
lib.unimem_launch.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
lib.unimem_last_error.restype = ctypes.c_char_p
lib.unimem_is_managed.argtypes = [ctypes.c_void_p]


def last_error():
    e = lib.unimem_last_error()
    return e.decode() if e else "(no message)"


# The object layout kernels read (CPython 3.x, 64-bit): every object starts with its
# reference count and type (16 bytes); a list's item array pointer is at byte 24; a tuple's
# items are inline from byte 24; an int's 30-bit digits start at byte 24 (the values here
# are positive and below 2**30: one digit).
PREFIX = """
fn int_value(o: u64) -> u32 {
    return unimem_load_u32(o + 24lu);
}
fn item(list: u64, i: u32) -> u64 {
    return unimem_load_ptr(unimem_load_ptr(list + 24lu) + u64(i) * 8lu);
}
"""

# Invocation id sums items [id * per, (id + 1) * per) of a list of ints.
SUM_INTS = PREFIX + """
fn sum_ints(id: u32) {
    let list = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    let per = unimem_arg_u32(4u);
    var s = 0u;
    for (var i = id * per; i < (id + 1u) * per; i++) {
        s += int_value(item(list, i));
    }
    unimem_store_u32(out + u64(id) * 4lu, s);
}
"""

# Invocation id writes key * value of the id-th (key, value) tuple.
PRODUCTS = PREFIX + """
fn products(id: u32) {
    let pairs = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    let t = item(pairs, id);
    let k = int_value(unimem_load_ptr(t + 24lu));
    let v = int_value(unimem_load_ptr(t + 32lu));
    unimem_store_u32(out + u64(id) * 4lu, k * v);
}
"""


class Args(ctypes.Structure):
    _fields_ = [("obj", ctypes.c_uint64), ("out", ctypes.c_uint64), ("n", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def create(src, entry):
    k = lib.unimem_kernel_create(src.encode(), entry.encode())
    if not k:
        e = last_error()
        if os.environ.get("UNIMEM_REQUIRE_DEVICE") != "1" and ("Vulkan" in e or "device" in e):
            print(f"SKIP {NAME}: {e}")
            sys.exit(0)
        fail(f"unimem_kernel_create: {e}")
    return k


def launch(k, n, obj, out, per=0):
    a = Args(id(obj), out.buffer_info()[0], per, 0)
    return lib.unimem_launch(k, n, ctypes.byref(a), ctypes.sizeof(a))


def main_pymalloc():
    xs = [300 + i for i in range(1000)]
    if lib.unimem_is_managed(id(xs[0])):
        fail("--pymalloc: the ints are in unimem's heap: run with pymalloc (PYTHONMALLOC unset)")
    out = array.array("I", [0])
    sums = create(SUM_INTS, "sum_ints")
    if launch(sums, 1, xs, out, len(xs)) == 0:
        fail("a kernel read pymalloc'ed ints without an error")
    e = last_error()
    for needle in ("kernel `sum_ints`", "invocation 0", "pymalloc", "PYTHONMALLOC=malloc"):
        if needle not in e:
            fail(f"the error does not say {needle!r}: {e}")
    lib.unimem_kernel_destroy(sums)
    print(f"PASS {NAME} (pymalloc)")


def main():
    groups, per = 256, 400
    # Values from 300 up: ints from -5 to 256 are static objects of the interpreter.
    xs = [300 + (i * 7919) % 100000 for i in range(groups * per)]
    if not lib.unimem_is_managed(id(xs)) or not lib.unimem_is_managed(id(xs[0])):
        fail("the list or its ints are outside unimem's heap: run with PYTHONMALLOC=malloc")
    out = array.array("I", [0] * groups)
    sums = create(SUM_INTS, "sum_ints")

    def check_sums(when):
        if launch(sums, groups, xs, out, per) != 0:
            fail(f"{when}: {last_error()}")
        for g in range(groups):
            want = sum(xs[g * per:(g + 1) * per]) & 0xFFFFFFFF
            if out[g] != want:
                fail(f"{when}: group {g}: kernel {out[g]}, Python {want}")

    check_sums("first launch")
    # New int objects in some slots, then an append that may move the item array.
    for i in range(0, len(xs), 997):
        xs[i] = 100000 + i
    check_sums("after changing items")
    xs.extend(range(1000, 1000 + per))
    groups += 1
    out = array.array("I", [0] * groups)
    check_sums("after an append")

    pairs = [(1000 + i, 2000 + i % 50) for i in range(5000)]
    prod = create(PRODUCTS, "products")
    pout = array.array("I", [0] * len(pairs))
    if launch(prod, len(pairs), pairs, pout) != 0:
        fail(f"products: {last_error()}")
    for i, (k, v) in enumerate(pairs):
        if pout[i] != (k * v) & 0xFFFFFFFF:
            fail(f"pair {i}: kernel {pout[i]}, Python {k * v}")

    # A small int is a static object of the interpreter, not heap memory: a clear error.
    bad = pairs[:100] + [(5, 7)] + pairs[100:]
    if launch(prod, len(bad), bad, pout) == 0:
        fail("a tuple holding a static int launched without an error")
    e = last_error()
    for needle in ("kernel `products`", "invocation 100", "outside unimem's managed heap"):
        if needle not in e:
            fail(f"the error does not say {needle!r}: {e}")
    # The runtime stays usable.
    check_sums("after the error")
    lib.unimem_kernel_destroy(sums)
    lib.unimem_kernel_destroy(prod)
    print(f"PASS {NAME}")


if sys.argv[1:] == ["--pymalloc"]:
    main_pymalloc()
else:
    main()
