//! Kernels on shared pointers against plain Vulkan compute, measured in the same run on the
//! same device, in interleaved rounds (median of each):
//!
//! - **empty launch**: `Kernel::launch` of an empty kernel (64 invocations; the launch
//!   protocol: argument buffer, control buffer, one dispatch, fault-buffer and dirty-bit
//!   reads) vs `Device::dispatch` of an empty WGSL kernel (record, submit, fence wait: the
//!   raw ash path). Goal (issue 6): <= 1.25x.
//! - **pointer chase**: 4096 invocations each follow 2000 dependent pointers through an
//!   array of 1 Mi elements (a random cycle). Accessors: 64-bit host pointers through
//!   `unimem_load_ptr` (page-table translation, step count, checks); plain: the same cycle
//!   as `u32` indices in a storage buffer. Ratio of chase rates, goal (issue 6) >= 0.75.
//!   Both run with everything resident (a warm launch: no device faults).
//! - **end to end**, the samples' workloads on structures of `Box`es vs explicit versions
//!   written by hand (walk the structure on the CPU into flat `u32` arrays, upload them into
//!   host buffers, run a plain kernel on indices, download the result): first launch on a
//!   fresh structure (goal <= 1.0x) and a repeated launch after a small CPU change, which the
//!   explicit version answers by flattening and uploading everything again (goal <= 0.3x).
//!   Both versions must give the same result. Device faults and dispatch rounds are printed
//!   for the unimem side.
//!   - **list sum** (the demo's list: 1M nodes, 8192 segments; 10 nodes changed);
//!   - **BST lookup** (the demo's tree: 1M nodes, 100k lookups, one in eight absent; 10
//!     values changed and 10 absent keys inserted);
//!   - **BFS** (the demo's graph: 200k vertices, 4 edges each; one launch per level over
//!     its frontier with `gpu_bfs`, one dispatch per level over its frontier explicitly; 10
//!     edges added), checked against the CPU's levels.
//!
//!     cargo bench -p unimem-benches --bench kernels
//!     cargo bench -p unimem-benches --bench kernels -- chase list   # only these sections
//!
//! Sections: `empty`, `chase`, `list`, `bst`, `bfs` (arguments that name none are ignored, so
//! cargo's own `--bench` flag passes through; no section named runs them all).
//!
//! Without a Vulkan device it prints a notice and exits (with `UNIMEM_REQUIRE_DEVICE=1` it
//! fails), by the rule of `unimem::device::test_support`.

use std::fmt;
use std::time::{Duration, Instant};

use unimem::coherence::Snapshot;
use unimem::device::test_support::runtime_or_skip;
use unimem::device::{Buffer, ComputePipeline, Device};
use unimem::kernel::compile_wgsl_named;
use unimem::{Args, Kernel, LaunchReport};
use unimem_samples::bfs::{gpu_bfs, Graph, BFS_STEP, UNREACHED};
use unimem_samples::bst::{key, Lookups, Tree};
use unimem_samples::list::SegmentSums;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

const ROUNDS: usize = 15;
const CHASE_ELEMS: usize = 1 << 20;
const CHASE_INVOCATIONS: u32 = 4096;
const CHASE_STEPS: u32 = 2000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn raw_pipeline(device: &Device, src: &str, entry: &str) -> (ComputePipeline, u32) {
    let k = compile_wgsl_named(entry, src, entry).unwrap();
    let g = k.groups_for(1);
    (device.create_pipeline(&k).unwrap(), g)
}

/// A random single cycle over `n` elements (Sattolo's algorithm, xorshift).
fn cycle(n: usize) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        perm.swap(i, j);
    }
    let mut next = vec![0u32; n];
    for i in 0..n {
        next[perm[i] as usize] = perm[(i + 1) % n];
    }
    next
}

/// The sections to run: those named on the command line, or all.
fn sections() -> Vec<&'static str> {
    const ALL: [&str; 6] = ["empty", "chase", "list", "bst", "bfs", "chase_big"];
    let named: Vec<&str> = ALL.into_iter().filter(|s| std::env::args().skip(1).any(|a| a == *s)).collect();
    if named.is_empty() { ALL.to_vec() } else { named }
}

