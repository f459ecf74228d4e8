//! Benchmarks live in benches/benches; see docs/PERFORMANCE.md.
