//! Mirror mode: host memory imported in place (`VK_EXT_external_memory_host`). A kernel reads
//! and writes the host pages themselves: no upload, no download. Device-test rule of
//! `unimem::device::test_support`.

use unimem::device::test_support::{assert_no_validation_errors, test_device};
use unimem::device::DeviceError;
use unimem::kernel::compile_wgsl_named;

const TWICE: &str = r#"
var<immediate> n: u32;
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(64)
fn twice(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < n) {
        data[id.x] = data[id.x] * 2u + 1u;
    }
}
"#;

/// Imports `len` bytes at `ptr`, runs the kernel over them, and checks the host memory.
///
/// # Safety
/// `ptr` is `len` bytes of page-aligned anonymous memory owned by the caller.
unsafe fn double_in_place(device: &unimem::device::Device, ptr: *mut u8, len: usize) {
    let words = len / 4;
    // SAFETY: caller's contract.
    let host = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u32>(), words) };
    for (i, w) in host.iter_mut().enumerate() {
        *w = i as u32 ^ 0x5a5a;
    }
    // SAFETY: the range stays mapped until `buffer` is dropped below; the CPU does not touch
    // it during the dispatch.
    let mut buffer = unsafe { device.import_host(ptr, len) }.unwrap();
    assert_eq!(buffer.len(), len as u64);
    assert_eq!(
        buffer.as_bytes().as_ptr(),
        ptr.cast_const(),
        "the CPU view is the host range itself"
    );
    let kernel = compile_wgsl_named("twice.wgsl", TWICE, "twice").unwrap();
    let pipeline = device.create_pipeline(&kernel).unwrap();
    device
        .dispatch(
            &pipeline,
            &mut [&mut buffer],
            &(words as u32).to_ne_bytes(),
            [kernel.groups_for(words as u32), 1, 1],
        )
        .unwrap();
    drop(buffer);
    // SAFETY: the import is gone; the memory is the caller's again.
    let host = unsafe { std::slice::from_raw_parts(ptr.cast::<u32>(), words) };
    for (i, &w) in host.iter().enumerate() {
        assert_eq!(w, (i as u32 ^ 0x5a5a) * 2 + 1, "word {i}");
    }
}

#[test]
fn a_kernel_writes_imported_host_memory_in_place() {
    let Some(device) = test_device("a_kernel_writes_imported_host_memory_in_place") else {
        return;
    };
    if !device.external_memory_host_enabled() {
        // The one case where the error is the expected outcome: say so clearly.
        // SAFETY: never dereferenced (the call fails before using the pointer).
        let err = unsafe { device.import_host(4096 as *mut u8, 4096) }.unwrap_err();
        assert!(
            err.to_string().contains("VK_EXT_external_memory_host"),
            "{err}"
        );
        eprintln!("notice: mirror mode not supported by this device: {err}");
        return;
    }
    let len = 256 << 10;

    // Plain anonymous memory.
    // SAFETY: a fresh private anonymous mapping.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED);
    // SAFETY: `ptr` is `len` bytes of page-aligned anonymous memory we own.
    unsafe { double_in_place(&device, ptr.cast(), len) };
    // SAFETY: unmapping our own mapping, no buffer uses it any more.
    unsafe { libc::munmap(ptr, len) };

    // Memory of unimem's managed heap (what mirror mode is for).
    let p = unimem::alloc::alloc_aligned(len, 64 << 10);
    assert!(!p.is_null());
    assert!(unimem::alloc::contains(p));
    // SAFETY: a live, aligned allocation of `len` bytes of the arena (anonymous memory).
    unsafe { double_in_place(&device, p, len) };
    // SAFETY: allocated above, freed once.
    unsafe { unimem::alloc::free(p) };
    assert_no_validation_errors("a_kernel_writes_imported_host_memory_in_place");
}

#[test]
fn misaligned_imports_are_refused_with_the_rule() {
    let Some(device) = test_device("misaligned_imports_are_refused_with_the_rule") else {
        return;
    };
    let mut v = vec![0u8; 3 * 4096];
    let aligned = (v.as_mut_ptr() as usize).next_multiple_of(4096);
    for (addr, len) in [(aligned + 64, 4096), (aligned, 100), (aligned, 0)] {
        // SAFETY: refused before the memory is imported.
        let err = unsafe { device.import_host(addr as *mut u8, len) }.unwrap_err();
        match device.external_memory_host_enabled() {
            true => assert!(matches!(err, DeviceError::Usage(_)), "{err}"),
            false => assert!(matches!(err, DeviceError::MissingFeature { .. }), "{err}"),
        }
    }
}