fn main() {
    let Some((_, dev)) = runtime_or_skip("kernels bench", unimem::vulkan_runtime()) else { return };
    let device = dev.device();
    println!("device: {}", device.report().name);
    let run = sections();
    if run.contains(&"empty") {
        empty_launch(device);
    }
    if run.contains(&"chase") {
        pointer_chase(device, "");
    }
    if run.contains(&"list") {
        list_end_to_end(device);
    }
    if run.contains(&"bst") {
        bst_end_to_end(device);
    }
    if run.contains(&"bfs") {
        bfs_end_to_end(device);
    }
    // Last: the heap stays committed. In place, 1 GiB of heap is nine windows of 128 MiB on
    // lavapipe: reached at addresses by default, through a switch over the windows with
    // UNIMEM_IN_PLACE_ACCESS=windows.
    if run.contains(&"chase_big") {
        let filler = vec![0u8; 1 << 30];
        pointer_chase(device, ", 1 GiB heap");
        drop(filler);
    }
}

/// Empty launch vs raw dispatch.
fn empty_launch(device: &Device) {
    let empty = Kernel::new("fn empty(id: u32) { }", "empty").unwrap();
    let (raw_empty, _) = raw_pipeline(
        device,
        "@group(0) @binding(0) var<storage, read_write> b: array<u32>;\n@compute @workgroup_size(64) fn e(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x > 1000000u) { b[0] = 1u; } }",
        "e",
    );
    let mut raw_buf = device.create_host_buffer(256).unwrap();
    let args = Args::new().u32(0);
    for _ in 0..20 {
        empty.launch(64, &args).unwrap();
        device.dispatch(&raw_empty, &mut [&mut raw_buf], &[], [1, 1, 1]).unwrap();
    }
    let (mut launch_t, mut raw_t) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..100 {
            empty.launch(64, &args).unwrap();
        }
        launch_t.push(t.elapsed() / 100);
        let t = Instant::now();
        for _ in 0..100 {
            device.dispatch(&raw_empty, &mut [&mut raw_buf], &[], [1, 1, 1]).unwrap();
        }
        raw_t.push(t.elapsed() / 100);
    }
    let (l, r) = (median(launch_t), median(raw_t));
    println!(
        "empty launch: Kernel::launch {:.1} us, raw dispatch {:.1} us, ratio {:.2}x (goal <= 1.25x)",
        l.as_secs_f64() * 1e6,
        r.as_secs_f64() * 1e6,
        l.as_secs_f64() / r.as_secs_f64()
    );
}

