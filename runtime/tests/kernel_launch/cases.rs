//! The `kernel_launch` cases, shared by the `kernel_launch` (the device's default mode: in
//! place on devices that share the CPU's memory, through windows while the heap is small),
//! `kernel_launch_addresses` (in place at the heap's addresses,
//! `UNIMEM_IN_PLACE_ACCESS=addresses`) and `kernel_launch_migrating` (blocks migrating into
//! device frames, `UNIMEM_IN_PLACE=off`) test binaries, each setting `MIGRATING` and
//! `ACCESS`. Kernels on shared pointers, end to end on the default device: heap data
//! built with the global allocator is read and written by WGSL kernels through the prelude's
//! accessors; results are checked on the CPU; bad pointers and runaway loops end the launch
//! with an error naming kernel, invocation and address, and the runtime stays usable.
//! Device-test rule of `unimem::device::test_support`.

#![allow(clippy::useless_vec)] // kernels need heap (managed) memory, not stack arrays

use std::sync::MutexGuard;

use crate::kernel_common::{build, free, kernel, Node};
use unimem::Args;

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

/// Serialises the tests, in the binary's mode (set before the runtime starts).
fn serial() -> MutexGuard<'static, ()> {
    if let Some(access) = crate::ACCESS {
        std::env::set_var("UNIMEM_IN_PLACE_ACCESS", access);
    }
    if crate::MIGRATING {
        crate::kernel_common::serial_migrating()
    } else {
        crate::kernel_common::serial()
    }
}

const DOUBLE: &str = "
fn double(id: u32) {
    let src = unimem_arg_ptr(0u);
    let dst = unimem_arg_ptr(2u);
    let v = unimem_load_u32(src + u64(id) * 4lu);
    unimem_store_u32(dst + u64(id) * 4lu, v * 2u + 1u);
}
";

#[test]
fn a_kernel_reads_and_writes_vecs() {
    let _s = serial();
    let Some(k) = kernel("a_kernel_reads_and_writes_vecs", DOUBLE, "double") else { return };
    let n = 100_000u32;
    let src: Vec<u32> = (0..n).map(|i| i * 3).collect();
    let mut dst = vec![0u32; n as usize];
    let r = k.launch(n, &Args::new().ptr(&src[..]).ptr(&dst[..])).unwrap();
    assert!(r.rounds >= 1);
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    if crate::MIGRATING {
        assert!(!dev.in_place() && unimem::stats().bytes_to_device > 0, "this binary migrates");
    }
    // In place, the access the binary asks for (a small heap: windows by default).
    if dev.in_place() {
        assert_eq!(dev.in_place_addressed(), crate::ACCESS == Some("addresses"), "in place at addresses");
    }
    for i in 0..n as usize {
        assert_eq!(dst[i], src[i] * 2 + 1, "dst[{i}]");
    }
    // Again, after the CPU changed a few inputs.
    for i in (0..n as usize).step_by(9973) {
        dst[i] = 0;
    }
    let mut src = src;
    src[5] = 1000;
    k.launch(n, &Args::new().ptr(&src[..]).ptr(&dst[..])).unwrap();
    assert_eq!(dst[5], 2001);
    assert_eq!(dst[9973], src[9973] * 2 + 1);
}

const SUM_LIST: &str = "
fn sum_list(id: u32) {
    let starts = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    let seg = unimem_arg_u32(4u);
    var node = unimem_load_ptr(starts + u64(id) * 8lu);
    var total = 0u;
    var left = seg;
    while (left > 0u && node != 0lu) {
        total += unimem_load_u32(node);
        node = unimem_load_ptr(node + 8lu);
        left -= 1u;
    }
    unimem_store_u32(out + u64(id) * 4lu, total);
}
";

#[test]
fn a_kernel_walks_a_boxed_list() {
    let _s = serial();
    let Some(k) = kernel("a_kernel_walks_a_boxed_list", SUM_LIST, "sum_list") else { return };
    let (len, seg) = (50_000usize, 100usize);
    let nodes = build(len, |i| i as u32 % 1000);
    let starts: Vec<u64> = nodes.iter().step_by(seg).map(|&p| p as u64).collect();
    let mut out = vec![0u32; starts.len()];
    let r = k
        .launch(starts.len() as u32, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(seg as u32))
        .unwrap();
    eprintln!("{r:?}");
    for (i, &s) in out.iter().enumerate() {
        let expect: u32 = (i * seg..((i + 1) * seg).min(len)).map(|j| j as u32 % 1000).sum();
        assert_eq!(s, expect, "segment {i}");
    }
    out.iter_mut().for_each(|x| *x = 0);
    let r2 = k
        .launch(starts.len() as u32, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(seg as u32))
        .unwrap();
    eprintln!("{r2:?}");
    assert!(r2.device_faults <= r.device_faults);
    free(nodes);
}

const CHUNK_SUMS: &str = "
fn chunk_sums(id: u32) {
    // Chunk id of 1024 words, in the vector table's entry id / chunks_per_vec.
    let per = unimem_arg_u32(4u);
    let data = unimem_load_ptr(unimem_arg_ptr(0u) + u64(id / per) * 8lu) + u64(id % per) * 4096lu;
    var s = 0u;
    for (var k = 0u; k < 1024u; k++) {
        s += unimem_load_u32(data + u64(k) * 4lu);
    }
    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, s);
    unimem_store_u32(data, s);
}
";

#[test]
fn data_spread_over_several_frame_buffers_is_read_and_written_exactly() {
    // Frames are handed out lowest buffer first and a launch binds only the buffers in use,
    // switching pipelines when a round's faults bring in blocks beyond them: 4 vectors of
    // 72 MiB (288 MiB, three of lavapipe's 128 MiB frame buffers), reached only through a
    // table of pointers, so that they arrive by device faults.
    let _s = serial();
    let Some(k) = kernel("data_spread_over_several_frame_buffers", CHUNK_SUMS, "chunk_sums") else { return };
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    let per_vec = 72 << 8; // chunks of 4 KiB per vector
    let vecs: Vec<Vec<u32>> = (0..4u32).map(|v| (0..per_vec * 1024).map(|i| i ^ (v << 20)).collect()).collect();
    let table: Vec<u64> = vecs.iter().map(|v| v.as_ptr() as u64).collect();
    let n = 4 * per_vec;
    let out = vec![0u32; n as usize];
    let r = k.launch(n, &Args::new().ptr(&table[..]).ptr(&out[..]).u32(per_vec)).unwrap();
    eprintln!("{r:?}");
    let bytes = 4 * per_vec as usize * 4096;
    if let Some(w) = dev.window_bytes() {
        // In place the heap's windows take the part of frame buffers.
        let windows = (unimem_alloc::managed_committed() as u64).div_ceil(w);
        assert!(windows * w >= bytes as u64 && windows >= 3, "{windows} windows of {w} bytes: the data should span them");
    } else {
        assert!(
            dev.buffers_in_use() as u64 * dev.geometry().frames_per_buffer as u64 * dev.geometry().block_size as u64 >= bytes as u64,
            "{} frame buffers in use: the data should span them",
            dev.buffers_in_use()
        );
    }
    if dev.in_place() {
        // Mapping copies nothing: the launch maps every live block before its dispatch.
        let blocks = (bytes / dev.geometry().block_size) as u64;
        assert!(r.device_faults == 0 && r.prefetched_blocks >= blocks, "the vectors are mapped up front: {r:?}");
    } else {
        assert!(r.rounds >= 2 && r.device_faults > 0, "the vectors arrive by faults: {r:?}");
    }
    for (v, data) in vecs.iter().enumerate() {
        for c in 0..per_vec as usize {
            let expect = (0..1024u32).fold(0u32, |s, k| s.wrapping_add((c as u32 * 1024 + k) ^ ((v as u32) << 20)));
            let id = v * per_vec as usize + c;
            assert_eq!(out[id], expect, "chunk {id}");
            assert_eq!(data[c * 1024], expect, "vector {v} word {}", c * 1024);
            assert_eq!(data[c * 1024 + 1], (c as u32 * 1024 + 1) ^ ((v as u32) << 20));
        }
    }
}

const CHASE: &str = "
fn chase(id: u32) {
    var p = unimem_arg_ptr(0u);
    var s = 0u;
    loop {
        if (p == 0lu || !unimem_running()) { break; }
        s += unimem_load_u32(p);
        p = unimem_load_ptr(p + 8lu);
    }
    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, s);
}
";

