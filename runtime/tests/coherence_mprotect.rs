//! Coherence with the mprotect + SIGSEGV backend. Cases in `coherence/cases.rs`.
const MODE: unimem::faults::protect::FaultMode = unimem::faults::protect::FaultMode::Mprotect;
const HOST_VIEWS: bool = true;
#[path = "coherence/cases.rs"]
mod cases;