/// Pointer chase: accessors on host pointers vs an index array. `label` follows the name in
/// what is printed.
fn pointer_chase(device: &Device, label: &str) {
    let next = cycle(CHASE_ELEMS);
    let ptrs: Vec<u64> = vec![0; CHASE_ELEMS];
    let base = ptrs.as_ptr() as u64;
    // SAFETY: writes within `ptrs`, which nothing else references yet.
    let pw = unsafe { std::slice::from_raw_parts_mut(ptrs.as_ptr() as *mut u64, CHASE_ELEMS) };
    for (i, &n) in next.iter().enumerate() {
        pw[i] = base + u64::from(n) * 8;
    }
    let out = vec![0u64; CHASE_INVOCATIONS as usize];
    let chase = Kernel::new(
        "fn chase(id: u32) {
    let steps = unimem_arg_u32(4u);
    var p = unimem_arg_ptr(0u) + u64(id * 256u) * 8lu;
    for (var k = 0u; k < steps; k++) {
        p = unimem_load_ptr(p);
    }
    unimem_store_u64(unimem_arg_ptr(2u) + u64(id) * 8lu, p);
}",
        "chase",
    )
    .unwrap();
    let chase_args = Args::new().ptr(&ptrs[..]).ptr(&out[..]).u32(CHASE_STEPS);
    let (raw_chase, _) = raw_pipeline(
        device,
        "struct P { steps: u32 }
var<immediate> prm: P;
@group(0) @binding(0) var<storage, read> next: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn chase(@builtin(global_invocation_id) g: vec3<u32>) {
    var i = g.x * 256u;
    for (var k = 0u; k < prm.steps; k++) {
        i = next[i];
    }
    out[g.x] = i;
}",
        "chase",
    );
    let mut next_buf = device.create_host_buffer((CHASE_ELEMS * 4) as u64).unwrap();
    next_buf.as_mut_slice::<u32>().copy_from_slice(&next);
    let mut out_buf = device.create_host_buffer(u64::from(CHASE_INVOCATIONS) * 4).unwrap();
    let groups = [CHASE_INVOCATIONS / 64, 1, 1];
    let first = chase.launch(CHASE_INVOCATIONS, &chase_args).unwrap();
    println!("pointer chase{label}, first launch: {first:?}");
    let accessors = || {
        let t = Instant::now();
        let r = chase.launch(CHASE_INVOCATIONS, &chase_args).unwrap();
        assert_eq!(r.device_faults, 0, "warm launch");
        t.elapsed()
    };
    let mut plain = || {
        let t = Instant::now();
        device.dispatch(&raw_chase, &mut [&mut next_buf, &mut out_buf], &CHASE_STEPS.to_ne_bytes(), groups).unwrap();
        t.elapsed()
    };
    // Interleaved (each run finds the other's data in the caches) and blocked (each side runs
    // in a row, warm in its own steady state): the caches hold both arrays only in part, so
    // the two orders give different ratios; both are reported, the interleaved one is the
    // figure of record.
    let (mut acc_t, mut plain_t) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        acc_t.push(accessors());
        plain_t.push(plain());
    }
    let (mut acc_b, mut plain_b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        acc_b.push(accessors());
    }
    for _ in 0..ROUNDS {
        plain_b.push(plain());
    }
    // Both walked the same cycle.
    for (i, (&p, &idx)) in out.iter().zip(out_buf.as_slice::<u32>()).enumerate() {
        assert_eq!(p, base + u64::from(idx) * 8, "invocation {i}");
    }
    let steps = f64::from(CHASE_INVOCATIONS) * f64::from(CHASE_STEPS);
    let (a, p) = (median(acc_t), median(plain_t));
    let (ab, pb) = (median(acc_b), median(plain_b));
    println!(
        "pointer chase{label} ({} x {} steps): accessors {:.1} M steps/s ({:.2} ms), index array {:.1} M steps/s ({:.2} ms), ratio {:.2} (goal >= 0.75); blocked {:.2} vs {:.2} ms, ratio {:.2}",
        CHASE_INVOCATIONS,
        CHASE_STEPS,
        steps / a.as_secs_f64() / 1e6,
        a.as_secs_f64() * 1e3,
        steps / p.as_secs_f64() / 1e6,
        p.as_secs_f64() * 1e3,
        p.as_secs_f64() / a.as_secs_f64(),
        ab.as_secs_f64() * 1e3,
        pb.as_secs_f64() * 1e3,
        pb.as_secs_f64() / ab.as_secs_f64()
    );
}

/// What the unimem side of one end-to-end run did: launches, device faults, and dispatch
/// rounds (one per launch plus its replay rounds).
#[derive(Clone, Copy, Debug)]
struct Launches {
    launches: u64,
    device_faults: u64,
    rounds: u64,
}

impl From<LaunchReport> for Launches {
    fn from(r: LaunchReport) -> Launches {
        Launches { launches: 1, device_faults: r.device_faults, rounds: u64::from(r.rounds) }
    }
}

impl Launches {
    /// What the runtime's counters moved since `before` (a run of several launches).
    fn since(before: &Snapshot) -> Launches {
        let d = unimem::stats().since(before);
        Launches { launches: d.launches, device_faults: d.device_faults, rounds: d.launches + d.replay_rounds }
    }
}

