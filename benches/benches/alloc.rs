//! Allocator benchmarks: unimem-alloc against glibc malloc and mimalloc, measured in the
//! same run so results are read as ratios (docs/PERFORMANCE.md, benches/ratios.py).
//!
//! No `#[global_allocator]`: criterion keeps the system allocator, and each allocator under
//! test is called directly through `unimem_benches::Alloc`. Each criterion group is one
//! workload (defined once in `benches/src/lib.rs`) with the functions `unimem`, `glibc`
//! and `mimalloc`, registered in that order.
//!
//! Run: `cargo bench -p unimem-benches --bench alloc`, then `python3 benches/ratios.py`.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::time::Duration;
use unimem_benches::{self as w, Glibc, Mimalloc, Unimem};

/// Register `$f::<A>(bencher, args..)` for the three allocators in `$group`.
macro_rules! all_three {
    ($group:expr, $f:ident $(, $arg:expr)*) => {{
        $group.bench_function("unimem", |b| $f::<Unimem>(b $(, $arg)*));
        $group.bench_function("glibc", |b| $f::<Glibc>(b $(, $arg)*));
        $group.bench_function("mimalloc", |b| $f::<Mimalloc>(b $(, $arg)*));
    }};
}

type Bencher<'a> = criterion::Bencher<'a, WallTime>;

fn group<'a>(c: &'a mut Criterion, name: &str, secs: u64) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(secs));
    g
}

// 1. Small blocks: one iteration is 1000 allocations and 1000 frees.
const PAIRS: usize = 1000;

fn pairs<A: w::Alloc>(b: &mut Bencher, size: usize) {
    b.iter(|| w::pairs::<A>(size, PAIRS));
}

fn batch<A: w::Alloc>(b: &mut Bencher, size: usize, lifo: bool) {
    b.iter(|| w::batch::<A>(size, PAIRS / w::BATCH, lifo));
}

fn small(c: &mut Criterion) {
    for size in [16usize, 64, 256, 1024] {
        let mut g = group(c, &format!("pairs_{size}"), 2);
        g.throughput(Throughput::Elements(PAIRS as u64));
        all_three!(g, pairs, size);
        g.finish();
        for lifo in [true, false] {
            let mut g = group(c, &format!("batch_{}_{size}", if lifo { "lifo" } else { "fifo" }), 2);
            g.throughput(Throughput::Elements(PAIRS as u64));
            all_three!(g, batch, size, lifo);
            g.finish();
        }
    }
}

// 2. Producer/consumer: one iteration is 200k blocks allocated here and freed by another
// thread.
const PC_BLOCKS: usize = 200_000;

fn producer_consumer<A: w::Alloc>(b: &mut Bencher) {
    b.iter_custom(|iters| w::producer_consumer::<A>(iters, PC_BLOCKS));
}

fn threads(c: &mut Criterion) {
    let mut g = group(c, "producer_consumer", 3);
    g.throughput(Throughput::Elements(PC_BLOCKS as u64));
    all_three!(g, producer_consumer);
    g.finish();
}

// 3. realloc growth: one iteration is one whole growth sequence.
fn realloc_double<A: w::Alloc>(b: &mut Bencher) {
    b.iter(w::realloc_double::<A>);
}

fn realloc_append<A: w::Alloc>(b: &mut Bencher) {
    b.iter(w::realloc_append::<A>);
}

fn realloc(c: &mut Criterion) {
    let mut g = group(c, "realloc_double_16M", 2);
    all_three!(g, realloc_double);
    g.finish();
    let mut g = group(c, "realloc_append_1M", 2);
    all_three!(g, realloc_append);
    g.finish();
}

// 4. Mixed sizes: one iteration is 10k free+alloc steps over a 10k-slot working set.
fn mixed<A: w::Alloc>(b: &mut Bencher) {
    b.iter_custom(w::mixed::<A>);
}

fn mixed_sizes(c: &mut Criterion) {
    let mut g = group(c, "mixed_10k_slots", 3);
    g.throughput(Throughput::Elements(w::STEPS as u64));
    all_three!(g, mixed);
    g.finish();
}

fn banner(_: &mut Criterion) {
    eprintln!(
        "allocators: unimem-alloc {} (this workspace), glibc malloc (system), mimalloc {} (libmimalloc-sys)",
        env!("CARGO_PKG_VERSION"),
        w::mimalloc_version()
    );
}

criterion_group!(benches, banner, small, threads, realloc, mixed_sizes);
criterion_main!(benches);
