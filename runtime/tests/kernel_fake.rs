//! Without a Vulkan device (the CPU fake device), kernels fail with a clear error at creation
//! and the rest of the runtime keeps working.

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

#[test]
fn kernels_need_a_vulkan_device() {
    std::env::set_var("UNIMEM_DEVICE", "fake");
    let v = vec![1u32; 1000];
    unimem::prefetch(v.as_ptr().cast(), 4000, unimem::Location::Device).unwrap();
    let e = unimem::Kernel::new("fn k(id: u32) { }", "k").unwrap_err().to_string();
    assert!(e.contains("kernels need a Vulkan device") && e.contains("UNIMEM_DEVICE=fake"), "{e}");
    assert_eq!(v.iter().sum::<u32>(), 1000, "the data came home");
}
