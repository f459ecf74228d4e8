//! The main demo: a million `Box`ed list nodes, summed by a GPU kernel on the very same
//! pointers (no copies by hand), checked against the CPU; then the CPU changes a few nodes
//! and the kernel runs again, moving only what changed. Then a million-node BST looked up
//! for 100 000 keys, and a BFS over adjacency lists, both checked against the CPU.
//!
//! `cargo run --release -p unimem-samples --bin demo [-- <nodes> <segments>]`

use std::time::Instant;

use unimem_samples::bfs::{gpu_bfs, Graph};
use unimem_samples::bst::{key, Lookups};
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
    if let Ok((_, dev)) = unimem::vulkan_runtime() {
        println!(
            "device: {}; {}",
            dev.device().report().name,
            if dev.in_place() {
                "in-place mode: kernels read and write host RAM, blocks are mapped, not copied (UNIMEM_IN_PLACE=off migrates them)"
            } else {
                "migration mode: blocks move into device frames on fault"
            }
        );
    }
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
    drop(s);

    // A binary search tree of a million boxed nodes, looked up for 100 000 keys.
    let t = Instant::now();
    let mut l = Lookups::new(nodes, 100_000).unwrap_or_else(|e| {
        eprintln!("demo: {e}");
        std::process::exit(1);
    });
    println!("built a BST of {} Box<Tree> in {:.1} ms", l.tree.len(), t.elapsed().as_secs_f64() * 1e3);
    let lookup = |l: &mut Lookups, name: &str| {
        let before = unimem::stats();
        match l.launch_and_check() {
            Ok(r) => println!(
                "{name:<28} {:>9.2} ms (dispatch {:.2} ms, migration {:.2} ms)  rounds {:>2}  device faults {:>4}  to device {:>7.2} MiB",
                r.time.as_secs_f64() * 1e3,
                r.dispatch_time.as_secs_f64() * 1e3,
                r.migrate_time.as_secs_f64() * 1e3,
                r.rounds,
                r.device_faults,
                mib(unimem::stats().bytes_to_device - before.bytes_to_device)
            ),
            Err(e) => {
                eprintln!("demo: {name}: {e}");
                std::process::exit(1);
            }
        }
    };
    lookup(&mut l, "lookups 1 (cold)");
    lookup(&mut l, "lookups 2 (warm)");
    for i in (0..nodes).step_by(nodes / 10 + 1) {
        l.tree.insert(key(i), 7);
    }
    lookup(&mut l, "lookups 3 (10 values changed)");
    drop(l);

    // BFS over adjacency lists (a boxed slice per vertex), one launch per level's frontier.
    let vertices = (nodes / 5).max(2);
    let mut g = Graph::random(vertices, 3);
    let before = unimem::stats();
    let t = Instant::now();
    let levels = gpu_bfs(&mut g, 0).unwrap_or_else(|e| {
        eprintln!("demo: bfs: {e}");
        std::process::exit(1);
    });
    let time = t.elapsed();
    let d = unimem::stats();
    assert!(
        g.levels() == g.cpu_levels(0),
        "BFS levels differ from the CPU's"
    );
    println!(
        "BFS over {vertices} vertices: {levels} launches in {:.2} ms, {} device faults, {} replay rounds; levels match the CPU",
        time.as_secs_f64() * 1e3,
        d.device_faults - before.device_faults,
        d.replay_rounds - before.replay_rounds
    );

    let st = unimem::stats();
    println!(
        "totals: {} launches, {} device faults, {} replay rounds, {} CPU faults ({} reads of device data, {} writes to device data, {} writes to shared data), {:.2} MiB to device, {:.2} MiB to host, {} evictions, {} blocks mapped in place",
        st.launches,
        st.device_faults,
        st.replay_rounds,
        st.cpu_faults(),
        st.read_faults_device,
        st.write_faults_device,
        st.write_faults_shared,
        mib(st.bytes_to_device),
        mib(st.bytes_to_host),
        st.evictions,
        st.mapped_in_place
    );
    println!("all results match the CPU");
}