#[test]
fn bad_pointers_and_runaway_loops_are_errors_and_the_runtime_stays_usable() {
    let _s = serial();
    let test = "bad_pointers_and_runaway_loops_are_errors_and_the_runtime_stays_usable";
    let Some(k) = kernel(test, CHASE, "chase") else { return };
    let out = vec![0u32; 4];
    // A pointer outside the managed heap (a stack address).
    let on_stack = Node { value: 1, next: std::ptr::null() };
    let addr = &on_stack as *const Node as u64;
    let e = k.launch(1, &Args::new().raw_ptr(addr).ptr(&out[..])).unwrap_err().to_string();
    assert!(e.contains("kernel `chase`") && e.contains("invocation 0"), "{e}");
    assert!(e.contains(&format!("{addr:#x}")) && e.contains("outside unimem's managed heap"), "{e}");
    // The access that stopped it, in the kernel's own source.
    assert!(e.contains(" at line 7 of its source (`unimem_load_u32(p)`)"), "{e}");
    // The same access in a helper: the message names the helper and where the kernel calls it.
    let helper = "fn value_at(p: u64) -> u32 {\n    return unimem_load_u32(p);\n}\n\nfn first(id: u32) {\n    unimem_store_u32(unimem_arg_ptr(2u), value_at(unimem_arg_ptr(0u)));\n}\n";
    let h = kernel(test, helper, "first").unwrap();
    let e = h.launch(1, &Args::new().raw_ptr(addr).ptr(&out[..])).unwrap_err().to_string();
    assert!(e.contains(" at line 2 of its source (`unimem_load_u32(p)`), in `fn value_at`, called at line 6"), "{e}");
    // A list whose second node points to freed memory (a whole freed large allocation).
    let big: Vec<u64> = vec![0; 1 << 20];
    let freed = big.as_ptr() as u64 + 4096;
    drop(big);
    let tail = Box::new(Node { value: 5, next: freed as *const Node });
    let head = Box::new(Node { value: 1, next: &*tail });
    let e = k.launch(1, &Args::new().ptr(&*head).ptr(&out[..])).unwrap_err().to_string();
    assert!(e.contains(&format!("{freed:#x}")) && e.contains("no live allocation"), "{e}");
    assert!(e.contains(" at line 7 of its source (`unimem_load_u32(p)`)"), "{e}");
    // A cycle: runaway.
    let mut a = Box::new(Node { value: 1, next: std::ptr::null() });
    let b = Box::new(Node { value: 2, next: &*a });
    a.next = &*b;
    k.set_max_steps(30_000);
    let e = k.launch(1, &Args::new().ptr(&*a).ptr(&out[..])).unwrap_err().to_string();
    assert!(e.contains("runaway") && e.contains("invocation 0"), "{e}");
    assert!(e.contains(" at line 7 of its source") || e.contains(" at line 8 of its source (`unimem_load_ptr(p + 8lu)`)"), "{e}");
    // Arguments beyond the argument buffer (4 KiB, the header included): refused, saying so.
    let mut big = Args::new().ptr(&*a).ptr(&out[..]);
    for i in 0..1000 {
        big = big.u32(i);
    }
    let launches = unimem::stats().launches;
    let e = k.launch(1, &big).unwrap_err().to_string();
    assert!(e.contains("kernel `chase`") && e.contains("bytes of arguments; at most 3968"), "{e}");
    // Raw bytes (the C API) are measured as passed, not rounded up to words.
    let e = k.launch_bytes(1, &[0u8; 3969]).unwrap_err().to_string();
    assert!(e.contains("kernel `chase`: 3969 bytes of arguments; at most 3968"), "{e}");
    k.launch(0, &Args::new()).unwrap();
    assert_eq!(unimem::stats().launches, launches, "refused and empty launches run nothing and are not counted");
    // Still usable: a good list.
    a.next = std::ptr::null();
    let mut out = vec![0u32; 4];
    k.launch(2, &Args::new().ptr(&*b).ptr(&out[..])).unwrap();
    assert_eq!(&out[..2], &[3, 3]);
    out[0] = 9;
    assert_eq!(out[0], 9);
    let stats = unimem::stats();
    assert!(stats.launches >= 4, "{stats:?}");
}

/// Migrating, a cold launch over a list that only the list's own pointers reach (its head
/// passed as a plain 64-bit value, 15 blocks of nodes) runs in one round without device
/// faults: the launch finds the blocks before the dispatch (`kernel/discover.rs`); with
/// `UNIMEM_DISCOVER=off` the same launch on a fresh list faults its way through. In place
/// every live block is mapped before the dispatch: no faults either way.
#[test]
fn a_cold_launch_finds_the_blocks_its_arguments_data_points_to() {
    let _s = serial();
    let test = "a_cold_launch_finds_the_blocks_its_arguments_data_points_to";
    let Some(k) = kernel(test, CHASE, "chase") else { return };
    k.set_max_steps(1 << 20);
    let len = 60_000usize;
    for discover in ["on", "off"] {
        let nodes = build(len, |i| i as u32 % 7);
        let out = vec![0u32; 1];
        std::env::set_var("UNIMEM_DISCOVER", discover);
        let r = k.launch(1, &Args::new().u64(nodes[0] as u64).ptr(&out[..]));
        std::env::remove_var("UNIMEM_DISCOVER");
        let r = r.unwrap();
        assert_eq!(out[0], (0..len).map(|i| i as u32 % 7).sum::<u32>(), "UNIMEM_DISCOVER={discover}");
        if !crate::MIGRATING || discover == "on" {
            assert!(r.device_faults == 0 && r.rounds == 1, "UNIMEM_DISCOVER={discover}: {r:?}");
        } else {
            assert!(r.device_faults > 0 && r.rounds > 1, "UNIMEM_DISCOVER={discover}: {r:?}");
        }
        if crate::MIGRATING && discover == "on" {
            // The list's blocks, and the output's.
            assert!(r.prefetched_blocks as usize >= len * 16 / 65536, "{r:?}");
        }
        free(nodes);
    }
    // A bad value is an error that names the variable, in place too (where discovery has
    // nothing to do): the launch runs nothing.
    // It is read at every launch, one of no invocations too, and a refused launch is not
    // counted in the statistics' launches (which ran invocations).
    std::env::set_var("UNIMEM_DISCOVER", "sometimes");
    let out = vec![7u32; 1];
    let launches = unimem::stats().launches;
    let r = k.launch(1, &Args::new().u64(0).ptr(&out[..]));
    let empty = k.launch(0, &Args::new().u64(0).ptr(&out[..]));
    std::env::remove_var("UNIMEM_DISCOVER");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("UNIMEM_DISCOVER=\"sometimes\" is not one of on, off"), "{e}");
    assert_eq!(out[0], 7, "a refused launch ran");
    let e = empty.unwrap_err().to_string();
    assert!(e.contains("UNIMEM_DISCOVER=\"sometimes\""), "{e}");
    assert_eq!(unimem::stats().launches, launches, "refused launches are not counted");
}

const WIDE: &str = "
fn wide(id: u32) {
    let src = unimem_arg_ptr(0u) + u64(id) * 8lu + u64(unimem_arg_u32(4u));
    let v = unimem_load_u64(src);
    unimem_store_u64(unimem_arg_ptr(2u) + u64(id) * 8lu, v ^ 0xa5a5a5a55a5a5a5alu);
}
";

#[test]
fn sixty_four_bit_accesses_read_every_word_and_must_be_aligned_to_8() {
    let _s = serial();
    let test = "sixty_four_bit_accesses_read_every_word_and_must_be_aligned_to_8";
    let Some(k) = kernel(test, WIDE, "wide") else { return };
    // Three blocks of 64-bit words (and whatever blocks the Vec straddles): every word, the
    // last of each block and the first of the next included, and both halves of each.
    let n = 3 * 65536 / 8;
    let src: Vec<u64> = (0..n as u64).map(|i| (i << 32) | ((i * 2_654_435_761) & 0xffff_ffff)).collect();
    let out = vec![0u64; n];
    k.launch(n as u32, &Args::new().ptr(&src[..]).ptr(&out[..]).u32(0)).unwrap();
    for (i, (&s, &o)) in src.iter().zip(&out).enumerate() {
        assert_eq!(o, s ^ 0xa5a5_a5a5_5a5a_5a5a, "word {i}");
    }
    // 4-aligned but not 8-aligned: an error naming the address, nothing stored.
    let out = vec![0u64; 2];
    let e = k.launch(1, &Args::new().ptr(&src[..]).ptr(&out[..]).u32(4)).unwrap_err().to_string();
    let addr = src.as_ptr() as u64 + 4;
    assert!(e.contains("kernel `wide`") && e.contains(&format!("{addr:#x}")) && e.contains("8 for the 64-bit"), "{e}");
    assert_eq!(out, [0, 0]);
}

const COUNT: &str = "
fn count(id: u32) {
    let values = unimem_arg_ptr(0u);
    let hist = unimem_arg_ptr(2u);
    let v = unimem_load_u32(values + u64(id) * 4lu);
    let old = unimem_atomic_add_u32(hist + u64(v % 16u) * 4lu, 1u);
    unimem_atomic_max_u32(hist + 64lu, old + 1u);
    unimem_atomic_min_u32(hist + 68lu, v);
    // Read own writes through the store log.
    let scratch = unimem_arg_ptr(4u) + u64(id) * 8lu;
    unimem_store_u32(scratch, v);
    unimem_store_u32(scratch + 4lu, 5u);
    unimem_store_u32(scratch + 4lu, u32(unimem_load_u64(scratch) & 0xfffffffflu) + u32(unimem_load_u64(scratch) >> 32u) - 4u);
}
";

#[test]
fn atomics_and_own_writes() {
    let _s = serial();
    let Some(k) = kernel("atomics_and_own_writes", COUNT, "count") else { return };
    let n = 10_000u32;
    let values: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2_654_435_761) >> 7).collect();
    let mut hist = vec![0u32; 18];
    hist[17] = u32::MAX;
    let scratch = vec![0u32; 2 * n as usize];
    k.launch(n, &Args::new().ptr(&values[..]).ptr(&hist[..]).ptr(&scratch[..])).unwrap();
    let mut expect = [0u32; 16];
    for &v in &values {
        expect[(v % 16) as usize] += 1;
    }
    assert_eq!(&hist[..16], &expect);
    assert_eq!(hist[16], *expect.iter().max().unwrap());
    assert_eq!(hist[17], *values.iter().min().unwrap());
    for i in 0..n as usize {
        assert_eq!((scratch[2 * i], scratch[2 * i + 1]), (values[i], values[i] + 1));
    }
}

const SPIN: &str = "
fn spin(id: u32) {
    let iterations = unimem_arg_u32(2u);
    var x = id + 1u;
    for (var i = 0u; i < iterations; i++) {
        x = x * 1664525u + 1013904223u;
    }
    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, x);
}
";

/// What `SPIN` computes for invocation `id`.
fn spin_cpu(id: u32, iterations: u32) -> u32 {
    (0..iterations).fold(id + 1, |x, _| x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223))
}

/// A loop longer than lavapipe's budget (65535 iterations per invocation, after which it
/// silently cuts loops short) is an error there, not a wrong result; elsewhere it runs.
/// Guarded (the default), the step limit (60 000 on lavapipe) stops it first, by name; the
/// budget is what catches it with `UNIMEM_LOOP_GUARD=off`.
#[test]
fn loops_the_driver_cuts_short_are_errors_not_wrong_results() {
    let _s = serial();
    let test = "loops_the_driver_cuts_short_are_errors_not_wrong_results";
    let n = 100u32;
    let mut out = vec![0u32; n as usize];
    for guard in ["off", "on"] {
        let Some(k) = kernel_with_env(test, SPIN, "spin", "UNIMEM_LOOP_GUARD", guard) else { return };
        // Within the budget and the step limit (guarded, 59 999 iterations enter the body
        // 60 000 times): exact.
        let within = if guard == "on" { 59_999 } else { 60_000 };
        k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(within)).unwrap();
        for id in 0..n {
            assert_eq!(out[id as usize], spin_cpu(id, within), "UNIMEM_LOOP_GUARD={guard}: invocation {id}");
        }
        let r = k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(70_000));
        if unimem::vulkan_runtime().unwrap().1.device().report().name.contains("llvmpipe") {
            let e = r.unwrap_err().to_string();
            let why = if guard == "on" { "than the step limit" } else { "65535 loop iterations" };
            assert!(e.contains("kernel `spin`: invocation 0 ") && e.contains(why), "UNIMEM_LOOP_GUARD={guard}: {e}");
        } else {
            r.unwrap();
            assert_eq!(out[7], spin_cpu(7, 70_000));
        }
        // Still usable.
        k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(10)).unwrap();
        assert_eq!(out[3], spin_cpu(3, 10));
    }
}

