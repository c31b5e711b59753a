//! The command line (CONTRACT §2): `serve`, `demo`, `simulator`, `check`, `report`.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::App;
use crate::telemetry;

/// Hands Genesys Cloud Web Messaging conversations from a bot to a human queue.
#[derive(Debug, Parser)]
#[command(name = "handoff", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook server against Genesys Cloud (configuration from the environment and `.env`).
    Serve(ServeArgs),
    /// Start a platform simulator (Genesys by default) and the server on loopback and walk through
    /// sample handoffs, printing the calls each one caused.
    Demo {
        /// The platform to simulate: `genesys` or `sunshine`.
        #[arg(long, default_value = "genesys", value_parser = ["genesys", "sunshine"])]
        platform: String,
        /// Leave both servers running afterwards and print curl lines to try.
        #[arg(long)]
        keep_running: bool,
        /// Port of the handoff server (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Port of the simulator (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        sim_port: u16,
    },
    /// Run the Genesys simulator alone, for local development against `serve`.
    Simulator {
        /// Port to listen on (127.0.0.1).
        #[arg(long, default_value_t = 8089)]
        port: u16,
    },
    /// Preflight against the configured org: config, token, queues, permissions.
    Check {
        /// Instead of the preflight: the real replace of transfer mode, tried once on a test
        /// conversation an operator parked in the flow's handoff branch (sandbox org), to choose
        /// between advise mode (the default kit) and transfer mode. Exit 0 only when the
        /// conversation reached TARGET_QUEUE_ID.
        #[arg(long, value_name = "CONVERSATION_ID", num_args = 0..=1, default_missing_value = "")]
        transfer_probe: Option<String>,
    },
    /// Print the insights page's figures as terminal tables, read from the ledger.
    Report(ReportArgs),
}

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Start of the window: `24h`, `7d`, `90m` before now, a date (`YYYY-MM-DD`, UTC) or RFC 3339.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// End of the window, exclusive (same forms); now when absent.
    #[arg(long)]
    pub until: Option<String>,
    /// Only handoffs of this reason.
    #[arg(long)]
    pub reason: Option<String>,
    /// The ledger; overrides `DATABASE_URL` (default `sqlite://handoff.db`).
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Flags of `serve`; each overrides the environment variable of the same meaning.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Overrides `PORT`.
    #[arg(long)]
    pub port: Option<u16>,
    /// Overrides `BIND_ADDR`.
    #[arg(long)]
    pub bind_addr: Option<String>,
    /// Overrides `DATABASE_URL`.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Overrides `LOG_FORMAT` (`json` or `pretty`).
    #[arg(long)]
    pub log_format: Option<String>,
}

/// Reads settings from the process environment with `overrides` on top.
fn settings(overrides: &HashMap<&'static str, String>) -> Result<Settings, crate::config::ConfigErrors> {
    Settings::from_env(|k| overrides.get(k).cloned().or_else(|| std::env::var(k).ok()))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo { platform, keep_running, port, sim_port } => {
            telemetry::init(telemetry::subscriber("warn", crate::config::LogFormat::Pretty, std::io::stderr));
            let result = match platform.as_str() {
                "sunshine" => crate::demo_sunshine::run(keep_running, port, sim_port).await,
                _ => crate::demo::run(keep_running, port, sim_port).await,
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulator { port } => {
            telemetry::init(telemetry::subscriber("info", crate::config::LogFormat::Pretty, std::io::stderr));
            simulator(port).await
        }
        Command::Report(args) => report(args).await,
        Command::Check { transfer_probe } => {
            let overrides = HashMap::new();
            match settings(&overrides) {
                Ok(s) => match transfer_probe {
                    Some(conversation) => crate::check::transfer_probe(&s, &conversation).await,
                    None => crate::check::run(&s).await,
                },
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let mut overrides = HashMap::new();
    if let Some(p) = args.port {
        overrides.insert("PORT", p.to_string());
    }
    if let Some(b) = args.bind_addr {
        overrides.insert("BIND_ADDR", b);
    }
    if let Some(d) = args.database_url {
        overrides.insert("DATABASE_URL", d);
    }
    if let Some(l) = args.log_format {
        overrides.insert("LOG_FORMAT", l);
    }
    let settings = match settings(&overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Log lines are formatted on the request's thread but written by a background thread, so a
    // slow stdout (a pipe, a log shipper) does not stall handoffs until 128,000 lines are waiting.
    // Not lossy: past that, logging waits rather than dropping an outcome line. The guard flushes
    // on return.
    let (stdout, _flush_on_exit) =
        tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stdout());
    telemetry::init(telemetry::subscriber("info", settings.log_format, stdout));
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "failed to start");
            eprintln!("failed to start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(crate::startup::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}

async fn report(args: ReportArgs) -> ExitCode {
    let filter = match crate::report::report_filter(
        &args.since,
        args.until.as_deref(),
        args.reason.as_deref(),
        chrono::Utc::now(),
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let url = args
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "sqlite://handoff.db".to_owned());
    match crate::report::run(&url, &filter).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("report failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn simulator(port: u16) -> ExitCode {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // A real org's default allowance (300 calls a minute per token), so `serve` meets its call budget.
    let cfg = genesys_sim::SimConfig { rate_limit_per_minute: Some(300), ..genesys_sim::SimConfig::default() };
    let client_id = cfg.client_id.clone();
    let handle = match genesys_sim::spawn_on(addr, cfg).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("failed to start the simulator on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("Genesys simulator listening on {}", handle.base_url());
    println!("  GENESYS_BASE_URL={0} GENESYS_LOGIN_BASE_URL={0}", handle.base_url());
    println!("  GENESYS_CLIENT_ID={client_id} GENESYS_CLIENT_SECRET=<the simulator's default secret>");
    println!(
        "  queues: Support {} Billing {} Overflow {} After hours {}",
        genesys_sim::SUPPORT_QUEUE,
        genesys_sim::BILLING_QUEUE,
        genesys_sim::OVERFLOW_QUEUE,
        genesys_sim::EMPTY_QUEUE
    );
    println!("  admin API: {}/__admin/calls (see crates/genesys-sim/README.md)", handle.base_url());
    let _ = crate::startup::shutdown_signal().await;
    handle.shutdown().await;
    ExitCode::SUCCESS
}
