#!/usr/bin/env python3
"""Print the allocator benchmark results as a markdown table of same-run ratios.

Reads criterion's output of `cargo bench -p unimem-benches --bench alloc`:
<criterion dir>/<group>/<function>/new/{estimates,benchmark}.json, for every group that
has the functions `unimem`, `glibc` and `mimalloc`.

    python3 benches/ratios.py [CRITERION_DIR ...]

CRITERION_DIR defaults to target/criterion (relative to the workspace root). Given several
directories (copies of target/criterion from repeated runs), it prints one table per run
and then a table of the median ratio per workload across runs.

Goals (from the issue): unimem/mimalloc <= 1.10 and glibc/unimem >= 1.25 on every workload.
Only ratios of numbers measured in the same run are compared; absolute times are shown
for orientation only.
"""

import json
import os
import statistics
import sys

ALLOCATORS = ("unimem", "glibc", "mimalloc")
MAX_VS_MIMALLOC = 1.10  # unimem time / mimalloc time must be at most this
MIN_VS_GLIBC = 1.25  # glibc time / unimem time must be at least this

# Display order: the order the bench file registers the groups in.
ORDER = ["pairs", "batch_lifo", "batch_fifo", "producer_consumer", "realloc", "mixed"]


def order_key(group):
    size = group.rsplit("_", 1)[-1]
    size = int(size) if size.isdigit() else 0
    for i, prefix in enumerate(ORDER):
        if group.startswith(prefix):
            return (i, size, group)
    return (len(ORDER), size, group)


def load(root):
    """{group: {function: (mean_ns, ci_low_ns, ci_high_ns)}} for complete groups."""
    results = {}
    if not os.path.isdir(root):
        sys.exit(f"ratios.py: {root} does not exist; run `cargo bench -p unimem-benches --bench alloc` first")
    for group_dir in os.listdir(root):
        path = os.path.join(root, group_dir)
        if not os.path.isdir(path):
            continue
        funcs = {}
        group_name = group_dir
        for fn in ALLOCATORS:
            new = os.path.join(path, fn, "new")
            est = os.path.join(new, "estimates.json")
            if not os.path.isfile(est):
                break
            with open(est) as f:
                mean = json.load(f)["mean"]
            meta = os.path.join(new, "benchmark.json")
            if os.path.isfile(meta):
                with open(meta) as f:
                    group_name = json.load(f).get("group_id", group_dir)
            ci = mean["confidence_interval"]
            funcs[fn] = (mean["point_estimate"], ci["lower_bound"], ci["upper_bound"])
        if len(funcs) == len(ALLOCATORS):
            results[group_name] = funcs
    if not results:
        sys.exit(f"ratios.py: no group under {root} has all of {', '.join(ALLOCATORS)}")
    return results


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def ratios(funcs):
    u, g, m = (funcs[a][0] for a in ALLOCATORS)
    return u / m, g / u


def verdict(vs_mi, vs_glibc):
    # "unimem needs Nx": the speed-up of unimem alone that would just meet the goal.
    a = "met" if vs_mi <= MAX_VS_MIMALLOC else f"**missed** (unimem needs {vs_mi / MAX_VS_MIMALLOC:.2f}x)"
    b = "met" if vs_glibc >= MIN_VS_GLIBC else f"**missed** (unimem needs {MIN_VS_GLIBC / vs_glibc:.2f}x)"
    return a, b


def run_table(results):
    lines = [
        "| workload | unimem | glibc | mimalloc | unimem/mimalloc (goal <= 1.10) | glibc/unimem (goal >= 1.25) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for group in sorted(results, key=order_key):
        funcs = results[group]
        vs_mi, vs_glibc = ratios(funcs)
        a, b = verdict(vs_mi, vs_glibc)
        cells = [fmt_time(funcs[x][0]) for x in ALLOCATORS]
        lines.append(f"| {group} | {' | '.join(cells)} | {vs_mi:.2f} {mark(a)} | {vs_glibc:.2f} {mark(b)} |")
    return "\n".join(lines)


def mark(v):
    return "ok" if v == "met" else "MISS"


def median_table(runs):
    groups = sorted(set.intersection(*(set(r) for r in runs)), key=order_key)
    lines = [
        "| workload | unimem/mimalloc median (runs) | glibc/unimem median (runs) | goal vs mimalloc | goal vs glibc |",
        "|---|---|---|---|---|",
    ]
    for group in groups:
        rs = [ratios(r[group]) for r in runs]
        mi = [x[0] for x in rs]
        gl = [x[1] for x in rs]
        mmi, mgl = statistics.median(mi), statistics.median(gl)
        a, b = verdict(mmi, mgl)
        lines.append(
            f"| {group} | {mmi:.2f} ({', '.join(f'{x:.2f}' for x in mi)}) "
            f"| {mgl:.2f} ({', '.join(f'{x:.2f}' for x in gl)}) | {a} | {b} |"
        )
    return "\n".join(lines)


def main():
    dirs = sys.argv[1:]
    if not dirs:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")
        dirs = [os.path.normpath(root)]
    runs = [load(d) for d in dirs]
    for d, r in zip(dirs, runs):
        if len(runs) > 1:
            print(f"### {d}\n")
        print("Mean time per iteration (see docs/PERFORMANCE.md for what one iteration is).\n")
        print(run_table(r))
        print()
    if len(runs) > 1:
        print(f"### Median over {len(runs)} runs\n")
        print(median_table(runs))
        print()


if __name__ == "__main__":
    main()