/// Every invocation stores `id + 1`; invocation `arg 2` then loops for ever without touching
/// memory (its loop has no exit), and stores again after it (which it never reaches).
const ENDLESS: &str = "
fn endless(id: u32) {
    let out = unimem_arg_ptr(0u) + u64(id) * 4lu;
    unimem_store_u32(out, id + 1u);
    if (id == unimem_arg_u32(2u)) {
        var x = id;
        loop {
            x = x * 3u + 1u;
        }
        unimem_store_u32(out, x);
    }
}
";

/// A kernel created while the environment variable `var` is `value` (read at creation).
fn kernel_with_env(test: &str, src: &str, entry: &str, var: &str, value: &str) -> Option<unimem::Kernel> {
    std::env::set_var(var, value);
    let k = kernel(test, src, entry);
    std::env::remove_var(var);
    k
}

/// A kernel with object checks (`KernelOptions`; `UNIMEM_CHECK_OBJECTS=on` does the same
/// for `Kernel::new`).
fn checked(test: &str, src: &str, entry: &str) -> Option<unimem::Kernel> {
    let options = unimem::KernelOptions { check_objects: true, ..Default::default() };
    unimem::device::test_support::runtime_or_skip(test, unimem::Kernel::with_options(src, entry, options))
}

/// A list node of 320 bytes (a size class no other test uses, so a freed one's slot stays
/// free): `value` at byte 0 and `next` at byte 8, as `Node`.
#[repr(C)]
struct FatNode {
    value: u32,
    next: *const FatNode,
    _pad: [u64; 38],
}

fn fat(value: u32, next: *const FatNode) -> Box<FatNode> {
    Box::new(FatNode { value, next, _pad: [0; 38] })
}

/// With object checks (`UNIMEM_CHECK_OBJECTS=on`) a list node pointing to a freed node whose
/// block still holds live ones ends the launch with an error naming the address and the
/// line; so does a read past the end of a `Vec` into the free slot after it, named as an
/// overrun. Without them (the default) only blocks with no live allocation are caught, and
/// both launches read memory. After the errors the runtime is usable, and a launch over live
/// data gives the right result.
#[test]
fn freed_objects_among_live_ones_are_errors_with_object_checks() {
    let _s = serial();
    let test = "freed_objects_among_live_ones_are_errors_with_object_checks";
    let Some(plain) = kernel(test, CHASE, "chase") else { return };
    assert!(!plain.objects_checked(), "off by default");
    let Some(k) = checked(test, CHASE, "chase") else { return };
    assert!(k.objects_checked());
    let out = vec![0u32; 4];
    let c = fat(3, std::ptr::null());
    let b = fat(2, &*c);
    let a = fat(1, &*b);
    let freed = &*b as *const FatNode as u64;
    // The arguments first: the launch allocates nothing in the freed node's class after it.
    let args = Args::new().ptr(&*a).ptr(&out[..]);
    drop(b);
    assert!(unimem_alloc::lookup(freed as *const u8).is_none(), "the freed node stays free");
    assert_eq!(unimem_alloc::lookup(&*a as *const FatNode as *const u8).map(|(_, s)| s), Some(320));
    plain.launch(1, &args).expect("without object checks the freed node reads as memory");
    let e = k.launch(1, &args).unwrap_err().to_string();
    for want in [
        "kernel `chase`: invocation 0 dereferenced a pointer into memory that holds no live allocation (freed?)".to_owned(),
        format!("(address {freed:#x}, in the managed heap but in no live allocation"),
        " at line 7 of its source (`unimem_load_u32(p)`)".to_owned(),
    ] {
        assert!(e.contains(&want), "{e:?} lacks {want:?}");
    }
    // Usable, and live data passes the checks.
    let b = fat(20, &*c);
    let a = fat(10, &*b);
    k.launch(1, &Args::new().ptr(&*a).ptr(&out[..])).unwrap();
    assert_eq!(out[0], 33);
    // An overrun: 57 invocations over a Vec of 56 words (224 bytes, a class of its own here),
    // when the slot after it is free.
    let Some(double) = checked(test, DOUBLE, "double") else { return };
    let src: Vec<u32> = (0..56).collect();
    let mut dst = vec![0u32; 64];
    let end = src.as_ptr() as u64 + 224;
    assert_eq!(unimem_alloc::lookup(src.as_ptr() as *const u8).map(|(_, s)| s), Some(224));
    assert!(unimem_alloc::lookup(end as *const u8).is_none(), "the slot after the Vec is free");
    let e = double.launch(57, &Args::new().ptr(&src[..]).ptr_mut(&mut dst[..])).unwrap_err().to_string();
    for want in [
        "invocation 56 dereferenced a pointer into memory that holds no live allocation".to_owned(),
        format!("(address {end:#x}, in the managed heap but in no live allocation; 0 bytes past the end of the live allocation {:#x}+224 (an overrun?))", src.as_ptr() as u64),
        " at line 5 of its source (`unimem_load_u32(src + u64(id) * 4lu)`)".to_owned(),
    ] {
        assert!(e.contains(&want), "{e:?} lacks {want:?}");
    }
    assert!(dst[..56].iter().enumerate().all(|(i, &v)| v == 2 * i as u32 + 1), "the others completed");
    let Some(unchecked) = kernel(test, DOUBLE, "double") else { return };
    unchecked.launch(57, &Args::new().ptr(&src[..]).ptr_mut(&mut dst[..])).expect("without object checks an overrun reads memory");
}

/// With the loop guard (the default), an endless loop that never touches memory ends the
/// launch with an error naming the kernel and the invocation (on a GPU it would run until the
/// driver declared the device lost); the other invocations complete, the runtime stays
/// usable. Unguarded (`UNIMEM_LOOP_GUARD=off`), lavapipe cuts the loop short itself, which is
/// an error too, naming one of the 8 invocations it runs together; elsewhere an unguarded
/// endless loop would hang the device, so it is not run.
#[test]
fn endless_loops_that_touch_no_memory_are_errors() {
    let _s = serial();
    let test = "endless_loops_that_touch_no_memory_are_errors";
    let Some(k) = kernel(test, ENDLESS, "endless") else { return };
    assert!(k.loops_guarded(), "on by default");
    let n = 300u32;
    let mut out = vec![0u32; n as usize];
    let e = k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(201)).unwrap_err().to_string();
    assert!(e.contains("kernel `endless`: invocation 201 ran more loop iterations in one round than the step limit"), "{e}");
    assert!(e.contains(" in the loop at line 7 of its source (`loop {`)"), "the loop: {e}");
    assert!(e.contains(" (the step limit is ") && e.contains(" per invocation and round)"), "the limit: {e}");
    assert!(!e.contains("address"), "a loop has no address: {e}");
    for (i, &v) in out.iter().enumerate().filter(|&(i, _)| i != 201) {
        assert_eq!(v, i as u32 + 1, "invocation {i} completed");
    }
    // Migrating, the failed invocation stored nothing; in place it kept its first store.
    assert_eq!(out[201], if crate::MIGRATING { 0 } else { 202 });
    // Usable, and the limit is the step limit: the same kernel with no endless invocation.
    out.fill(0);
    k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(n)).unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
    let lavapipe = unimem::vulkan_runtime().unwrap().1.device().report().name.contains("llvmpipe");
    if lavapipe {
        let Some(k) = kernel_with_env(test, ENDLESS, "endless", "UNIMEM_LOOP_GUARD", "off") else { return };
        assert!(!k.loops_guarded());
        let e = k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(13)).unwrap_err().to_string();
        // The batch's lowest id: 8 lanes on 256-bit vectors, 4 on 128-bit ones.
        let named = [8, 12].iter().any(|b| e.contains(&format!("kernel `endless`: invocation {b} ")));
        assert!(named && e.contains("65535 loop iterations"), "{e}");
    }
    // A bad value is refused, naming the variable.
    std::env::set_var("UNIMEM_LOOP_GUARD", "sometimes");
    let e = unimem::Kernel::new(ENDLESS, "endless").unwrap_err().to_string();
    std::env::remove_var("UNIMEM_LOOP_GUARD");
    assert!(e.contains("UNIMEM_LOOP_GUARD=\"sometimes\"") && e.contains("on, off"), "{e}");
}

/// Nested loops, in a helper function too, for `n` from `arg 2`: `n + 1` entries of the
/// outer loop's body and `n * (n + 1)` of the inner one's, all counted together.
const NESTED: &str = "
fn triangle(n: u32) -> u32 {
    var s = 0u;
    for (var i = 0u; i < n; i++) {
        var j = 0u;
        while (j < n) {
            s += i * j;
            j++;
        }
    }
    return s;
}
fn nested(id: u32) {
    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, triangle(unimem_arg_u32(2u)) + id);
}
";

/// Guarded loops count every entry into their body against the step limit, over all the
/// invocation's loops, nested ones and those of the functions it calls: exactly at the limit
/// the launch completes, one past it fails.
#[test]
fn guarded_loops_count_their_iterations_against_the_step_limit() {
    let _s = serial();
    let test = "guarded_loops_count_their_iterations_against_the_step_limit";
    let Some(k) = kernel(test, NESTED, "nested") else { return };
    let mut out = vec![0u32; 64];
    let count = |n: u32| n + 1 + n * (n + 1);
    let expect = |n: u32| (0..n).flat_map(|i| (0..n).map(move |j| i * j)).sum::<u32>();
    // 30: 961 entries, 31: 1023.
    k.set_max_steps(count(30));
    k.launch(64, &Args::new().ptr_mut(&mut out[..]).u32(30)).unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == expect(30) + i as u32));
    k.set_max_steps(count(30) - 1);
    let e = k.launch(64, &Args::new().ptr_mut(&mut out[..]).u32(30)).unwrap_err().to_string();
    assert!(e.contains("kernel `nested`: invocation 0 ran more loop iterations") && e.contains("64 invocation(s) failed"), "{e}");
    k.set_max_steps(count(31));
    k.launch(64, &Args::new().ptr_mut(&mut out[..]).u32(31)).unwrap();
    assert_eq!(out[5], expect(31) + 5);
}

