//! Mapping count under alternating block states, userfaultfd backend (`vma/case.rs`).
const MODE: unimem::faults::protect::FaultMode = unimem::faults::protect::FaultMode::Uffd;
#[path = "vma/case.rs"]
mod case;
