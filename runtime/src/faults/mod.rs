//! CPU fault backends.
//!
//! - `protect.rs`  — host protection backends (userfaultfd SIGBUS mode; mprotect + SIGSEGV);
//! - `handler.rs`  — the SIGBUS/SIGSEGV handler: coherence faults, chaining to others;
//! - `uffd_abi.rs` — the userfaultfd kernel ABI (ioctl numbers, structs, feature bits);
//! - `trap.rs`     — a temporary single-page SIGSEGV/SIGBUS trap used by the probes;
//! - `probe.rs`    — [`FaultProbe`]: each mechanism tried for real.
//!

pub mod handler;
mod probe;
pub mod protect;
mod trap;
pub mod uffd_abi;

pub use probe::{FaultProbe, Probe, ProbeFailure, UffdReport};
