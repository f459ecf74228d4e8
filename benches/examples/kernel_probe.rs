//! Per-invocation cost of the prelude, by kernel shape: `kernel_probe [N [SHAPE]]` (default
//! 200 000 invocations, 1 000 000 gives steadier numbers; SHAPE: only the shapes whose name
//! contains it). Each shape is launched warm (no device
//! faults) 31 times, interleaved with a raw dispatch of a plain kernel that loads one word per
//! invocation; prints the first-quartile time of each. On lavapipe every line of the prelude
//! costs every invocation (both sides of each branch run under a lane mask), so this is how
//! to see what a prelude change costs. See docs/PERFORMANCE.md.
use std::time::{Duration, Instant};
use unimem::device::test_support::runtime_or_skip;
use unimem::kernel::compile_wgsl_named;
use unimem::{Args, Kernel};

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 4].as_secs_f64() * 1e3
}

fn main() {
    let n: u32 = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(200_000);
    let Some((_, dev)) = runtime_or_skip("probe", unimem::vulkan_runtime()) else { return };
    let device = dev.device();
    let data: Vec<u32> = (0..n).collect();
    let out: Vec<u32> = vec![0; n as usize];
    // A cycle of pointers for the chase shape (stride coprime to n).
    let chain: Vec<u64> = vec![0; n as usize];
    let base = chain.as_ptr() as u64;
    // SAFETY: writes within `chain`, which nothing else references yet.
    let cw = unsafe { std::slice::from_raw_parts_mut(chain.as_ptr() as *mut u64, n as usize) };
    for (i, w) in cw.iter_mut().enumerate() {
        *w = base + ((i as u64 * 7919 + 1) % u64::from(n)) * 8;
    }
    let wide: Vec<u64> = vec![0; n as usize];
    let args = Args::new().ptr(&data[..]).ptr(&out[..]).ptr(&chain[..]).ptr(&wide[..]);
    let shapes = [
        ("empty", "fn k(id: u32) { }"),
        ("arg only", "fn k(id: u32) { let p = unimem_arg_ptr(0u); }"),
        ("one load", "fn k(id: u32) { let v = unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu); }"),
        ("u64 load", "fn k(id: u32) { let v = unimem_load_u64(unimem_arg_ptr(0u) + u64(id / 2u) * 8lu); }"),
        ("load+cond store", "fn k(id: u32) { let v = unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu); if (v == 0xffffffffu) { unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, v); } }"),
        ("load+store", "fn k(id: u32) { let v = unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu); unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, v + 1u); }"),
        ("chase 16 + store", "fn k(id: u32) { var p = unimem_arg_ptr(4u) + u64(id) * 8lu; for (var k = 0u; k < 16u; k++) { p = unimem_load_ptr(p); } unimem_store_u64(unimem_arg_ptr(6u) + u64(id) * 8lu, p); }"),
        ("load+atomic", "fn k(id: u32) { let v = unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu); if (v == 0xffffffffu) { unimem_atomic_add_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, v); } }"),
    ];
    let raw = compile_wgsl_named(
        "raw",
        "@group(0) @binding(0) var<storage, read> d: array<u32>;
@group(0) @binding(1) var<storage, read_write> o: array<u32>;
@compute @workgroup_size(64) fn k(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x < arrayLength(&d)) { let v = d[g.x]; if (v == 0xffffffffu) { o[g.x] = v; } } }",
        "k",
    )
    .unwrap();
    let raw_p = device.create_pipeline(&raw).unwrap();
    let mut b0 = device.create_host_buffer(u64::from(n) * 4).unwrap();
    let mut b1 = device.create_host_buffer(u64::from(n) * 4).unwrap();
    let only = std::env::args().nth(2).unwrap_or_default();
    let kernels: Vec<(&str, Kernel)> = shapes.iter().filter(|(name, _)| name.contains(only.as_str())).map(|(name, src)| (*name, Kernel::new(src, "k").unwrap())).collect();
    for (_, k) in &kernels {
        k.launch(n, &args).unwrap();
        k.launch(n, &args).unwrap();
    }
    let groups = [n.div_ceil(64), 1, 1];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kernels.len() + 1];
    for _ in 0..31 {
        for (i, (_, k)) in kernels.iter().enumerate() {
            let t = Instant::now();
            let r = k.launch(n, &args).unwrap();
            times[i].push(t.elapsed());
            assert_eq!(r.device_faults, 0);
        }
        let t = Instant::now();
        device.dispatch(&raw_p, &mut [&mut b0, &mut b1], &[], groups).unwrap();
        times[kernels.len()].push(t.elapsed());
    }
    for (i, (name, _)) in kernels.iter().enumerate() {
        println!("{name:>16}: {:.3} ms", median(times[i].clone()));
    }
    println!("{:>16}: {:.3} ms", "raw load", median(times[kernels.len()].clone()));
}
