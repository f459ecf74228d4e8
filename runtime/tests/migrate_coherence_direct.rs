//! Coherence on the Vulkan engine, direct copy path (CPU faults read the frames). Cases in
//! `migrate_coherence/cases.rs`.
const COPY: unimem::options::CopyMode = unimem::options::CopyMode::Direct;
#[path = "migrate_coherence/cases.rs"]
mod cases;
mod migrate_common;
