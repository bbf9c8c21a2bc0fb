//! The benchmarks' shared parts: the ceiling publishers ([`ceiling`]), which also fill
//! streams for the consumer benchmarks (`consumers/bench`), and CPU accounting ([`cost`]).
//! The end-to-end benchmark itself is the `bench` binary (`src/main.rs`).

pub mod ceiling;
pub mod cost;
