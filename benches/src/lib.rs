//! Criterion benchmarks for the wirewarden crates; see `benches/` and `docs/performance.md`.
//!
//! This crate has no API. Run `cargo bench -p wirewarden-benches` and record the figures
//! in `docs/performance.md`.
#![forbid(unsafe_code)]