/// Every invocation stores 100 words (more than the private store log: migrating, each is
/// escalated to a spill round), then invocation `arg 2` loops for ever.
const STORE_THEN_LOOP: &str = "
fn store_then_loop(id: u32) {
    let out = unimem_arg_ptr(0u) + u64(id) * 400lu;
    for (var i = 0u; i < 100u; i++) {
        unimem_store_u32(out + u64(i) * 4lu, id * 100u + i + 1u);
    }
    if (id == unimem_arg_u32(2u)) {
        var x = id;
        loop {
            x = x * 3u + 1u;
        }
        unimem_store_u32(out, x);
    }
}
";

/// A runaway loop is reported from a spill round too (migrating, through the fault buffer
/// rather than the output list), and the failed invocation stored nothing there.
#[test]
fn a_runaway_loop_in_a_spill_round_is_an_error() {
    let _s = serial();
    let Some(k) = kernel("a_runaway_loop_in_a_spill_round_is_an_error", STORE_THEN_LOOP, "store_then_loop") else { return };
    let n = 64u32;
    let mut out = vec![0u32; 100 * n as usize];
    let e = k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(37)).unwrap_err().to_string();
    assert!(e.contains("kernel `store_then_loop`: invocation 37 ran more loop iterations") && !e.contains("address"), "{e}");
    assert!(e.contains(" in the loop at line 9 of its source (`loop {`)"), "the loop, from a spill round too: {e}");
    let stored = out[37 * 100..38 * 100].iter().any(|&w| w != 0);
    assert_eq!(stored, !crate::MIGRATING, "migrating, a failed invocation stores nothing");
    out.fill(0);
    let r = k.launch(n, &Args::new().ptr_mut(&mut out[..]).u32(n)).unwrap();
    assert!(out.iter().enumerate().all(|(i, &w)| w == i as u32 + 1), "{r:?}");
    if crate::MIGRATING {
        assert!(r.escalated >= u64::from(n), "every invocation ran in a spill round: {r:?}");
    }
}

/// Loops in a `continuing` block, `break if`, `continue`, and a helper defined after the
/// entry: `n` entries of the outer loop's body, 2 of the inner one's per `continuing`, and
/// `n + 1` of the helper's `for`, counted exactly.
const CONTINUING: &str = "
fn continuing_loops(id: u32) {
    var s = 0u;
    let n = unimem_arg_u32(2u);
    loop {
        s += 1u;
        continuing {
            var k = 0u;
            loop { k += 1u; if (k >= 2u) { break; } }
            break if s >= n;
        }
    }
    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, odd_sum(s) + id);
}
fn odd_sum(n: u32) -> u32 {
    var t = 0u;
    for (var i = 0u; i < n; i++) {
        if (i % 2u == 0u) { continue; }
        t += i;
    }
    return t;
}
";

#[test]
fn loops_in_continuing_blocks_are_counted_too() {
    let _s = serial();
    let Some(k) = kernel("loops_in_continuing_blocks_are_counted_too", CONTINUING, "continuing_loops") else { return };
    let mut out = vec![0u32; 16];
    let n = 100u32;
    let entries = n + 2 * n + (n + 1);
    let odd: u32 = (0..n).filter(|i| i % 2 == 1).sum();
    k.set_max_steps(entries);
    k.launch(16, &Args::new().ptr_mut(&mut out[..]).u32(n)).unwrap();
    assert!(out.iter().enumerate().all(|(i, &v)| v == odd + i as u32), "{out:?}");
    k.set_max_steps(entries - 1);
    let e = k.launch(16, &Args::new().ptr_mut(&mut out[..]).u32(n)).unwrap_err().to_string();
    assert!(e.contains("kernel `continuing_loops`: invocation 0 ran more loop iterations"), "{e}");
}

/// Each invocation stores a word, runs an atomic, then (odd ids from 101) loads through a
/// pointer outside the heap, then stores a second word.
const FAIL_HALFWAY: &str = "
fn fail_halfway(id: u32) {
    let out = unimem_arg_ptr(0u) + u64(id) * 8lu;
    unimem_store_u32(out, id + 1u);
    unimem_atomic_add_u32(unimem_arg_ptr(2u), 1u);
    if (id % 2u == 1u && id > 100u) {
        _ = unimem_load_u32(unimem_arg_ptr(4u));
    }
    unimem_store_u32(out + 4lu, id + 2u);
}
";

/// What failed invocations leave depends on the mode (docs/MEMORY-MODEL.md): migrating, their
/// stores are discarded; in place, effects are direct, so what they stored before the failing
/// access stays. Either way nothing after it is applied, their atomics ran once, invocations
/// that completed are whole, and the error names the lowest failing id, its address, and how
/// many failed.
#[test]
fn failed_invocations_leave_what_the_mode_says() {
    let _s = serial();
    let Some(k) = kernel("failed_invocations_leave_what_the_mode_says", FAIL_HALFWAY, "fail_halfway") else { return };
    let in_place = unimem::vulkan_runtime().unwrap().1.in_place();
    assert!(!(crate::MIGRATING && in_place), "this binary migrates");
    let n = 1000u32;
    let out = vec![0u32; 2 * n as usize];
    let count = vec![0u32; 1];
    let bad = 0x10u64;
    let e = k.launch(n, &Args::new().ptr(&out[..]).ptr(&count[..]).u64(bad)).unwrap_err().to_string();
    assert!(e.contains("kernel `fail_halfway`: invocation 101 ") && e.contains(&format!("{bad:#x}")), "{e}");
    assert!(e.contains("450 invocation(s) failed"), "{e}");
    let left = if in_place { "the failed ones kept what they stored" } else { "the failed ones stored nothing" };
    assert!(e.contains(left), "{e}");
    assert_eq!(count[0], n, "every invocation's atomic ran once");
    for id in 0..n {
        let failed = id % 2 == 1 && id > 100;
        let first = if failed && !in_place { 0 } else { id + 1 };
        let second = if failed { 0 } else { id + 2 };
        assert_eq!((out[2 * id as usize], out[2 * id as usize + 1]), (first, second), "invocation {id}");
    }
}

/// Each invocation stores 100 words and runs 20 atomics: more than the private logs hold.
const MANY_EFFECTS: &str = "
fn many_effects(id: u32) {
    let out = unimem_arg_ptr(0u) + u64(id) * 400lu;
    let counters = unimem_arg_ptr(2u);
    for (var i = 0u; i < 100u; i++) {
        unimem_store_u32(out + u64(i) * 4lu, id * 100u + i);
    }
    for (var i = 0u; i < 20u; i++) {
        unimem_atomic_add_u32(counters + u64(i % 4u) * 4lu, i);
    }
}
";

/// Invocations whose stores and atomics outgrow the private logs: migrating, they finish in
/// spill rounds; in place, effects are direct and there are no logs, so one round does it.
#[test]
fn effects_beyond_the_private_logs_need_spill_rounds_only_when_migrating() {
    let _s = serial();
    let Some(k) = kernel("effects_beyond_the_private_logs_need_spill_rounds_only_when_migrating", MANY_EFFECTS, "many_effects") else { return };
    let in_place = unimem::vulkan_runtime().unwrap().1.in_place();
    let n = 2000u32;
    let out = vec![0u32; 100 * n as usize];
    let counters = vec![0u32; 4];
    let r = k.launch(n, &Args::new().ptr(&out[..]).ptr(&counters[..])).unwrap();
    assert!(out.iter().enumerate().all(|(i, &w)| w == i as u32), "every store applied");
    // Per invocation, counter c gets the i < 20 with i % 4 == c.
    let per: Vec<u32> = (0..4).map(|c| (0..20).filter(|i| i % 4 == c).sum()).collect();
    assert_eq!(counters, per.iter().map(|p| p * n).collect::<Vec<_>>(), "each atomic applied once");
    if in_place {
        assert!(r.rounds == 1 && r.escalated == 0, "{r:?}");
    } else {
        assert!(r.escalated >= u64::from(n), "{r:?}");
    }
}

/// Each invocation reads `busy` (zeros) for a while, then stores `3 * id + add` plus what it
/// read in the even word `2 * id` of `out`.
const EVEN_WRITER: &str = "
fn even_writer(id: u32) {
    let busy = unimem_arg_ptr(0u);
    let out = unimem_arg_ptr(2u);
    let steps = unimem_arg_u32(4u);
    var s = 0u;
    for (var i = 0u; i < steps; i++) {
        s += unimem_load_u32(busy + u64((id + i) % 1024u) * 4lu);
    }
    unimem_store_u32(out + u64(id) * 8lu, id * 3u + unimem_arg_u32(5u) + s);
}
";