/// An end-to-end workload on a structure of `Box`es, built fresh for each round: run in place
/// by unimem, and by an explicit version written by hand, which must give the same result.
trait EndToEnd {
    /// Runs the unimem kernel(s) on the structure's own pointers.
    fn unimem(&mut self) -> Launches;
    /// What the unimem run computed.
    fn unimem_result(&self) -> Vec<u32>;
    /// The explicit version, from scratch: flatten on the CPU, upload, dispatch, download.
    /// Returns its time, taken when the result is downloaded (freeing its arrays and buffers
    /// afterwards is not counted), and the result.
    fn explicit(&self) -> (Duration, Vec<u32>);
    /// A small change by the CPU.
    fn change(&mut self);
    /// Checks a result against the CPU (panics on a mismatch). By default nothing: the two
    /// versions agreeing is the check.
    fn check(&self, _result: &[u32]) {}
}

/// Times of one kind of run (first launch, or after the change) over the rounds.
#[derive(Default)]
struct Timings {
    unimem: Vec<Duration>,
    explicit: Vec<Duration>,
    launches: Vec<Launches>,
}

impl Timings {
    /// Runs both versions once, timed, and checks that they agree.
    fn measure(&mut self, w: &mut impl EndToEnd, name: &str) {
        let t = Instant::now();
        self.launches.push(w.unimem());
        self.unimem.push(t.elapsed());
        let (time, explicit) = w.explicit();
        self.explicit.push(time);
        let unimem = w.unimem_result();
        assert_eq!(explicit.len(), unimem.len(), "{name}: result lengths");
        if let Some(i) = explicit.iter().zip(&unimem).position(|(e, u)| e != u) {
            panic!("{name}: explicit and unimem differ at {i}: {} vs {}", explicit[i], unimem[i]);
        }
        w.check(&explicit);
    }
}

/// `lo` or `lo-hi` of the values.
fn range(v: impl Iterator<Item = u64> + Clone) -> String {
    let (lo, hi) = (v.clone().min().unwrap_or(0), v.max().unwrap_or(0));
    if lo == hi { format!("{lo}") } else { format!("{lo}-{hi}") }
}

impl fmt::Display for Timings {
    /// Medians, their ratio, and the launches (ranges over the rounds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (u, e) = (median(self.unimem.clone()), median(self.explicit.clone()));
        let l = &self.launches;
        write!(
            f,
            "{:.2} ms vs explicit {:.2} ms = {:.2}x; launches {}, device faults {}, rounds {}",
            u.as_secs_f64() * 1e3,
            e.as_secs_f64() * 1e3,
            u.as_secs_f64() / e.as_secs_f64(),
            range(l.iter().map(|l| l.launches)),
            range(l.iter().map(|l| l.device_faults)),
            range(l.iter().map(|l| l.rounds)),
        )
    }
}

/// Measures `rounds` fresh structures (each: first launch, the change, another launch; both
/// versions each time) and prints medians and ratios.
fn compare<W: EndToEnd>(name: &str, change: &str, rounds: usize, mut fresh: impl FnMut() -> W) {
    let (mut cold, mut warm) = (Timings::default(), Timings::default());
    for _ in 0..rounds {
        let mut w = fresh();
        cold.measure(&mut w, name);
        w.change();
        warm.measure(&mut w, name);
    }
    println!("{name} end to end ({rounds} rounds, medians):");
    println!("  first launch: {cold} (goal <= 1.0x)");
    println!("  after {change}: {warm} (goal <= 0.3x)");
}

/// A plain WGSL kernel (workgroups of 64) on host buffers: the explicit versions' device side.
struct Plain<'a> {
    device: &'a Device,
    pipeline: ComputePipeline,
}

