//! Coherence on the Vulkan engine, staging copy path (blocks come home by download). Cases in
//! `migrate_coherence/cases.rs`.
const COPY: unimem::options::CopyMode = unimem::options::CopyMode::Staging;
#[path = "migrate_coherence/cases.rs"]
mod cases;
mod migrate_common;
