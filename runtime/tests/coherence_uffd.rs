//! Coherence with the userfaultfd (SIGBUS mode) backend. Cases in `coherence/cases.rs`.
const MODE: unimem::faults::protect::FaultMode = unimem::faults::protect::FaultMode::Uffd;
const HOST_VIEWS: bool = true;
#[path = "coherence/cases.rs"]
mod cases;