/// Another thread of the program writes the odd words of a vector while a kernel writes its
/// even words: different bytes of the same blocks, each written by one side only (no data
/// race). Both sides' writes survive. Migrating, the blocks have device copies while the CPU
/// writes them (Shared in the first launch, Device in the third, which the second wrote:
/// mostly, a replay round can re-upload a merged block), and the launch merges the two
/// versions (`write_merges`, coherence/twin.rs; each path exactly in the fake-device test
/// `cpu_and_kernel_writes_to_one_block_during_a_launch_are_merged`); in place both write the
/// same pages.
#[test]
fn cpu_threads_writing_other_words_of_blocks_a_kernel_writes_lose_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering::*};
    let _s = serial();
    let Some(k) = kernel("cpu_threads_writing_other_words_of_blocks_a_kernel_writes_lose_nothing", EVEN_WRITER, "even_writer") else { return };
    let busy = vec![0u32; 1024];
    let n = 16384usize;
    // Launches with `add`, while (`Some(x)`) another thread writes odd word `2i + 1` = i ^ x.
    let launch = |out: &[u32], add: u32, odd: Option<u32>| {
        let start = AtomicBool::new(false);
        let addr = out.as_ptr() as usize;
        std::thread::scope(|s| {
            if let Some(x) = odd {
                let start = &start;
                s.spawn(move || {
                    while !start.load(Acquire) {
                        std::hint::spin_loop();
                    }
                    for i in 0..n {
                        // SAFETY: odd words of `out`, which the kernel never writes; `out`
                        // outlives the scope.
                        unsafe { std::ptr::write_volatile((addr as *mut u32).add(2 * i + 1), i as u32 ^ x) };
                        for _ in 0..200 {
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            start.store(true, Release);
            k.launch(n as u32, &Args::new().ptr(&busy[..]).ptr(out).u32(2000).u32(add)).unwrap()
        })
    };
    let check = |out: &[u32], add: u32, x: u32, attempt: usize| {
        for i in 0..n {
            assert_eq!((out[2 * i], out[2 * i + 1]), (i as u32 * 3 + add, i as u32 ^ x), "words {} and {} (attempt {attempt})", 2 * i, 2 * i + 1);
        }
    };
    let mut merged = [0, 0];
    for attempt in 0..5 {
        let out = vec![0u32; 2 * n];
        let before = unimem::stats();
        launch(&out, 1, Some(0x5555));
        let first = unimem::stats().since(&before);
        check(&out, 1, 0x5555, attempt);
        launch(&out, 2, None);
        let before = unimem::stats();
        launch(&out, 3, Some(0xaaaa));
        let third = unimem::stats().since(&before);
        check(&out, 3, 0xaaaa, attempt);
        eprintln!("attempt {attempt}: {first:?}\n{third:?}");
        assert_eq!(first.write_conflicts + third.write_conflicts, 0, "{first:?} {third:?}");
        merged[0] += first.write_merges;
        merged[1] += third.write_merges;
        if !crate::MIGRATING || merged.iter().all(|&m| m > 0) {
            break;
        }
    }
    if crate::MIGRATING {
        assert!(merged.iter().all(|&m| m > 0), "in 5 attempts, the CPU never wrote a block while the kernel had it (timing): {merged:?}");
    } else {
        assert_eq!(merged, [0, 0]);
    }
}

/// Each invocation reads `busy` (zeros) for a while, adds 1 to a counter, and stores
/// `id + 1` plus what it read in word `id` of `out`.
const COUNT_SLOWLY: &str = "
fn count_slowly(id: u32) {
    let busy = unimem_arg_ptr(0u);
    var s = 0u;
    for (var i = 0u; i < unimem_arg_u32(6u); i++) {
        s += unimem_load_u32(busy + u64((id + i) % 1024u) * 4lu);
    }
    unimem_atomic_add_u32(unimem_arg_ptr(4u), 1u);
    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, id + 1u + s);
}
";

/// Another thread moves memory explicitly (prefetch to the device and home, advice, discard)
/// while a kernel runs: enough to evict every block of the device pool, the kernel's own
/// included. Explicit migrations wait for the running launch, so the kernel's results are
/// exact (every atomic once, every store) and the other thread's data intact.
#[test]
fn explicit_migrations_on_other_threads_wait_for_a_running_launch() {
    use std::sync::atomic::{AtomicBool, Ordering::*};
    let _s = serial();
    let Some(k) = kernel("explicit_migrations_on_other_threads_wait_for_a_running_launch", COUNT_SLOWLY, "count_slowly") else { return };
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    let busy = vec![0u32; 1024];
    let n = 65536u32;
    // One block more than the pool holds.
    let big: Vec<u64> = (0..(unimem::coherence::BlockDevice::capacity(&**dev) + 1) as u64 * 65536 / 8).map(|i| i * 7 + 3).collect();
    let scratch = vec![1u8; 4 << 20];
    for attempt in 0..3 {
        let out = vec![0u32; n as usize];
        let counter = vec![0u32; 1];
        let done = AtomicBool::new(false);
        let moves = std::thread::scope(|s| {
            let mover = s.spawn(|| {
                let mut moves = 0;
                let p = big.as_ptr() as *const u8;
                let len = big.len() * 8;
                while !done.load(Acquire) {
                    // The kernel's input, home and back (in place: unmapped and mapped).
                    unimem::prefetch(busy.as_ptr() as *const u8, 4096, unimem::Location::Host).unwrap();
                    unimem::prefetch(busy.as_ptr() as *const u8, 4096, unimem::Location::Device).unwrap();
                    unimem::prefetch(p, len, unimem::Location::Device).unwrap();
                    unimem::advise(p, len, unimem::Advice::PreferredHost).unwrap();
                    unimem::advise(p, len, unimem::Advice::Clear).unwrap();
                    unimem::discard(scratch.as_ptr(), scratch.len()).unwrap();
                    unimem::prefetch(p, len, unimem::Location::Host).unwrap();
                    moves += 1;
                }
                moves
            });
            // Let the mover start before the launch.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let r = k.launch(n, &Args::new().ptr(&busy[..]).ptr(&out[..]).ptr(&counter[..]).u32(3000));
            done.store(true, Release);
            let moves = mover.join().unwrap();
            (r.unwrap(), moves)
        });
        let (r, moves) = moves;
        eprintln!("attempt {attempt}: {r:?}, {moves} rounds of moves");
        // Nothing moved under the dispatch: no invocation faulted.
        assert!(r.rounds == 1 && r.device_faults == 0, "attempt {attempt}: {r:?}");
        assert_eq!(counter[0], n, "every atomic ran once (attempt {attempt})");
        for (id, &w) in out.iter().enumerate() {
            assert_eq!(w, id as u32 + 1, "word {id} (attempt {attempt})");
        }
    }
    assert!(big.iter().enumerate().all(|(i, &x)| x == i as u64 * 7 + 3), "the other thread's data");
    // Whole blocks of the discarded range read as zero; its unaligned ends keep their bytes.
    assert!(scratch.iter().filter(|&&b| b == 0).count() >= scratch.len() - 2 * 65536, "discarded whole blocks read as zero");
}

/// `unimem::sync` waits for a launch running on another thread. In place, the kernel's stores
/// reach host memory as they happen, so the test sees the launch running before it calls
/// `sync`, and every result must be there when `sync` returns (before the launching thread
/// is joined). Migrating, the test cannot tell that the launch started, so `sync` only runs
/// beside it and the results are checked after the join.
#[test]
fn sync_waits_for_a_launch_running_on_another_thread() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
    let _s = serial();
    let Some(k) = kernel("sync_waits_for_a_launch_running_on_another_thread", COUNT_SLOWLY, "count_slowly") else { return };
    let busy = vec![1u32; 1024];
    let n = 65536u32;
    let out = vec![0u32; n as usize];
    let counter = vec![0u32; 1];
    let returned = AtomicBool::new(false);
    // SAFETY: u32 and AtomicU32 have one layout; the kernel writes these words while the
    // test reads them, so they are read as atomics.
    let seen = unsafe { std::slice::from_raw_parts(out.as_ptr() as *const AtomicU32, out.len()) };
    std::thread::scope(|s| {
        let launcher = s.spawn(|| {
            let r = k.launch(n, &Args::new().ptr(&busy[..]).ptr(&out[..]).ptr(&counter[..]).u32(2000));
            returned.store(true, Release);
            r
        });
        if !crate::MIGRATING {
            while !returned.load(Acquire) && seen.iter().all(|w| w.load(Relaxed) == 0) {
                std::hint::spin_loop();
            }
        }
        unimem::sync();
        if !crate::MIGRATING {
            let missing = seen.iter().filter(|w| w.load(Relaxed) == 0).count();
            assert_eq!(missing, 0, "results missing when sync returned (the launch had started)");
        }
        launcher.join().unwrap().unwrap();
    });
    assert_eq!(counter[0], n, "every atomic ran once");
    for (id, &w) in out.iter().enumerate() {
        assert_eq!(w, id as u32 + 2001, "word {id}");
    }
}

/// Launches from several threads at once, two of them sharing one `Kernel`: each is exact
/// (launches are serialised; each has its own arguments and data).
#[test]
fn launches_from_several_threads_are_each_exact() {
    let _s = serial();
    let Some(shared) = kernel("launches_from_several_threads_are_each_exact", SUM_LIST, "sum_list") else { return };
    let own = kernel("launches_from_several_threads_are_each_exact", DOUBLE, "double").unwrap();
    let (len, seg) = (20_000usize, 50usize);
    std::thread::scope(|s| {
        for t in 0..3u32 {
            let k = &shared;
            s.spawn(move || {
                let nodes = build(len, |i| (i as u32 * (t + 1)) % 1000);
                let starts: Vec<u64> = nodes.iter().step_by(seg).map(|&p| p as u64).collect();
                for round in 0..5u32 {
                    // The CPU changes a node between launches.
                    let changed = (round as usize * 997 + t as usize) % len;
                    // SAFETY: nodes are live and only this thread uses them.
                    unsafe { (*(nodes[changed] as *mut Node)).value = round };
                    let out = vec![0u32; starts.len()];
                    k.launch(starts.len() as u32, &Args::new().ptr(&starts[..]).ptr(&out[..]).u32(seg as u32)).unwrap();
                    for (i, &sum) in out.iter().enumerate() {
                        // SAFETY: as above.
                        let expect: u32 = nodes[i * seg..(i + 1) * seg].iter().map(|&p| unsafe { (*p).value }).sum();
                        assert_eq!(sum, expect, "thread {t}, round {round}, segment {i}");
                    }
                }
                free(nodes);
            });
        }
        s.spawn(|| {
            for round in 0..10u32 {
                let src: Vec<u32> = (0..50_000).map(|i| i * 3 + round).collect();
                let dst = vec![0u32; src.len()];
                own.launch(src.len() as u32, &Args::new().ptr(&src[..]).ptr(&dst[..])).unwrap();
                assert!(src.iter().zip(&dst).all(|(&s, &d)| d == s * 2 + 1), "round {round}");
            }
        });
    });
}

/// `fork` from another thread while a kernel runs waits for the launch (it brings every
/// Device block home first, which must not happen under a dispatch): the launch completes
/// without a fault, its results are exact, and the child sees plain memory.
#[test]
fn fork_on_another_thread_waits_for_a_running_launch() {
    let _s = serial();
    let Some(k) = kernel("fork_on_another_thread_waits_for_a_running_launch", COUNT_SLOWLY, "count_slowly") else { return };
    let busy = vec![0u32; 1024];
    let n = 65536u32;
    let out = vec![0u32; n as usize];
    let counter = vec![0u32; 1];
    let args = Args::new().ptr(&busy[..]).ptr(&out[..]).ptr(&counter[..]);
    // Migrating, `out` is Device after this launch: a fork brings it home.
    k.launch(n, &args.clone().u32(10)).unwrap();
    let started = std::sync::atomic::AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        let launch = s.spawn(|| {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            k.launch(n, &args.clone().u32(3000))
        });
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // The launch takes 0.3-0.6 s here; fork while it runs.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let t = std::time::Instant::now();
        // SAFETY: the child only reads memory and calls _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = busy[1023] == 0 && counter.len() == 1;
            // SAFETY: leaving the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let waited = t.elapsed();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
        let r = launch.join().unwrap().unwrap();
        // The fork came while the launch ran, so it waited for it.
        assert!(waited * 4 > r.time.saturating_sub(std::time::Duration::from_millis(30)), "fork took {waited:?}, the launch {:?}", r.time);
        r
    });
    assert!(r.rounds == 1 && r.device_faults == 0, "nothing moved under the dispatch: {r:?}");
    assert_eq!(counter[0], 2 * n);
    for (id, &w) in out.iter().enumerate() {
        assert_eq!(w, id as u32 + 1, "word {id}");
    }
}

