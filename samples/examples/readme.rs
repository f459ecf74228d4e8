//! The README's Rust example, kept compiling and running: a `Box`-linked list summed by a
//! kernel through the same pointers. `cargo run --release -p unimem-samples --example readme`

#[global_allocator]
static A: unimem::Allocator = unimem::Allocator;

#[repr(C)]
struct Node {
    value: u32,
    next: Option<Box<Node>>,
} // value at byte 0, next at byte 8

const SUM: &str = "
fn sum(id: u32) {
    var p = unimem_arg_ptr(0u);                       // the host pointer, as a u64
    var s = 0u;
    while (p != 0lu) { s += unimem_load_u32(p); p = unimem_load_ptr(p + 8lu); }
    unimem_store_u32(unimem_arg_ptr(2u), s);
}";

fn main() -> Result<(), unimem::Error> {
    let mut head = Box::new(Node { value: 0, next: None });
    for v in 1..=1000 {
        head = Box::new(Node { value: v, next: Some(head) });
    }
    let mut total = Box::new(0u32); // kernels reach heap memory only, not the stack
    let kernel = unimem::Kernel::new(SUM, "sum")?;
    let report = kernel.launch(1, &unimem::Args::new().ptr(&*head).ptr_mut(&mut *total))?;
    println!("sum {} (expected {}), {report:?}", *total, 1000 * 1001 / 2);
    assert_eq!(*total, 500_500);
    // Iterative drop: a recursive drop of a long list would overflow the stack.
    let mut n = Some(head);
    while let Some(mut b) = n {
        n = b.next.take();
    }
    Ok(())
}
