"""An allocation-heavy Python workload for shims/tests/real_programs.rs.

Builds and drops large dicts, lists, strings and bytearrays, round-trips JSON, and prints
digests of everything: the output must be identical with and without libunimem.so. On
stderr it prints one `unimem-proof:` line saying whether unimem_is_managed is visible in
this process and whether a 1 MiB malloc'd buffer lies in unimem's managed heap.
"""
import ctypes
import hashlib
import json
import random
import sys


def digest(data):
    return hashlib.sha256(data).hexdigest()[:16]


rng = random.Random(12345)

# Dicts of strings and nested containers, then a JSON round trip.
d = {}
for i in range(150_000):
    key = "key%d-%s" % (i, "x" * (i % 40))
    d[key] = [i, str(i) * (i % 7), {"n": i, "s": key[::-1], "f": i / 7}]
text = json.dumps(d, sort_keys=True)
back = json.loads(text)
assert back == d
print("json", len(text), digest(text.encode()))
del back

# Lists: build, sort, slice, drop.
values = [rng.random() for _ in range(400_000)]
values.sort()
print("sorted", len(values), digest(repr(values[::1000]).encode()))
chunks = [values[i : i + 1000] for i in range(0, len(values), 1000)]
print("chunks", len(chunks), sum(len(c) for c in chunks))
del values, chunks

# Strings: many small pieces joined into one big one.
parts = [("%08x" % rng.getrandbits(32)) * (1 + i % 5) for i in range(100_000)]
big = "".join(parts)
print("join", len(big), digest(big.encode()))
words = big.split("0")
print("split", len(words), digest("|".join(sorted(set(words))).encode()))
del parts, big, words

# A growing bytearray (realloc) and a dict that churns (insert / delete).
ba = bytearray()
for i in range(200_000):
    ba += bytes([i & 255]) * (i % 13)
print("bytearray", len(ba), digest(bytes(ba)))
churn = {}
for i in range(300_000):
    churn[i] = "v" * (i % 100)
    if i % 3 == 0:
        del churn[i // 2]
print("churn", len(churn), sum(len(v) for v in churn.values()))
del d, churn, ba

try:
    is_managed = ctypes.CDLL(None).unimem_is_managed
except AttributeError:
    print("unimem-proof: absent", file=sys.stderr)
else:
    is_managed.argtypes = [ctypes.c_void_p]
    is_managed.restype = ctypes.c_int
    buf = ctypes.create_string_buffer(1 << 20)
    print("unimem-proof: managed=%d" % is_managed(ctypes.addressof(buf)), file=sys.stderr)
