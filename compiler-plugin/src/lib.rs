//! `#[unimem::kernel]` will live here (the compiler issue). Empty until then on purpose:
//! nothing in the workspace depends on it yet.
