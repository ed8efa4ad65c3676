//! What the `residency` command line shares with the benchmark binary (`crates/bench`), as
//! a library: the node's flag groups, so that a benchmark starts its node from the same
//! flags `serve` and `dev` take, and how a command runs as a process. The commands
//! themselves are in the binary (`main.rs`).

pub mod flags;
pub mod process;