impl<'a> Plain<'a> {
    /// Compiles `src`'s entry `entry`.
    fn new(device: &'a Device, src: &str, entry: &str) -> Plain<'a> {
        Plain { device, pipeline: raw_pipeline(device, src, entry).0 }
    }

    /// A host buffer holding `data` (one word at least: buffers are never empty).
    fn upload(&self, data: &[u32]) -> Buffer {
        let mut b = self.device.create_host_buffer((data.len().max(1) * 4) as u64).unwrap();
        b.as_mut_slice::<u32>()[..data.len()].copy_from_slice(data);
        b
    }

    /// A host buffer of `n` words for results.
    fn output(&self, n: u32) -> Buffer {
        self.device.create_host_buffer(u64::from(n.max(1)) * 4).unwrap()
    }

    /// Runs invocations `0..n` (the kernel ignores the rest of the last workgroup) with the
    /// immediates `prm`.
    fn run(&self, buffers: &mut [&mut Buffer], prm: &[u32], n: u32) {
        self.device.dispatch(&self.pipeline, buffers, bytemuck::cast_slice(prm), [n.div_ceil(64), 1, 1]).unwrap();
    }
}

/// The first `n` words of `b`.
fn download(b: &Buffer, n: usize) -> Vec<u32> {
    b.as_slice::<u32>()[..n].to_vec()
}

/// The list demo's workload: segment sums over a list of `Box`ed nodes.
struct ListSums<'a> {
    s: SegmentSums,
    plain: &'a Plain<'a>,
}

/// The explicit list kernel: invocation `i` sums `values[i * seg..]`, `seg` values.
const LIST_SUMS: &str = "struct P { seg: u32, n: u32 }
var<immediate> prm: P;
@group(0) @binding(0) var<storage, read> values: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn sums(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= prm.n) { return; }
    var s = 0u;
    let start = g.x * prm.seg;
    let end = min(start + prm.seg, arrayLength(&values));
    for (var i = start; i < end; i++) { s += values[i]; }
    out[g.x] = s;
}";

impl EndToEnd for ListSums<'_> {
    fn unimem(&mut self) -> Launches {
        self.s.launch().unwrap().into()
    }

    fn unimem_result(&self) -> Vec<u32> {
        self.s.out.clone()
    }

    fn explicit(&self) -> (Duration, Vec<u32>) {
        let start = Instant::now();
        let values: Vec<u32> = self.s.list.iter().map(|n| n.value).collect();
        let mut vbuf = self.plain.upload(&values);
        let n = self.s.starts.len() as u32;
        let mut obuf = self.plain.output(n);
        self.plain.run(&mut [&mut vbuf, &mut obuf], &[self.s.seg, n], n);
        let out = download(&obuf, n as usize);
        (start.elapsed(), out)
    }

    fn change(&mut self) {
        self.s.mutate(100_003);
    }
}

/// End to end, the list demo's workload (1M `Box`ed nodes, 8192 segments summed) against a
/// hand-written explicit version: walk the list on the CPU into an array, upload it, run a
/// plain kernel over the array, download the sums. First launch on a fresh list (cold: the
/// list migrates), and a repeated launch after the CPU changed 10 nodes.
fn list_end_to_end(device: &Device) {
    let plain = Plain::new(device, LIST_SUMS, "sums");
    compare("list sum (1M nodes, 8192 segments)", "10 changed nodes", 5, || ListSums {
        s: SegmentSums::new(1_000_000, 8192).unwrap(),
        plain: &plain,
    });
    list_floor(device, &plain);
}

/// The raw chase: invocation `i` sums `seg` nodes from node `starts[i]` of `nodes`, where a
/// node is two `vec2<u32>`: its value, and the index of the next node (`NONE`: the end).
const RAW_LIST_CHASE: &str = "struct P { seg: u32, n: u32 }
var<immediate> prm: P;
@group(0) @binding(0) var<storage, read> nodes: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> starts: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn chase(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= prm.n) { return; }
    var s = 0u;
    var i = starts[g.x];
    for (var k = 0u; k < prm.seg && i != 0xffffffffu; k++) {
        s += nodes[2u * i].x;
        i = nodes[2u * i + 1u].x;
    }
    out[g.x] = s;
}";

