//! The `handoff` binary: see `handoff --help`.

use std::process::ExitCode;

use clap::Parser;
use handoff_app::cli::{run, Cli};

/// mimalloc instead of glibc's malloc: a handoff allocates many short-lived buffers (requests,
/// JSON, records), and glibc's allocator spent about a fifth of the service's CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment still applies.
    let _ = dotenvy::dotenv();
    run(Cli::parse()).await
}
