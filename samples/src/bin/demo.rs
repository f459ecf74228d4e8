//! The main demo: a million `Box`ed list nodes, summed by a GPU kernel on the very same
//! pointers (no copies by hand), checked against the CPU; then the CPU changes a few nodes
//! and the kernel runs again, moving only what changed.
//!
//! `cargo run --release -p unimem-samples --bin demo [-- <nodes> <segments>]`

use std::time::Instant;

use unimem_samples::list::{launch_and_check, SegmentSums, Step};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn print(name: &str, s: &Step) {
    println!(
        "{name:<28} {:>9.2} ms (dispatch {:.2} ms, migration {:.2} ms)  rounds {:>2}  device faults {:>4}  prefetched blocks {:>4}  to device {:>7.2} MiB  evictions {:>3}",
        s.time.as_secs_f64() * 1e3,
        s.launch.dispatch_time.as_secs_f64() * 1e3,
        s.launch.migrate_time.as_secs_f64() * 1e3,
        s.launch.rounds,
        s.launch.device_faults,
        s.launch.prefetched_blocks,
        mib(s.stats.bytes_to_device),
        s.stats.evictions,
    );
    println!(
        "{:<28} CPU check: {} CPU faults brought {:.2} MiB home",
        "",
        s.check_stats.cpu_faults(),
        mib(s.check_stats.bytes_to_host)
    );
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("numbers: <nodes> <segments>"));
    let nodes = args.next().unwrap_or(1_000_000);
    let segments = args.next().unwrap_or(8192);
    let t = Instant::now();
    let mut s = match SegmentSums::new(nodes, segments) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "built a list of {} Box<Node> ({} segments of {} nodes) and compiled the kernel in {:.1} ms",
        s.list.len(),
        s.starts.len(),
        s.seg,
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let cpu = s.cpu_sums();
    println!("CPU walk (reference): {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    drop(cpu);
    let run = |s: &mut SegmentSums, name: &str| match launch_and_check(s) {
        Ok(step) => print(name, &step),
        Err(e) => {
            eprintln!("demo: {name}: {e}");
            std::process::exit(1);
        }
    };
    run(&mut s, "launch 1 (cold)");
    run(&mut s, "launch 2 (warm, no change)");
    let changed = s.mutate(100_003);
    run(&mut s, &format!("launch 3 ({changed} nodes changed)"));
    let st = unimem::stats();
    println!(
        "totals: {} launches, {} device faults, {} replay rounds, {} CPU faults, {:.2} MiB to device, {:.2} MiB to host, {} evictions",
        st.launches,
        st.device_faults,
        st.replay_rounds,
        st.cpu_faults(),
        mib(st.bytes_to_device),
        mib(st.bytes_to_host),
        st.evictions
    );
    println!("all sums match the CPU");
}