/// The device-side floor of the list workload: the same walk as the unimem kernel (two
/// loads per node, each on the chain of the last) over the same nodes in the same memory
/// order, copied into a plain buffer, with no translation; against a warm unimem launch and
/// the explicit version's dispatch alone, interleaved. The explicit version walks the list on
/// the CPU instead (its flatten step), which is why it wins on lavapipe.
fn list_floor(device: &Device, plain: &Plain<'_>) {
    let s = SegmentSums::new(1_000_000, 8192).unwrap();
    let n = s.starts.len() as u32;
    // Node k of the copy is the node at the k-th lowest address, as in the heap.
    let mut addrs: Vec<u64> = s.list.iter().map(|node| node as *const _ as u64).collect();
    addrs.sort_unstable();
    let slot = |p: u64| addrs.binary_search(&p).unwrap() as u32;
    let mut nodes = vec![0u32; addrs.len() * 4];
    for node in s.list.iter() {
        let k = slot(node as *const _ as u64) as usize;
        nodes[4 * k] = node.value;
        nodes[4 * k + 2] = node.next.as_deref().map_or(u32::MAX, |m| slot(m as *const _ as u64));
    }
    let starts: Vec<u32> = s.starts.iter().map(|&p| slot(p)).collect();
    let (raw, _) = raw_pipeline(device, RAW_LIST_CHASE, "chase");
    let mut nb = plain.upload(&nodes);
    let mut sb = plain.upload(&starts);
    let mut ob = plain.output(n);
    let values: Vec<u32> = s.list.iter().map(|node| node.value).collect();
    let mut vb = plain.upload(&values);
    let mut eb = plain.output(n);
    let mut s = s;
    s.launch().unwrap();
    let (mut ours, mut floor, mut explicit) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        s.launch().unwrap();
        ours.push(t.elapsed());
        let t = Instant::now();
        device.dispatch(&raw, &mut [&mut nb, &mut sb, &mut ob], bytemuck::cast_slice(&[s.seg, n]), [n.div_ceil(64), 1, 1]).unwrap();
        floor.push(t.elapsed());
        let t = Instant::now();
        plain.run(&mut [&mut vb, &mut eb], &[s.seg, n], n);
        explicit.push(t.elapsed());
    }
    assert_eq!(download(&ob, n as usize), s.out, "the raw chase and the unimem kernel differ");
    let ms = |v: Vec<Duration>| median(v).as_secs_f64() * 1e3;
    println!(
        "  device floor (warm, {ROUNDS} rounds interleaved, medians): unimem launch {:.2} ms, raw chase over the same nodes without translation {:.2} ms, explicit dispatch over the flat array {:.2} ms",
        ms(ours),
        ms(floor),
        ms(explicit)
    );
}

/// A binary search tree flattened in arrays: node `i` has `keys[i]`, `values[i]` and children
/// `left[i]`, `right[i]` (indices, `u32::MAX` for none); the root is node 0.
#[derive(Default)]
struct FlatTree {
    keys: Vec<u32>,
    values: Vec<u32>,
    left: Vec<u32>,
    right: Vec<u32>,
}

impl FlatTree {
    /// Walks the tree from `root` (preorder, with a stack).
    fn new(root: Option<&Tree>) -> FlatTree {
        let mut f = FlatTree::default();
        let mut stack = Vec::new();
        if let Some(r) = root {
            stack.push((r, f.push(r)));
        }
        while let Some((node, i)) = stack.pop() {
            if let Some(l) = node.left.as_deref() {
                f.left[i] = f.push(l) as u32;
                stack.push((l, f.left[i] as usize));
            }
            if let Some(r) = node.right.as_deref() {
                f.right[i] = f.push(r) as u32;
                stack.push((r, f.right[i] as usize));
            }
        }
        f
    }

    /// Appends `node` without children; its index.
    fn push(&mut self, node: &Tree) -> usize {
        self.keys.push(node.key);
        self.values.push(node.value);
        self.left.push(u32::MAX);
        self.right.push(u32::MAX);
        self.keys.len() - 1
    }

    /// The root's index (`u32::MAX` when empty).
    fn root(&self) -> u32 {
        if self.keys.is_empty() { u32::MAX } else { 0 }
    }
}