const BEYOND: &str = "
fn beyond(id: u32) {
    let out = unimem_arg_ptr(0u);
    let chunk = unimem_arg_u32(4u);
    var extra = 0u;
    if (id >= chunk && id < chunk + 64u) {
        // Data only the second chunk reads, behind a pointer the launch cannot see.
        let hidden = unimem_arg_u64(2u) ^ 0x5a5a000000000000lu;
        extra = unimem_load_u32(hidden + u64(id - chunk) * 4lu);
    }
    if (id == unimem_arg_u32(5u)) {
        extra = unimem_load_u32(8lu);
    }
    unimem_store_u32(out + u64(id) * 4lu, id * 3u + extra);
}
";

/// A launch of more invocations than one chunk (`unimem::kernel::CHUNK`, 2^23) runs them
/// all, each with its own launch-wide id: the user's entry gets the id, the lists and logs
/// inside a chunk use chunk-local ones. Migrating, the second chunk's first reads fault and
/// are replayed there. An error in the second chunk names the launch-wide invocation.
#[test]
fn launches_beyond_one_chunk_give_every_invocation_its_own_id() {
    let _s = serial();
    let test = "launches_beyond_one_chunk_give_every_invocation_its_own_id";
    let Some(k) = kernel(test, BEYOND, "beyond") else { return };
    let chunk = unimem::kernel::CHUNK;
    let n = chunk + 3000;
    let hidden: Vec<u32> = (0..64).map(|i| 1_000_000 + i).collect();
    let secret = hidden.as_ptr() as u64 ^ 0x5a5a_0000_0000_0000;
    let mut out = vec![0u32; n as usize];
    let at = out.as_ptr() as u64;
    let args = |fail: u32| Args::new().raw_ptr(at).u64(secret).u32(chunk).u32(fail);
    let before = unimem::stats().replay_rounds;
    let r = k.launch(n, &args(u32::MAX)).unwrap();
    assert_eq!(r.chunks, 2, "{r:?}");
    // Each chunk's first round is no replay.
    assert_eq!(unimem::stats().replay_rounds - before, u64::from(r.rounds - r.chunks), "{r:?}");
    if crate::MIGRATING {
        assert!(r.device_faults > 0 && r.rounds > 2, "the second chunk faults on the hidden data: {r:?}");
    }
    for (i, &v) in out.iter().enumerate() {
        let i = i as u32;
        let extra = if (chunk..chunk + 64).contains(&i) { 1_000_000 + i - chunk } else { 0 };
        assert_eq!(v, i.wrapping_mul(3) + extra, "out[{i}]");
    }
    // An invocation of the second chunk reads address 8: the error names it.
    out.fill(0);
    let bad = chunk + 7;
    let e = k.launch(n, &args(bad)).unwrap_err().to_string();
    assert!(e.contains(&format!("invocation {bad} ")) && e.contains("0x8"), "{e}");
    // The first chunk completed before it.
    assert_eq!(out[chunk as usize - 1], (chunk - 1) * 3);
    drop(hidden);
}

/// Each invocation counts itself and stores its atomic's ticket at its own slot.
const TICKETS: &str = "
fn tickets(id: u32) {
    let t = unimem_atomic_add_u32(unimem_arg_ptr(0u), 1u);
    unimem_store_u32(unimem_arg_ptr(2u) + u64(id) * 4lu, t);
}
";

/// Kernels with atomics launch beyond 2^22 invocations. Migrating, their atomic log takes 32
/// bytes an invocation, so on a device whose storage buffers stop at 128 MiB (lavapipe, the
/// least Vulkan allows) their chunks are 2^22: before, such a launch failed on the log's
/// size, and so did every later launch of that kernel (the oversized log was kept).
#[test]
fn kernels_with_atomics_launch_beyond_the_atomic_logs_chunk() {
    let _s = serial();
    let test = "kernels_with_atomics_launch_beyond_the_atomic_logs_chunk";
    let Some(k) = kernel(test, TICKETS, "tickets") else { return };
    let n = (1u32 << 22) + 1000;
    let counter = vec![0u32; 1];
    let mut out = vec![u32::MAX; n as usize];
    let r = k.launch(n, &Args::new().ptr(&counter[..]).ptr_mut(&mut out[..])).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(counter[0], n);
    // Every ticket handed out once: the stored tickets are a permutation of 0..n.
    let mut seen = vec![false; n as usize];
    for (id, &t) in out.iter().enumerate() {
        assert!(t < n && !std::mem::replace(&mut seen[t as usize], true), "invocation {id}: ticket {t} out of range or twice");
    }
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    let range = u64::from(dev.device().report().max_storage_buffer_range);
    // Migrating, a whole chunk's log (32 bytes an invocation) must fit one buffer, else halves.
    let logged_chunks = if crate::MIGRATING && range < 32 * u64::from(unimem::kernel::CHUNK) { 2 } else { 1 };
    assert_eq!(r.chunks, logged_chunks, "{r:?}");
    // The kernel stays usable.
    let counter = vec![0u32; 1];
    k.launch(10, &Args::new().ptr(&counter[..]).ptr_mut(&mut out[..10])).unwrap();
    assert_eq!(counter[0], 10);
}

/// Kernels that break the kernel ABI are refused when created, with the line of the user's
/// own source and what to do instead; WGSL errors give the user's line numbers too (the
/// prelude comes after the user's source). Entries named like the generated entry point's
/// locals (`g`, `i`, `id`) or like built-ins (`step`, `all`) compile and run.
#[test]
fn kernels_that_break_the_abi_are_refused_at_their_line() {
    let _s = serial();
    let Some(_) = kernel("kernels_that_break_the_abi_are_refused_at_their_line", DOUBLE, "double") else { return };
    let refused = |src: &str, entry: &str| unimem::Kernel::new(src, entry).err().unwrap_or_else(|| panic!("accepted: {src}")).to_string();
    let cases: &[(&str, &str, &[&str])] = &[
        ("fn f(id: u32) {\n  let x = ;\n}", "f", &["kernel `f`:2:11", "let x = ;"]),
        ("fn f(id: u32) {\n  unimem_store_u32(0lu, 1.5);\n}", "f", &["kernel `f`:2:"]),
        ("fn f(id: u32) {\n  let x = unimem_load_u32(id);\n}", "f", &["unimem_load_u32(id)", "argument 1 of `unimem_load_u32` must be a `u64` (addresses are `u64`"]),
        ("fn f(id: u32) {\n  let p = unimem_arg_ptr(0u) + id * 4u;\n}", "f", &["unimem_arg_ptr(0u) + id * 4u", "`+` takes two values of one type, here `u64` and `u32`", "`p + u64(id) * 4lu`"]),
        ("fn f(id: u32) {\n  if (unimem_load_u32(0lu)) { }\n}", "f", &["a condition must be a `bool`"]),
        ("\nfn f(a: f32) { }", "f", &["line 2", "`fn f` must take one `u32`"]),
        ("fn f(id: u32) -> u32 { return id; }", "f", &["line 1", "return nothing"]),
        ("fn f(id: u32) { }", "g", &["must define `fn g(id: u32)`, called once per invocation (it defines: `fn f`)"]),
        ("fn h(x: u32) -> u32 { return x; }\n// fn good(id: u32) { }\nfn goood(id: u32) { }", "good", &["(it defines: `fn h`, `fn goood`)"]),
        ("fn f(id: u32) { }", "", &["`` cannot name an entry function", "not starting with a digit"]),
        ("fn f(id: u32) { }", "f g", &["`f g` cannot name"]),
        ("fn 1f(id: u32) { }", "1f", &["`1f` cannot name"]),
        ("fn unimem_f(id: u32) { }", "unimem_f", &["`unimem_f` cannot name"]),
        ("@group(0) @binding(0) var<storage, read_write> x: array<u32>;\nfn f(id: u32) { x[id] = 1u; }", "f", &["line 1", "`x`", "no buffers"]),
        ("var<workgroup> t: array<u32, 64>;\nfn f(id: u32) { t[id % 64u] = id; }", "f", &["line 1", "`t`", "workgroup memory"]),
        ("fn f(id: u32) {\n  if (id > 3u) {\n    workgroupBarrier();\n  }\n}", "f", &["line 3", "barriers"]),
        ("fn f(id: u32) {\n  let x = unimem_pt[0];\n}", "f", &["line 2", "`unimem_pt` is the runtime's variable"]),
        ("fn f(id: u32) {\n\n  let x = unimem_translate(0lu, 4u);\n}", "f", &["line 3", "`unimem_translate` is the runtime's function"]),
        ("@compute @workgroup_size(1) fn g() { }\nfn f(id: u32) { }", "f", &["`g` is an entry point"]),
        ("fn select(a: u32, b: u32, c: bool) -> u32 { return a; }\nfn f(id: u32) { }", "f", &["line 1", "`select` is a WGSL built-in that the runtime's code uses"]),
        ("// 64 bits\nalias u64 = u32;\nfn f(id: u32) { }", "f", &["line 2", "`u64` is a WGSL built-in"]),
        ("fn f(id: u32) { }\n/* } */ fn atomicAdd(a: u32) { }", "f", &["line 2", "`atomicAdd` is a WGSL built-in"]),
    ];
    for (src, entry, want) in cases {
        let e = refused(src, entry);
        for w in *want {
            assert!(e.contains(w), "{src:?}: {e:?} lacks {w:?}");
        }
    }
    // A source that starts with a byte-order mark (a file saved by a Windows editor) compiles,
    // runs, and its errors keep their line numbers (before, it was refused as not defining
    // its entry: the mark was read as part of `fn`).
    let bom = unimem::Kernel::new("\u{feff}fn f(id: u32) {\n  unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, id + 1u);\n}", "f").unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![0u32; 3];
    bom.launch(3, &Args::new().ptr_mut(&mut out[..])).unwrap();
    assert_eq!(out, [1, 2, 3]);
    let e = refused("\u{feff}fn f(id: u32) {\n  let x = ;\n}", "f");
    assert!(e.contains("kernel `f`:2:11"), "{e:?}");
    // Old Mac line ends (a lone `\r`): a `//` comment ends at its line, and errors, the
    // compiler's and the launch's, give the right line.
    let cr = unimem::Kernel::new("// one\rfn f(id: u32) {\r  // two\r  unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, id + 1u);\r}", "f").unwrap_or_else(|e| panic!("{e}"));
    cr.launch(3, &Args::new().ptr_mut(&mut out[..])).unwrap();
    assert_eq!(out, [1, 2, 3]);
    let e = cr.launch(1, &Args::new().u64(0)).unwrap_err().to_string();
    assert!(e.contains("at line 4 of its source (`unimem_store_u32("), "{e:?}");
    let e = refused("// one\rfn f(id: u32) {\r  // two\r  let x = ;\r}", "f");
    assert!(e.contains("kernel `f`:4:11"), "{e:?}");
    // Names the generated entry point used for its locals, and helpers and private state.
    // Built-ins the runtime's comments mention or that it calls only as the entry (`step`,
    // `all`) are fine to declare, and so are built-ins it never calls (`log`, `round`).
    for entry in ["g", "i", "id", "nw", "step", "all"] {
        let src = format!("var<private> seen: u32;\nconst round = 2u;\nfn log(x: u32) -> u32 {{ return x; }}\nfn twice(x: u32) -> u32 {{ return log(x) * round; }}\nfn {entry}(v: u32) {{\n    seen = twice(v);\n    unimem_store_u32(unimem_arg_ptr(0u) + u64(v) * 4lu, seen);\n}}");
        let k = unimem::Kernel::new(&src, entry).unwrap_or_else(|e| panic!("{entry}: {e}"));
        let mut out = vec![0u32; 5];
        k.launch(5, &Args::new().ptr_mut(&mut out[..])).unwrap();
        assert_eq!(out, [0, 2, 4, 6, 8], "{entry}");
    }
}

