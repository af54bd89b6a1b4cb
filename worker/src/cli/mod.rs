//! The `openshell` command line.

pub mod audit;
pub mod cancel;
pub mod doctor;
pub mod exec;
pub mod health;
pub mod mcp;
pub mod outputs;
pub mod result;
pub mod session;
pub mod submit;
pub mod worker;
pub mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// OpenShell: run untrusted, AI-generated code in sandboxes, over NATS.
#[derive(Debug, Parser)]
#[command(
    name = "openshell",
    version,
    about,
    after_help = "Examples:\n  openshell worker\n  openshell exec --lang python -c 'print(6*7)'\n  openshell audit tail\n  openshell workers\n  openshell doctor\n  openshell config"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a worker.
    Worker(worker::WorkerArgs),
    /// Run one job and print its output.
    Exec(Box<exec::ExecCommand>),
    /// Queue a job in durable mode (same flags as exec); prints its id.
    Submit(Box<submit::SubmitArgs>),
    /// Print the stored result of a submitted job.
    Result(result::ResultArgs),
    /// Cancel a queued or running job by id.
    Cancel(cancel::CancelArgs),
    /// Audit events.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Print the effective worker configuration, secrets redacted.
    Config(ConfigArgs),
    /// Measure throughput and latency, next to the raw operation.
    Bench(Box<crate::bench::BenchArgs>),
    /// List live workers with their pools, load and health.
    Workers(workers::WorkersArgs),
    /// Check NATS, each pool's backend and the clock; print what to fix.
    Doctor(doctor::DoctorArgs),
    /// Serve OpenShell to an MCP-capable agent over stdio.
    Mcp(mcp::McpArgs),
    /// Ask a local worker whether it is live (or ready): for container health checks.
    Health(health::HealthArgs),
    /// Open or close a session: one sandbox kept across jobs (`exec --session`).
    #[command(subcommand)]
    Session(session::SessionCommand),
}

/// Options of `openshell config`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell config\n  SANDBOX_BACKEND=none NATS_PASSWORD=x openshell config --config worker.toml"
)]
pub struct ConfigArgs {
    /// TOML configuration file (env OPENSHELL_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    let outcome = match cli.command {
        Command::Worker(args) => match Config::load(args.config.as_deref(), &args.overrides()) {
            Ok(config) => {
                crate::logging::init(&config.worker.log_level);
                worker::run(config).await
            }
            Err(error) => Err(error.into()),
        },
        Command::Exec(args) => exec::run(*args).await,
        Command::Submit(args) => submit::run(*args).await,
        Command::Result(args) => result::run(args).await,
        Command::Cancel(args) => cancel::run(args).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Bench(args) => crate::bench::run(*args).await,
        Command::Workers(args) => workers::run(args).await,
        Command::Doctor(args) => doctor::run(args).await,
        Command::Mcp(args) => mcp::run(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Session(command) => session::run(command).await,
        Command::Config(args) => Config::load(args.config.as_deref(), &Overrides::default())
            .map(|config| {
                print!("{}", config.to_redacted_toml());
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("openshell: {error:#}");
        ExitCode::FAILURE
    })
}
