//! Samples of unimem: data structures built with ordinary `Box`es (the binary or test that
//! uses this crate installs `unimem::Allocator` as its global allocator), walked by WGSL
//! kernels on the same pointers, checked against the CPU.
//!
//! - [`list`]: a singly linked list of `Box<Node>`s summed per segment by a kernel (the main
//!   demo, `cargo run --release -p unimem-samples --bin demo`);
//! - [`bst`]: a binary search tree of `Box<Tree>`s, looked up for many keys by a kernel;
//! - [`bfs`]: breadth-first search over adjacency lists (boxed slices), with atomics.

pub mod bfs;
pub mod bst;
pub mod list;
