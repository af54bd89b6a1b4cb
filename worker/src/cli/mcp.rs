//! `openshell mcp`: serve the Model Context Protocol on stdio (see `crate::mcp`).

use std::process::ExitCode;

use clap::Args;
use openshell_protocol::{Client, Subjects};

use crate::client::NatsArgs;
use crate::mcp::McpServer;

/// Serve OpenShell to an MCP-capable agent over stdio: tools run_code, list_pools, get_result.
#[derive(Debug, Args)]
#[command(
    after_help = "Add to an agent's MCP configuration, e.g.:\n  {\"mcpServers\": {\"openshell\": {\"command\": \"openshell\", \"args\": [\"mcp\", \"--tenant\", \"acme\"], \"env\": {\"NATS_URL\": \"nats://127.0.0.1:4222\"}}}}\n\nLogs go to stderr; stdout carries the protocol."
)]
pub struct McpArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Pool jobs run on unless a call names one (env OPENSHELL_POOL; default: SANDBOX_BACKEND, else docker).
    #[arg(long, env = "OPENSHELL_POOL")]
    pool: Option<String>,
    /// Tenant the jobs run for.
    #[arg(long, env = "OPENSHELL_TENANT", default_value = "default")]
    tenant: String,
}

/// Connects to NATS as the tenant's agent and serves MCP until stdin closes.
pub async fn run(args: McpArgs) -> anyhow::Result<ExitCode> {
    let nats = args.nats.connect_as(&args.tenant).await?;
    let prefix = args.nats.subject_prefix.clone();
    let client = Client::new(nats, Subjects::new(prefix.clone()));
    let pool = args.pool.unwrap_or_else(crate::client::default_pool);
    McpServer::new(client, args.tenant, pool, prefix)
        .serve_stdio()
        .await?;
    Ok(ExitCode::SUCCESS)
}
