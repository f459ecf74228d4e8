//! Coherence with a device whose memory the CPU cannot read: CPU faults are served by the
//! fault service thread (download, then fill), as with the staging copy path. Cases in `coherence/cases.rs`.
const MODE: unimem::faults::protect::FaultMode = unimem::faults::protect::FaultMode::Uffd;
const HOST_VIEWS: bool = false;
#[path = "coherence/cases.rs"]
mod cases;
