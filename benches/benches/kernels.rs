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
//! - **list sum end to end** (the demo's workload) vs an explicit flatten-upload-run-download
//!   version: first launch (goal <= 1.0x) and after a small CPU change (goal <= 0.3x).
//!
//!     cargo bench -p unimem-benches --bench kernels
//!
//! Without a Vulkan device it prints a notice and exits (with `UNIMEM_REQUIRE_DEVICE=1` it
//! fails), by the rule of `unimem::device::test_support`.

use std::time::{Duration, Instant};

use unimem::device::test_support::runtime_or_skip;
use unimem::device::{ComputePipeline, Device};
use unimem::kernel::compile_wgsl_named;
use unimem::{Args, Kernel};

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

fn main() {
    let Some((_, dev)) = runtime_or_skip("kernels bench", unimem::vulkan_runtime()) else { return };
    let device = dev.device();
    println!("device: {}", device.report().name);

    // Empty launch vs raw dispatch.
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

    // Pointer chase: accessors on host pointers vs an index array.
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
    println!("pointer chase, first launch: {first:?}");
    let (mut acc_t, mut plain_t) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = chase.launch(CHASE_INVOCATIONS, &chase_args).unwrap();
        acc_t.push(t.elapsed());
        assert_eq!(r.device_faults, 0, "warm launch");
        let t = Instant::now();
        device
            .dispatch(&raw_chase, &mut [&mut next_buf, &mut out_buf], &CHASE_STEPS.to_ne_bytes(), groups)
            .unwrap();
        plain_t.push(t.elapsed());
    }
    // Both walked the same cycle.
    for (i, (&p, &idx)) in out.iter().zip(out_buf.as_slice::<u32>()).enumerate() {
        assert_eq!(p, base + u64::from(idx) * 8, "invocation {i}");
    }
    let steps = f64::from(CHASE_INVOCATIONS) * f64::from(CHASE_STEPS);
    let (a, p) = (median(acc_t), median(plain_t));
    println!(
        "pointer chase ({} x {} steps): accessors {:.1} M steps/s ({:.2} ms), index array {:.1} M steps/s ({:.2} ms), ratio {:.2} (goal >= 0.75)",
        CHASE_INVOCATIONS,
        CHASE_STEPS,
        steps / a.as_secs_f64() / 1e6,
        a.as_secs_f64() * 1e3,
        steps / p.as_secs_f64() / 1e6,
        p.as_secs_f64() * 1e3,
        p.as_secs_f64() / a.as_secs_f64()
    );

    list_end_to_end(device);
}

/// End to end, the list demo's workload (1M `Box`ed nodes, 8192 segments summed) against a
/// hand-written explicit version: walk the list on the CPU into an array, upload it, run a
/// plain kernel over the array, download the sums. First launch on a fresh list (cold: the
/// list migrates), and a repeated launch after the CPU changed 10 nodes.
fn list_end_to_end(device: &Device) {
    use unimem_samples::list::SegmentSums;
    const NODES: usize = 1_000_000;
    const SEGMENTS: usize = 8192;
    let (plain, _) = raw_pipeline(
        device,
        "struct P { seg: u32, n: u32 }
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
}",
        "sums",
    );
    // The explicit version: flatten, upload, dispatch, download.
    let explicit = |s: &SegmentSums| -> (Duration, Vec<u32>) {
        let t = Instant::now();
        let values: Vec<u32> = s.list.iter().map(|n| n.value).collect();
        let mut vbuf = device.create_host_buffer((values.len() * 4) as u64).unwrap();
        vbuf.as_mut_slice::<u32>().copy_from_slice(&values);
        let n = s.starts.len() as u32;
        let mut obuf = device.create_host_buffer(u64::from(n) * 4).unwrap();
        let prm = [s.seg, n];
        device
            .dispatch(&plain, &mut [&mut vbuf, &mut obuf], bytemuck::cast_slice(&prm), [n.div_ceil(64), 1, 1])
            .unwrap();
        let out = obuf.as_slice::<u32>().to_vec();
        (t.elapsed(), out)
    };
    let (mut cold_u, mut cold_e, mut warm_u, mut warm_e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut faults = (0, 0);
    for _ in 0..5 {
        let mut s = SegmentSums::new(NODES, SEGMENTS).unwrap();
        let t = Instant::now();
        let r = s.launch().unwrap();
        cold_u.push(t.elapsed());
        let (te, out) = explicit(&s);
        cold_e.push(te);
        assert_eq!(out, s.out, "explicit and unimem agree");
        s.mutate(100_003);
        let t = Instant::now();
        let r2 = s.launch().unwrap();
        warm_u.push(t.elapsed());
        let (te, out) = explicit(&s);
        warm_e.push(te);
        assert_eq!(out, s.out);
        faults = (r.device_faults, r2.device_faults);
    }
    let (cu, ce, wu, we) = (median(cold_u), median(cold_e), median(warm_u), median(warm_e));
    println!(
        "list sum end to end (1M nodes): first launch {:.2} ms vs explicit {:.2} ms = {:.2}x (goal <= 1.0x); after 10 changed nodes {:.2} ms vs explicit {:.2} ms = {:.2}x (goal <= 0.3x); device faults cold {} warm {}",
        cu.as_secs_f64() * 1e3,
        ce.as_secs_f64() * 1e3,
        cu.as_secs_f64() / ce.as_secs_f64(),
        wu.as_secs_f64() * 1e3,
        we.as_secs_f64() * 1e3,
        wu.as_secs_f64() / we.as_secs_f64(),
        faults.0,
        faults.1
    );
}
