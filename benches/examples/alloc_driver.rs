//! Run one allocator workload without criterion, for profilers:
//!
//! ```text
//! cargo build --release -p unimem-benches --example alloc_driver
//! valgrind --tool=callgrind target/release/examples/alloc_driver pairs_16 unimem 1000
//! perf record -g target/release/examples/alloc_driver mixed glibc 200
//! ```
//!
//! Arguments: `WORKLOAD ALLOCATOR [ITERATIONS [REPEATS]]`. One iteration is what one
//! criterion iteration of the same group does (see docs/PERFORMANCE.md). The workload runs
//! REPEATS times (default 1) in this process, and each repeat's wall time is printed.

use std::time::{Duration, Instant};
use unimem_benches::{self as w, Alloc, Glibc, Mimalloc, Unimem};

const WORKLOADS: &str =
    "pairs_SIZE, batch_lifo_SIZE, batch_fifo_SIZE, producer_consumer, realloc_double, realloc_append, mixed";

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn run<A: Alloc>(workload: &str, iters: u64) -> Duration {
    let size = |prefix: &str| workload.strip_prefix(prefix).and_then(|s| s.parse::<usize>().ok());
    if let Some(n) = size("pairs_") {
        timed(|| (0..iters).for_each(|_| w::pairs::<A>(n, 1000)))
    } else if let Some(n) = size("batch_lifo_") {
        timed(|| (0..iters).for_each(|_| w::batch::<A>(n, 1000 / w::BATCH, true)))
    } else if let Some(n) = size("batch_fifo_") {
        timed(|| (0..iters).for_each(|_| w::batch::<A>(n, 1000 / w::BATCH, false)))
    } else {
        match workload {
            "producer_consumer" => w::producer_consumer::<A>(iters, 200_000),
            "realloc_double" => timed(|| (0..iters).for_each(|_| w::realloc_double::<A>())),
            "realloc_append" => timed(|| (0..iters).for_each(|_| w::realloc_append::<A>())),
            "mixed" => w::mixed::<A>(iters),
            _ => usage(&format!("unknown workload {workload:?}")),
        }
    }
}

fn usage(why: &str) -> ! {
    eprintln!("alloc_driver: {why}\nusage: alloc_driver WORKLOAD unimem|glibc|mimalloc [ITERATIONS [REPEATS]]\nworkloads: {WORKLOADS}");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 4 {
        usage("expected 2 to 4 arguments");
    }
    let iters = match args.get(2) {
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| usage(&format!("ITERATIONS must be a number, not {s:?}"))),
        None => 100,
    };
    let repeats: u32 = match args.get(3) {
        Some(s) => s
            .parse()
            .unwrap_or_else(|_| usage(&format!("REPEATS must be a number, not {s:?}"))),
        None => 1,
    };
    for _ in 0..repeats {
        let t = match args[1].as_str() {
            "unimem" => run::<Unimem>(&args[0], iters),
            "glibc" => run::<Glibc>(&args[0], iters),
            "mimalloc" => run::<Mimalloc>(&args[0], iters),
            other => usage(&format!("unknown allocator {other:?}")),
        };
        println!(
            "{} {} x{}: {:?} ({:?}/iteration)",
            args[0],
            args[1],
            iters,
            t,
            t / iters.max(1) as u32
        );
    }
}
