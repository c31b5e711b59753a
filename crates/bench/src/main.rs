//! `handoff-bench`: see the library docs and `docs/benchmarks.md`.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    handoff_bench::run(handoff_bench::Args::parse())
}
