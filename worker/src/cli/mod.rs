//! The `openshell` command line.

pub mod audit;
pub mod cancel;
pub mod doctor;
pub mod exec;
pub mod result;
pub mod submit;
pub mod worker;
pub mod workers;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
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
    Exec(Box<exec::ExecArgs>),
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

/// NATS connection options of the client commands.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// Subject prefix.
    #[arg(long, env = "OPENSHELL_SUBJECT_PREFIX", default_value = openshell_protocol::subjects::DEFAULT_PREFIX)]
    pub subject_prefix: String,
}

impl NatsArgs {
    /// Connects with the same options as the worker (credentials from the environment).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let options = crate::nats::connect_once(&self.config()?, "openshell-cli", None).await;
        options.with_context(|| self.hint())
    }

    /// [`NatsArgs::connect`] as an agent of `tenant`: replies come on `_INBOX.<tenant>`, the
    /// only inboxes deploy/nats/accounts.conf lets that agent read (`_INBOX.<tenant>.>`).
    pub async fn connect_as(&self, tenant: &str) -> anyhow::Result<async_nats::Client> {
        let inbox = format!("_INBOX.{tenant}");
        let options =
            crate::nats::connect_once(&self.config()?, "openshell-cli", Some(&inbox)).await;
        options.with_context(|| self.hint())
    }

    /// The NATS settings of the worker configuration (file, then `NATS_*` variables) with the
    /// servers of `--nats`/`NATS_URL`. A bad setting is an error naming it: skipping it would
    /// drop credentials or TLS and connect without them.
    fn config(&self) -> anyhow::Result<crate::config::NatsConfig> {
        let mut config = crate::config::env::load_nats(|name| std::env::var(name).ok())
            .context("reading the NATS settings of this command")?;
        config.urls = crate::config::env::split_list(&self.url);
        Ok(config)
    }

    fn hint(&self) -> String {
        let urls = crate::config::env::split_list(&self.url);
        format!(
            "connecting to NATS at {}; is nats-server running (deploy/setup.sh)?",
            crate::config::Secret::redact_urls(&urls)
        )
    }
}

/// The pool a client uses when none is named: the one a default worker serves.
pub fn default_pool() -> String {
    std::env::var(crate::config::env::SANDBOX_BACKEND)
        .unwrap_or_else(|_| crate::config::DEFAULT_BACKEND.to_string())
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