/// A kernel that declares a name of the runtime's prefixes (`unimem_`, `UNIMEM_`, `Unimem`)
/// anywhere (a function, struct, alias, constant, global, parameter or local; even one the
/// prelude does not use yet) is refused at the declaration's line of the user's source,
/// naming it, instead of with naga's error at a line of the prelude; calls of the accessors,
/// struct members and other names that merely contain `unimem` are fine, and kernels keep
/// compiling and running after a refusal.
#[test]
fn kernels_that_declare_the_runtimes_names_are_refused_at_their_line() {
    let _s = serial();
    let test = "kernels_that_declare_the_runtimes_names_are_refused_at_their_line";
    let Some(_) = kernel(test, DOUBLE, "double") else { return };
    let cases: &[(&str, usize, &str)] = &[
        ("struct UnimemRound { x: u32 }\nfn f(id: u32) { }", 1, "UnimemRound"),
        ("fn f(id: u32) { }\n\nfn unimem_load_u32(p: u64) -> u32 { return 0u; }", 3, "unimem_load_u32"),
        ("var<private> unimem_round: u32;\nfn f(id: u32) { }", 1, "unimem_round"),
        ("// flags\nconst UNIMEM_FAIL = 1u;\nfn f(id: u32) { }", 2, "UNIMEM_FAIL"),
        ("alias UnimemPointer = u64;\nfn f(id: u32) { }", 1, "UnimemPointer"),
        ("fn unimem_helper() -> u32 { return 1u; }\nfn f(id: u32) { }", 1, "unimem_helper"),
        ("fn f(id: u32) {\n    let unimem_x = id;\n}", 2, "unimem_x"),
        ("fn f(unimem_id: u32) { }", 1, "unimem_id"),
        ("fn f(id: u32) {\n    for (var unimem_i = 0u; unimem_i < 2u; unimem_i++) { }\n}", 2, "unimem_i"),
    ];
    for &(src, line, name) in cases {
        let e = unimem::Kernel::new(src, "f").err().unwrap_or_else(|| panic!("accepted: {src}")).to_string();
        for want in [format!("kernel `f`, line {line}: `{name}`"), "reserved for the runtime's prelude".into(), "`unimem_`".into(), "`Unimem`".into()] {
            assert!(e.contains(&want), "{src:?}: {e:?} lacks {want:?}");
        }
    }
    // Calls of the accessors, members and names that only contain `unimem`; a declaration in
    // a comment. And kernels still compile and run.
    let src = "struct Pair { unimem_a: u32, b: u32 }\nconst my_unimem = 1u;\nfn unimemory(x: u32) -> u32 { return x + my_unimem; }\n// fn unimem_load_u32(p: u64) -> u32\nfn f(id: u32) {\n    let p = Pair(unimemory(id), 0u);\n    unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, p.unimem_a + unimem_load_u32(unimem_arg_ptr(0u) + u64(id) * 4lu));\n}";
    let k = unimem::Kernel::new(src, "f").unwrap_or_else(|e| panic!("{e}"));
    let mut out = vec![10u32; 4];
    k.launch(4, &Args::new().ptr_mut(&mut out[..])).unwrap();
    assert_eq!(out, [11, 12, 13, 14]);
    let Some(d) = kernel(test, DOUBLE, "double") else { return };
    let (src, mut dst) = (vec![1u32, 2, 3], vec![0u32; 3]);
    d.launch(3, &Args::new().ptr(&src[..]).ptr_mut(&mut dst[..])).unwrap();
    assert_eq!(dst, [3, 5, 7]);
}

const AXPY_F64: &str = "
fn axpy(id: u32) {
    let x = unimem_arg_ptr(0u);
    let y = unimem_arg_ptr(2u);
    let a = bitcast<f64>(unimem_arg_u64(4u));
    let at = u64(id) * 8lu;
    let v: f64 = a * unimem_load_f64(x + at) + unimem_load_f64(y + at);
    unimem_store_f64(y + at, v);
}
";

/// `f64` data (`Vec<f64>`, C `double`) through `unimem_load_f64` / `unimem_store_f64`, on
/// devices with `shaderFloat64` (lavapipe has it): exact where the products are exact; an
/// unaligned `f64` pointer is an error like any 64-bit access. Devices without it refuse the
/// kernel, saying why.
#[test]
fn kernels_read_and_write_f64() {
    let _s = serial();
    let Some(_) = kernel("kernels_read_and_write_f64", DOUBLE, "double") else { return };
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    if !dev.device().report().shader_float64 {
        let Err(e) = unimem::Kernel::new(AXPY_F64, "axpy") else { panic!("an f64 kernel was accepted without shaderFloat64") };
        let e = e.to_string();
        assert!(e.contains("has no 64-bit floats"), "{e}");
        return;
    }
    let k = unimem::Kernel::new(AXPY_F64, "axpy").unwrap();
    let n = 50_000usize;
    let x: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
    let mut y: Vec<f64> = (0..n).map(|i| 1.0 / (1u64 << (i % 40)) as f64).collect();
    let a = -3.0f64;
    let want: Vec<f64> = x.iter().zip(&y).map(|(x, y)| a * x + y).collect();
    let xp = x.as_ptr() as u64;
    k.launch(n as u32, &Args::new().raw_ptr(xp).ptr_mut(&mut y[..]).u64(a.to_bits())).unwrap();
    for i in 0..n {
        assert_eq!(y[i].to_bits(), want[i].to_bits(), "y[{i}] = {} not {}", y[i], want[i]);
    }
    let e = k.launch(1, &Args::new().raw_ptr(xp + 4).ptr_mut(&mut y[..]).u64(a.to_bits())).unwrap_err().to_string();
    assert!(e.contains("not aligned") && e.contains(&format!("{:#x}", xp + 4)), "{e}");
}

/// Kernels made and destroyed do not keep their pipelines: a program that generates kernels
/// (a different constant in each source) stays bounded, with only the most recent
/// `KEPT_PIPELINES` kept for kernels made again from the same source. Before, every pipeline
/// stayed for the life of the process (about 1.1 MiB each on lavapipe).
#[test]
fn destroyed_kernels_release_their_pipelines() {
    let _s = serial();
    let Some(_) = kernel("destroyed_kernels_release_their_pipelines", DOUBLE, "double") else { return };
    use unimem::device::{live_pipelines, pipelines_created};
    use unimem::kernel::KEPT_PIPELINES;
    let source = |i: usize| format!("fn scale(id: u32) {{ unimem_store_u32(unimem_arg_ptr(0u) + u64(id) * 4lu, id * {i}u); }}");
    let mut out = vec![0u32; 64];
    let run = |k: &unimem::Kernel, out: &mut Vec<u32>, i: usize| {
        k.launch(64, &Args::new().ptr_mut(&mut out[..])).unwrap();
        assert!(out.iter().enumerate().all(|(j, &x)| x == (j * i) as u32), "kernel {i}");
    };
    let made = KEPT_PIPELINES + 24;
    let kernels: Vec<unimem::Kernel> = (0..made).map(|i| unimem::Kernel::new(&source(i), "scale").unwrap()).collect();
    for (i, k) in kernels.iter().enumerate() {
        run(k, &mut out, i);
    }
    let alive = live_pipelines();
    drop(kernels);
    let after = live_pipelines();
    assert!(alive - after >= made - KEPT_PIPELINES, "{alive} pipelines with {made} kernels, {after} after dropping them");
    // The most recent is still compiled: making it again builds nothing.
    let created = pipelines_created();
    let k = unimem::Kernel::new(&source(made - 1), "scale").unwrap();
    assert_eq!(pipelines_created(), created, "a kept pipeline was built again");
    run(&k, &mut out, made - 1);
    // The first was released: it is built again, and works.
    let k0 = unimem::Kernel::new(&source(0), "scale").unwrap();
    assert_eq!(pipelines_created(), created + 1);
    run(&k0, &mut out, 0);
    // A clone keeps the pipeline while the original goes.
    let twin = k0.clone();
    drop(k0);
    run(&twin, &mut out, 0);
}