/// The explicit BST kernel: invocation `i` looks `queries[i]` up from node `root` and writes
/// its value (or `u32::MAX`), as `bst::LOOKUP` does on the pointers.
const BST_LOOKUP: &str = "struct P { root: u32, n: u32 }
var<immediate> prm: P;
@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> values: array<u32>;
@group(0) @binding(2) var<storage, read> left: array<u32>;
@group(0) @binding(3) var<storage, read> right: array<u32>;
@group(0) @binding(4) var<storage, read> queries: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64) fn lookup(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= prm.n) { return; }
    let key = queries[g.x];
    var i = prm.root;
    var value = 0xffffffffu;
    while (i != 0xffffffffu) {
        let k = keys[i];
        if (k == key) {
            value = values[i];
            break;
        }
        if (key < k) { i = left[i]; } else { i = right[i]; }
    }
    out[g.x] = value;
}";

/// The BST sample's workload: lookups in a tree of `Box`ed nodes.
struct TreeLookups<'a> {
    l: Lookups,
    plain: &'a Plain<'a>,
}

impl EndToEnd for TreeLookups<'_> {
    fn unimem(&mut self) -> Launches {
        self.l.launch().unwrap().into()
    }

    fn unimem_result(&self) -> Vec<u32> {
        self.l.out.clone()
    }

    fn explicit(&self) -> (Duration, Vec<u32>) {
        let start = Instant::now();
        let f = FlatTree::new(self.l.tree.root());
        let queries = &self.l.keys;
        let mut bufs = [&f.keys, &f.values, &f.left, &f.right, queries].map(|a| self.plain.upload(a));
        let n = queries.len() as u32;
        let mut out = self.plain.output(n);
        let [k, v, l, r, q] = &mut bufs;
        self.plain.run(&mut [k, v, l, r, q, &mut out], &[f.root(), n], n);
        let out = download(&out, n as usize);
        (start.elapsed(), out)
    }

    /// As the demo: changes 10 values; as the test: inserts 10 keys that were looked up absent.
    fn change(&mut self) {
        let (nodes, lookups) = (self.l.tree.len(), self.l.keys.len());
        for i in (0..nodes).step_by(nodes / 10 + 1) {
            self.l.tree.insert(key(i), 7);
        }
        for j in (7..lookups).step_by(8 * (lookups / 80).max(1)) {
            self.l.tree.insert(key(nodes + j), 424_242);
        }
    }
}

/// End to end, the BST demo's workload (1M `Box`ed nodes, 100k lookups) against an explicit
/// version: flatten the tree into index arrays, upload them with the keys, look up by index,
/// download. First launch on a fresh tree and after 10 changed values and 10 inserted keys.
fn bst_end_to_end(device: &Device) {
    let plain = Plain::new(device, BST_LOOKUP, "lookup");
    compare("BST lookup (1M nodes, 100k lookups)", "10 changed values, 10 inserted keys", 5, || TreeLookups {
        l: Lookups::new(1_000_000, 100_000).unwrap(),
        plain: &plain,
    });
}

/// The explicit BFS level: as `bfs::BFS_STEP` (invocation `i` takes the `i`-th vertex of
/// the frontier, claims its unreached neighbours with an atomic min and appends those it
/// claimed to the next frontier), on CSR arrays. It tests a neighbour's level with a plain
/// load before its atomic, which skips the atomic for vertices already reached: 9.0-9.2 ms
/// a search against 9.7-10.9 ms without the test (three runs each, 2026-11-21). `BFS_STEP`
/// may not (docs/MEMORY-MODEL.md rule 4: a replayed invocation could see its own claim), and
/// in place it is faster without it anyway (10.8-11.8 ms in three runs, against 12.4 and
/// 17.5 ms in two with the test).
const BFS_STEP_CSR: &str = "struct P { level: u32, n: u32 }
var<immediate> prm: P;
@group(0) @binding(0) var<storage, read> offsets: array<u32>;
@group(0) @binding(1) var<storage, read> targets: array<u32>;
@group(0) @binding(2) var<storage, read_write> levels: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read> frontier: array<u32>;
@group(0) @binding(4) var<storage, read_write> next: array<u32>;
@group(0) @binding(5) var<storage, read_write> count: array<atomic<u32>>;
@compute @workgroup_size(64) fn bfs_step(@builtin(global_invocation_id) g: vec3<u32>) {
    if (g.x >= prm.n) { return; }
    let v = frontier[g.x];
    for (var i = offsets[v]; i < offsets[v + 1u]; i++) {
        let u = targets[i];
        if (atomicLoad(&levels[u]) == 0xffffffffu && atomicMin(&levels[u], prm.level + 1u) == 0xffffffffu) {
            next[atomicAdd(&count[0], 1u)] = u;
        }
    }
}";

