//! Mapping count under alternating block states, mprotect backend (`vma/case.rs`).
const MODE: unimem::faults::protect::FaultMode = unimem::faults::protect::FaultMode::Mprotect;
#[path = "vma/case.rs"]
mod case;