/// Launch parameters as a C struct (`Args::pod`) after a `u32`, where the struct is aligned
/// to 8: the kernel reads its fields at their C offsets over 4.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    scale: f64,
    out: u64,
    bias: u32,
    _pad: u32,
}

const LINK: &str = "
fn link(id: u32) {
    // Words: 0 count, 2 Params { scale (2), out (4), bias (6) }, 8 an f64, 10 an i64, 12 nodes.
    let count = unimem_arg_u32(0u);
    let scale = bitcast<f64>(unimem_arg_u64(2u));
    let out = unimem_arg_ptr(4u);
    let bias = unimem_arg_u32(6u);
    let extra = bitcast<f64>(unimem_arg_u64(8u));
    let minus = bitcast<i64>(unimem_arg_u64(10u));
    let nodes = unimem_arg_ptr(12u);
    // Node id points to node id + 1 (the last to none): a list built by the kernel.
    let node = unimem_load_ptr(nodes + u64(id) * 8lu);
    var next = 0lu;
    if (id + 1u < count) { next = unimem_load_ptr(nodes + u64(id + 1u) * 8lu); }
    unimem_store_ptr(node + 8lu, next);
    unimem_store_f64(out + u64(id) * 8lu, f64(id) * scale + f64(bias) + extra + f64(minus));
}
";

/// `Args::pod` places a struct aligned to 8 at an even word, as C does (it was appended at
/// the next word, so after one `u32` every 64-bit field of the struct was read from the
/// wrong words); `Args::f64` and `Args::i64` append 64-bit values like `Args::u64`; and
/// kernels store pointers with `unimem_store_ptr`, as they load them with `unimem_load_ptr`.
#[test]
fn pod_arguments_follow_c_layout_and_kernels_store_pointers() {
    let _s = serial();
    let Some(_) = kernel("pod_arguments_follow_c_layout_and_kernels_store_pointers", DOUBLE, "double") else { return };
    let (_, dev) = unimem::vulkan_runtime().unwrap();
    if !dev.device().report().shader_float64 {
        return;
    }
    let k = unimem::Kernel::new(LINK, "link").unwrap_or_else(|e| panic!("{e}"));
    let n = 1000usize;
    let nodes = build(n, |i| i as u32);
    // Unlink them: the kernel links them again.
    for &p in &nodes {
        // SAFETY: every node is live (made by `build`) and no kernel runs.
        unsafe { (*(p as *mut Node)).next = std::ptr::null() };
    }
    let table: Vec<u64> = nodes.iter().map(|&p| p as u64).collect();
    let mut out = vec![0f64; n];
    let params = Params { scale: 0.5, out: out.as_mut_ptr() as u64, bias: 7, _pad: 0 };
    let args = Args::new().u32(n as u32).pod(&params).f64(0.25).i64(-3).ptr(&table[..]);
    assert_eq!(args.words()[1], 0, "padding before the struct");
    let scale = 0.5f64.to_bits();
    assert_eq!(args.words()[2..4], [scale as u32, (scale >> 32) as u32], "the struct at word 2");
    k.launch(n as u32, &args).unwrap();
    for (i, o) in out.iter().enumerate() {
        assert_eq!(*o, i as f64 * 0.5 + 7.0 + 0.25 - 3.0, "out[{i}]");
    }
    let (mut p, mut seen) = (nodes[0], 0u32);
    while !p.is_null() {
        // SAFETY: the kernel linked live nodes of `build`; the launch returned.
        let node = unsafe { &*p };
        assert_eq!(node.value, seen);
        seen += 1;
        p = node.next;
    }
    assert_eq!(seen as usize, n, "the list the kernel linked");
    free(nodes);
}

/// A kernel written as a WebGPU compute shader (`@compute` on the entry itself) is refused at
/// the user's line, saying what to declare instead: naga failed at the generated entry point's
/// call of it, line 583 of a module the user never wrote.
#[test]
fn a_compute_attribute_on_the_entry_is_refused_at_its_line() {
    let _s = serial();
    let Some(_) = kernel("a_compute_attribute_on_the_entry_is_refused_at_its_line", DOUBLE, "double") else { return };
    let src = "// a WebGPU habit\n@compute @workgroup_size(64)\nfn f(@builtin(global_invocation_id) g: vec3<u32>) { }";
    let e = unimem::Kernel::new(src, "f").err().unwrap_or_else(|| panic!("accepted: {src}")).to_string();
    for want in ["kernel `f`, line 2", "`f` is an entry point (`@compute`)", "fn f(id: u32)"] {
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
}

const READ_ARG: &str = "
fn read_arg(id: u32) {
    unimem_store_u32(unimem_arg_ptr(2u), unimem_load_u32(unimem_arg_ptr(0u)));
}
";

/// Stores what the pointer at argument 0 points to.
const DEREF: &str = "
fn deref(id: u32) {
    unimem_store_u32(unimem_arg_ptr(2u), unimem_load_u32(unimem_load_ptr(unimem_arg_ptr(0u))));
}
";

/// An address outside the heap is described: a `Vec` variable passed instead of its data is
/// on the launching thread's stack (and is argument word 0); a null pointer is named, with the
/// argument word that held it. Reading an argument word the launch did not pass is an error of
/// its own, naming the word, how many the launch passed, and the line.
#[test]
fn pointers_outside_the_heap_are_described() {
    let _s = serial();
    let Some(k) = kernel("pointers_outside_the_heap_are_described", READ_ARG, "read_arg") else { return };
    let v = vec![1u32, 2, 3];
    let mut out = Box::new(0u32);
    let e = k.launch(1, &Args::new().ptr(&v).ptr_mut(&mut *out)).unwrap_err().to_string();
    let at = &v as *const Vec<u32> as u64;
    for want in [format!("address {at:#x}, on the launching thread's stack"), "`&v[..]`".into(), "argument word 0".into()] {
        assert!(e.contains(&want), "{e:?} lacks {want:?}");
    }
    // A stack address in the data, not an argument (as a C list whose last node points to a
    // local): the stack is named, without the Rust hint about arguments.
    let Some(deref) = kernel("pointers_outside_the_heap_are_described", DEREF, "deref") else { return };
    let local = 7u32;
    let ptrs = vec![&local as *const u32 as u64];
    let e = deref.launch(1, &Args::new().ptr(&ptrs[..]).ptr_mut(&mut *out)).unwrap_err().to_string();
    let at = &local as *const u32 as u64;
    assert!(e.contains(&format!("address {at:#x}, on the launching thread's stack: kernels reach heap memory only (malloc, Box, Vec), not local variables)")), "{e}");
    let e = k.launch(1, &Args::new().ptr(&v[..]).u64(0)).unwrap_err().to_string();
    for want in ["address 0x0, a null pointer; it is the value of argument word 2", "at line 3 of its source"] {
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
    // A pointer after a u32, read from the padding word before it (words 1-2, not 2-3).
    let Some(padded) = kernel("pointers_outside_the_heap_are_described", "
fn padded(id: u32) {
    unimem_store_u32(unimem_arg_ptr(4u), unimem_load_u32(unimem_arg_ptr(1u)));
}
", "padded") else { return };
    let e = padded.launch(1, &Args::new().u32(3).ptr(&v[..]).ptr_mut(&mut *out)).unwrap_err().to_string();
    assert!(e.contains("it is argument words 1 and 2 read as one 64-bit value") && e.contains("read it with unimem_arg_ptr(2u)"), "{e}");
    let e = k.launch(1, &Args::new().ptr(&v[..])).unwrap_err().to_string();
    for want in [
        "invocation 0 read an argument word the launch did not pass (argument word 2; the launch passed 2 words, 8 bytes.",
        "at line 3 of its source (`unimem_arg_ptr(2u)`)",
    ] {
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
    // A 64-bit argument half passed (12 bytes: words 0..3): its second word is the one missing.
    let e = k.launch(1, &Args::new().ptr(&v[..]).u32(0)).unwrap_err().to_string();
    assert!(e.contains("(argument word 3; the launch passed 3 words, 12 bytes."), "{e}");
    k.launch(1, &Args::new().ptr(&v[..]).ptr_mut(&mut *out)).unwrap();
    assert_eq!(*out, 1);
    // Elsewhere, the mapping is named: the program's globals and literals, another
    // allocator's memory, nothing at all.
    static TABLE: [u32; 4] = [1, 2, 3, 4];
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    let exe = exe.to_str().unwrap();
    let system = std::alloc::Layout::new::<[u32; 4]>();
    // SAFETY: a non-zero-sized layout; the block is freed below and only its address is used.
    let other = unsafe { std::alloc::GlobalAlloc::alloc(&std::alloc::System, system) };
    for (at, want) in [
        (TABLE.as_ptr() as u64, format!("in the read-only data of {exe} (a string literal or constant?): kernels reach unimem's heap only")),
        ("text".as_ptr() as u64, format!("in the read-only data of {exe}")),
        (COUNTER.as_ptr() as u64, format!("in the static data of {exe} (a global or static variable): kernels reach unimem's heap only")),
        (other as u64, "in anonymous memory outside unimem's heap (mmap'ed memory, another thread's stack, another allocator's memory, or a language runtime's own arenas, such as CPython's pymalloc, which PYTHONMALLOC=malloc turns off)".into()),
        (0xdead_0000_0000, "mapped nowhere in this process: an uninitialised, corrupted or stale pointer?".into()),
    ] {
        let e = k.launch(1, &Args::new().u64(at).ptr_mut(&mut *out)).unwrap_err().to_string();
        assert!(e.contains(&format!("(address {at:#x}, {want}")), "{e:?} lacks {want:?}");
    }
    // SAFETY: allocated above with the same layout by the same allocator.
    unsafe { std::alloc::GlobalAlloc::dealloc(&std::alloc::System, other, system) };
}
