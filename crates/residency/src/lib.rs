//! The `residency` command line's shared flag groups, as a library so that the benchmark
//! binary (`crates/bench`) starts its node from the same flags `serve` and `dev` take.
//! The commands themselves are in the binary (`main.rs`).

pub mod flags;
