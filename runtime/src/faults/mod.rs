//! CPU fault backends. For now: probing which mechanisms this process can use.
//!
//! - `uffd_abi.rs` — the userfaultfd kernel ABI (ioctl numbers, structs, feature bits);
//! - `trap.rs`     — a temporary single-page SIGSEGV/SIGBUS trap used by the probes;
//! - `probe.rs`    — [`FaultProbe`]: each mechanism tried for real.
//!
//! Later: the userfaultfd SIGBUS backend and the signal + mprotect fallback.

mod probe;
mod trap;
pub mod uffd_abi;

pub use probe::{FaultProbe, Probe, ProbeFailure, UffdReport};