/// The search's source vertex.
const SOURCE: usize = 0;

/// The BFS sample's workload: a search over adjacency lists in boxed slices.
struct Search<'a> {
    g: Graph,
    plain: &'a Plain<'a>,
}

impl Search<'_> {
    /// The adjacency lists as CSR: `targets[offsets[v]..offsets[v + 1]]` are `v`'s neighbours.
    fn csr(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.g.vertices.len();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut targets = Vec::new();
        offsets.push(0);
        for v in 0..n {
            targets.extend_from_slice(self.g.neighbours(v));
            offsets.push(targets.len() as u32);
        }
        (offsets, targets)
    }
}

impl EndToEnd for Search<'_> {
    fn unimem(&mut self) -> Launches {
        let before = unimem::stats();
        gpu_bfs(&mut self.g, SOURCE).unwrap();
        Launches::since(&before)
    }

    fn unimem_result(&self) -> Vec<u32> {
        self.g.levels()
    }

    /// Flatten, upload, one dispatch per level over its frontier until the next is empty,
    /// download the levels.
    fn explicit(&self) -> (Duration, Vec<u32>) {
        let start = Instant::now();
        let (offsets, targets) = self.csr();
        let n = self.g.vertices.len();
        let mut levels = vec![UNREACHED; n];
        levels[SOURCE] = 0;
        let [mut o, mut t, mut l, mut c] = [&offsets[..], &targets, &levels, &[0]].map(|a| self.plain.upload(a));
        let (mut frontier, mut next) = (self.plain.output(n as u32), self.plain.output(n as u32));
        frontier.as_mut_slice::<u32>()[0] = SOURCE as u32;
        let mut len = 1;
        for level in 0.. {
            c.as_mut_slice::<u32>()[0] = 0;
            self.plain.run(&mut [&mut o, &mut t, &mut l, &mut frontier, &mut next, &mut c], &[level, len], len);
            len = c.as_slice::<u32>()[0];
            if len == 0 {
                break;
            }
            std::mem::swap(&mut frontier, &mut next);
        }
        let out = download(&l, n);
        (start.elapsed(), out)
    }

    /// Adds 10 edges between vertices spread over the graph.
    fn change(&mut self) {
        let n = self.g.vertices.len();
        for k in 0..10 {
            let from = k * n / 10 + 1;
            self.g.add_edge(from, ((from + n / 2 + 7 * k) % n) as u32);
        }
    }

    fn check(&self, result: &[u32]) {
        assert!(result == self.g.cpu_levels(SOURCE), "BFS levels differ from the CPU's");
    }
}

/// End to end, the BFS demo's workload (200k vertices, 4 out-edges each, in boxed slices)
/// against an explicit version: flatten into CSR arrays, upload, one dispatch per level
/// over its frontier, download the levels. First search on a fresh graph and after 10 added edges.
fn bfs_end_to_end(device: &Device) {
    let plain = Plain::new(device, BFS_STEP_CSR, "bfs_step");
    // `gpu_bfs` makes its kernel on each call; compile it now, as the other cases do before
    // timing (the pipeline is cached).
    Kernel::new(BFS_STEP, "bfs_step").unwrap();
    compare("BFS (200k vertices, 800k edges)", "10 added edges", 5, || Search { g: Graph::random(200_000, 3), plain: &plain });
}
