//! The `handoff` binary: see `handoff --help`.

use std::process::ExitCode;

use clap::Parser;
use handoff_app::cli::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    // A missing .env is normal; the environment still applies.
    let _ = dotenvy::dotenv();
    run(Cli::parse()).await
}
