//! `openshell worker`: serve the configured pools until SIGTERM or SIGINT. The worker itself
//! is [`crate::worker::Worker`]; this command loads its configuration and waits for a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::{Config, Overrides};
use crate::registry::BackendRegistry;
use crate::worker::Worker;

/// Run a worker: take jobs from NATS and run them on the configured backends.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  openshell worker                      # one pool on SANDBOX_BACKEND (default docker)\n  SANDBOX_BACKEND=none LOG_LEVEL=debug openshell worker\n  openshell worker --config /etc/openshell/worker.toml --nats nats://10.0.0.5:4222"
)]
pub struct WorkerArgs {
    /// TOML configuration file (env OPENSHELL_CONFIG).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated (env NATS_URL).
    #[arg(long)]
    pub nats: Option<String>,
    /// Serve a single pool on this backend, named after it (env SANDBOX_BACKEND; default docker).
    #[arg(long)]
    pub backend: Option<openshell_backend::BackendKind>,
    /// Jobs run at once per pool (env OPENSHELL_SLOTS).
    #[arg(long)]
    pub slots: Option<usize>,
    /// Worker id in results and audit events (env OPENSHELL_WORKER_ID).
    #[arg(long)]
    pub worker_id: Option<String>,
}

impl WorkerArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            nats_url: self.nats.clone(),
            backend: self.backend.clone(),
            slots: self.slots,
            worker_id: self.worker_id.clone(),
        }
    }
}

/// Runs the worker until a signal, then drains.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let worker = Worker::start(config, BackendRegistry::new()).await?;
    // Tests and `openshell bench` wait for this line.
    tracing::info!(worker = %worker.worker_id(), pools = worker.pools().len(), "OpenShell worker ready");
    wait_for_signal().await;
    worker.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the worker with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
