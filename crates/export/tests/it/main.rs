//! Integration tests of the export crate: one binary (see ENGINEERING.md), modules by
//! topic. `checker` is an independent k-anonymity / l-diversity checker that reads the
//! Parquet output back with the parquet reader and shares no code with the engine.

mod checker;
mod data;
mod engine;
mod offline;
