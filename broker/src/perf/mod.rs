//! Benchmarks shipped with the broker (`broker perf ...`). Figures and the commands that
//! produced them are recorded in `docs/benchmarks.md`.

pub mod storage;
