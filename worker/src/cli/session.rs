//! `openshell session open|close`: a sandbox kept across jobs (`openshell exec --session`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use openshell_protocol::session::{Kernel, SessionOpen};
use openshell_protocol::session_client::SessionHandle;
use openshell_protocol::{ByteSize, Client, DurationMs, Limits, Subjects};

use super::exec::exit;
use crate::client::NatsArgs;

/// Session commands.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Open a session; prints its handle (WORKER.SESSION) for `exec --session`.
    Open(OpenArgs),
    /// Close a session, destroying its sandbox.
    Close(CloseArgs),
}

/// Options of `openshell session open`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  S=$(openshell session open --pool docker --kernel python --ttl 10m --idle 2m)\n  openshell exec --session \"$S\" --lang python -c 'x = 41'\n  openshell exec --session \"$S\" --lang python -c 'print(x + 1)'\n  openshell session close \"$S\""
)]
pub struct OpenArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Pool (env OPENSHELL_POOL; default: SANDBOX_BACKEND, else docker).
    #[arg(long, env = "OPENSHELL_POOL")]
    pool: Option<String>,
    /// Tenant (env OPENSHELL_TENANT).
    #[arg(long, env = "OPENSHELL_TENANT", default_value = "default")]
    tenant: String,
    /// Longest life, e.g. 10m (the pool's default when absent).
    #[arg(long)]
    ttl: Option<DurationMs>,
    /// Close after this long without a job, e.g. 2m.
    #[arg(long)]
    idle: Option<DurationMs>,
    /// Keep an interpreter alive between jobs of its language: `python` or `node`.
    #[arg(long, value_parser = ["python", "node"])]
    kernel: Option<String>,
    /// Memory of the whole sandbox, e.g. 512m.
    #[arg(long)]
    memory: Option<ByteSize>,
    /// Processes of the whole sandbox.
    #[arg(long)]
    processes: Option<u64>,
    /// Disk of the whole sandbox, e.g. 100m.
    #[arg(long)]
    disk: Option<ByteSize>,
    /// CPU share in cores.
    #[arg(long)]
    cpus: Option<f64>,
    /// Print the full answer as JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `openshell session close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Tenant (env OPENSHELL_TENANT).
    #[arg(long, env = "OPENSHELL_TENANT", default_value = "default")]
    tenant: String,
    /// The handle `openshell session open` printed.
    handle: String,
}

/// Runs a session command.
pub async fn run(command: SessionCommand) -> anyhow::Result<ExitCode> {
    match command {
        SessionCommand::Open(args) => open(args).await,
        SessionCommand::Close(args) => close(args).await,
    }
}

async fn open(args: OpenArgs) -> anyhow::Result<ExitCode> {
    let client = connect(&args.nats, &args.tenant).await?;
    let pool = args
        .pool
        .clone()
        .unwrap_or_else(crate::client::default_pool);
    let request = SessionOpen {
        ttl: args.ttl,
        idle: args.idle,
        kernel: match args.kernel.as_deref() {
            Some("node") => Some(Kernel::Node),
            Some(_) => Some(Kernel::Python),
            None => None,
        },
        limits: Limits {
            memory: args.memory,
            processes: args.processes,
            disk: args.disk,
            cpus: args.cpus,
            ..Limits::default()
        },
        ..SessionOpen::default()
    };
    match client.open_session(&pool, &args.tenant, &request).await {
        Ok(opened) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&opened)?);
            } else {
                println!("{}", SessionHandle::of(&opened));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("openshell session open: {error}");
            Ok(ExitCode::from(exit::CLIENT_ERROR))
        }
    }
}

async fn close(args: CloseArgs) -> anyhow::Result<ExitCode> {
    let handle = SessionHandle::parse(&args.handle)?;
    let client = connect(&args.nats, &args.tenant).await?;
    let subject = client
        .subjects()
        .session_close(&handle.worker, &args.tenant, &handle.session);
    match client.close_session_at(&subject, &handle.session).await {
        Ok(closed) => {
            println!(
                "closed {} after {} job(s), {} kernel restart(s), {} ms",
                handle, closed.jobs, closed.kernel_restarts, closed.lifetime_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("openshell session close: {error}");
            Ok(ExitCode::from(exit::CLIENT_ERROR))
        }
    }
}

/// Runs `request` in the session `handle` names, as `tenant` (for `openshell exec --session`).
pub(crate) async fn exec_in(
    client: &Client,
    tenant: &str,
    handle: &str,
    request: &openshell_protocol::ExecRequest,
) -> Result<openshell_protocol::ExecResult, String> {
    let handle = SessionHandle::parse(handle).map_err(|error| error.to_string())?;
    let subject = client
        .subjects()
        .session_run(&handle.worker, tenant, &handle.session);
    client
        .session_exec_at(&subject, &handle.session, request)
        .await
        .map_err(|error| error.to_string())
}

async fn connect(nats: &NatsArgs, tenant: &str) -> anyhow::Result<Client> {
    let connection = nats.connect_as(tenant).await?;
    Ok(Client::new(
        connection,
        Subjects::new(nats.subject_prefix.clone()),
    ))
}
