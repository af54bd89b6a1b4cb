//! `openshell mcp`: OpenShell as a Model Context Protocol server over stdio (the official
//! Rust SDK, `rmcp`), so an MCP-capable agent runs code in OpenShell's sandboxes with no code
//! of its own.
//!
//! Tools: `run_code` (language and code, optional stdin, files, limits and `outputs`; answers
//! with the verdict, exit code, stdout and stderr, and the returned files as content: images
//! as image content), `list_pools` (the pools live workers serve, with
//! their backends, health and ceilings, and the built-in languages), `get_result` (the
//! stored result of a durable job) and `get_audit_trail` (the audit events of a job this
//! server ran, see `trail.rs`); and the session tools of `session.rs` (`open_session`,
//! `run_in_session`, `close_session`). Every call is a job of the configured tenant, sent like
//! `openshell exec` sends it; a job that did not complete (timeout, rejection, ...) is a tool
//! error whose text says why, never a failed server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use openshell_protocol::{
    ByteSize, Client, DurationMs, ExecRequest, ExecResult, FileSpec, OutputPattern, Payload,
    RelativePath, ReturnedFiles, Verdict,
};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ResourceContents, ServerCapabilities,
    ServerConfig,
};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::durable::client::DurableClient;

mod session;
mod trail;

use trail::Trails;

/// How long `list_pools` collects workers' answers.
const DISCOVERY_WAIT: Duration = Duration::from_millis(500);

/// The arguments of `run_code`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCode {
    /// The language: python, node, javascript, bash or sh (or one the pool adds).
    pub language: String,
    /// The source code to run.
    pub code: String,
    /// Text for the program's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Text files to place in the working directory first, by relative path.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Wall-clock limit, e.g. `10s` (the pool's default when absent).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Memory limit, e.g. `256m` (the pool's default when absent).
    #[serde(default)]
    pub memory: Option<String>,
    /// The pool to run on (the server's pool when absent).
    #[serde(default)]
    pub pool: Option<String>,
    /// Files to return after the run, as paths or globs relative to the working directory
    /// (`out/*.png`, `report.csv`); images come back as image content.
    #[serde(default)]
    pub outputs: Vec<String>,
}

/// The arguments of `get_result` and `get_audit_trail`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobId {
    /// The id the job was submitted with.
    pub id: String,
}

/// What a finished job tells the agent.
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<&'a str>,
    stdout: std::borrow::Cow<'a, str>,
    stderr: std::borrow::Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    wall_time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<&'a ReturnedFiles>,
}

/// Largest returned file passed on as MCP content; larger ones are listed only.
const MAX_CONTENT_BYTES: u64 = 4 * 1024 * 1024;

/// The MCP server: a NATS client acting for one tenant, on one default pool.
#[derive(Clone)]
pub struct McpServer {
    client: Client,
    tenant: String,
    pool: String,
    prefix: String,
    trails: Trails,
}

/// Numbers this server's jobs.
static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// This server's random tag in its job ids, so that ids of two servers (two containers both
/// at pid 1, a restart) never collide.
static SESSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    // Randomly keyed per process, as HashMap's seeds are.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
});

#[tool_router]
impl McpServer {
    /// A server sending jobs through `client` as `tenant`, to `pool` unless a call names one.
    pub fn new(client: Client, tenant: String, pool: String, prefix: String) -> Self {
        Self {
            client,
            tenant,
            pool,
            prefix,
            trails: Trails::default(),
        }
    }

    /// Serves MCP on stdin and stdout until the client closes them.
    pub async fn serve_stdio(self) -> anyhow::Result<()> {
        let running = self.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        Ok(())
    }

    #[tool(
        description = "Run code in a fresh, isolated OpenShell sandbox (no network) and return its verdict, exit code, stdout and stderr. Languages: python, node, javascript, bash, sh. Optional: stdin, text files for the working directory, timeout (e.g. 10s), memory (e.g. 256m), pool, and outputs: paths or globs of files the code writes to return (images come back as images)."
    )]
    async fn run_code(&self, Parameters(call): Parameters<RunCode>) -> CallToolResult {
        let request = match self.request(&call) {
            Ok(request) => request,
            Err(message) => return tool_error(format!("invalid run_code arguments: {message}")),
        };
        let pool = call.pool.unwrap_or_else(|| self.pool.clone());
        let recording = self
            .trails
            .record(self.client.nats(), &self.prefix, &self.tenant, &request.id)
            .await;
        let result = match self.client.exec(&pool, &self.tenant, &request).await {
            Ok(result) => result,
            Err(error) => {
                return tool_error(format!("the job was not run or not answered: {error}"));
            }
        };
        if let Some(recording) = recording {
            tokio::spawn(Trails::keep(recording));
        }
        let mut answer = outcome(&result);
        answer.content.extend(self.file_contents(&result).await);
        answer
    }

    #[tool(
        description = "List the pools that live OpenShell workers serve (backend, health, slots, highest limits) and the built-in languages."
    )]
    async fn list_pools(&self) -> CallToolResult {
        match crate::cli::workers::discover(self.client.nats(), DISCOVERY_WAIT).await {
            Ok(workers) => {
                let languages: Vec<String> =
                    openshell_backend::language::builtin().into_keys().collect();
                let listing = serde_json::json!({ "workers": workers, "languages": languages });
                CallToolResult::success(vec![ContentBlock::text(listing.to_string())])
            }
            Err(error) => tool_error(format!("discovering workers failed: {error:#}")),
        }
    }

    #[tool(
        description = "Fetch the stored result of a job submitted in durable mode (openshell submit), by its id."
    )]
    async fn get_result(&self, Parameters(call): Parameters<JobId>) -> CallToolResult {
        if let Err(error) = openshell_protocol::subjects::check_token("id", &call.id) {
            return tool_error(format!("invalid get_result arguments: {error}"));
        }
        let durable = DurableClient::new(self.client.nats().clone(), &self.prefix);
        match durable.result(&self.tenant, &call.id, Duration::ZERO).await {
            Ok(Some(result)) => outcome(&result),
            Ok(None) => tool_error(format!("no stored result for job `{}` yet", call.id)),
            Err(error) => tool_error(format!(
                "reading the result of `{}` failed: {error}",
                call.id
            )),
        }
    }

    #[tool(
        description = "The audit trail of a job this server ran (one of its last 64), by its id: the audit events the workers recorded for it (received with the code as sent, started, finished with the verdict and returned files' hashes, or rejected)."
    )]
    async fn get_audit_trail(&self, Parameters(call): Parameters<JobId>) -> CallToolResult {
        match self.trails.get(&call.id).await {
            Some(events) if !events.is_empty() => {
                CallToolResult::success(vec![ContentBlock::text(
                    serde_json::to_string_pretty(&events).unwrap_or_default(),
                )])
            }
            Some(_) => tool_error(format!(
                "no audit events were seen for job `{}`: the server's NATS user may not read this \
                 tenant's audit subjects (see accounts.conf)",
                call.id
            )),
            None => tool_error(format!(
                "job `{}` is not one of the last {} jobs this server ran; a tenant's whole trail is \
                 in the OPENSHELL_AUDIT stream, for an auditor (`openshell audit export`)",
                call.id,
                trail::KEPT_JOBS
            )),
        }
    }

    /// The returned files of `result` as MCP content: images as images, UTF-8 text as text
    /// resources, other bytes as blob resources; a file that cannot be fetched says why.
    async fn file_contents(&self, result: &ExecResult) -> Vec<ContentBlock> {
        let Some(outputs) = &result.outputs else {
            return Vec::new();
        };
        let mut blocks = Vec::new();
        for file in &outputs.files {
            let uri = format!("openshell://{}/{}/{}", self.tenant, result.id, file.path);
            if file.size > MAX_CONTENT_BYTES {
                blocks.push(ContentBlock::text(format!(
                    "{uri}: {} bytes, too large to pass on here (sha256 {}); fetch it with `openshell exec --output-file`",
                    file.size, file.sha256
                )));
                continue;
            }
            let bytes = match self.client.fetch_file(&self.tenant, &result.id, file).await {
                Ok(bytes) => bytes,
                Err(error) => {
                    blocks.push(ContentBlock::text(format!("{uri}: {error}")));
                    continue;
                }
            };
            let base64 = || base64::engine::general_purpose::STANDARD.encode(&bytes);
            let block = match image_type(file.path.as_str()) {
                Some(mime) => ContentBlock::image(base64(), mime),
                None => match std::str::from_utf8(&bytes) {
                    Ok(text) => ContentBlock::embedded_text(uri, text),
                    Err(_) => ContentBlock::resource(ResourceContents::blob(base64(), uri)),
                },
            };
            blocks.push(block);
        }
        blocks
    }

    /// A fresh job id of this server.
    fn next_id(&self) -> String {
        format!(
            "mcp-{}-{}",
            *SESSION,
            NEXT_JOB.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The request for a `run_code` call, or what is wrong with it.
    fn request(&self, call: &RunCode) -> Result<ExecRequest, String> {
        let mut request = ExecRequest::code(self.next_id(), &call.language, call.code.clone());
        request.stdin = call
            .stdin
            .as_ref()
            .map(|text| Payload(text.clone().into_bytes()));
        for (path, content) in &call.files {
            let path = RelativePath::parse(path).map_err(|error| format!("files: {error}"))?;
            request.files.push(FileSpec {
                path,
                content: Payload(content.clone().into_bytes()),
                mode: None,
            });
        }
        if let Some(timeout) = &call.timeout {
            request.limits.timeout = Some(
                timeout
                    .parse::<DurationMs>()
                    .map_err(|error| format!("timeout `{timeout}`: {error}"))?,
            );
        }
        request.outputs = call
            .outputs
            .iter()
            .map(|pattern| {
                OutputPattern::parse(pattern).map_err(|error| format!("outputs: {error}"))
            })
            .collect::<Result<_, _>>()?;
        if let Some(memory) = &call.memory {
            request.limits.memory = Some(
                memory
                    .parse::<ByteSize>()
                    .map_err(|error| format!("memory `{memory}`: {error}"))?,
            );
        }
        Ok(request)
    }
}

#[tool_handler(router = (Self::tool_router() + Self::session_router()))]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("openshell", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Runs untrusted code in OpenShell sandboxes: call run_code with a language and code; \
                 each call gets a fresh sandbox with no network.",
            )
    }
}

/// A finished job as tool content: an error unless it completed.
fn outcome(result: &ExecResult) -> CallToolResult {
    let summary = Outcome {
        id: &result.id,
        status: result.status.as_str(),
        exit_code: result.exit_code,
        signal: result.signal_name.as_deref(),
        stdout: result.stdout.to_text_lossy(),
        stderr: result.stderr.to_text_lossy(),
        truncated: result.stdout_truncated || result.stderr_truncated,
        error: result.error.as_ref().map(|error| error.message.as_str()),
        wall_time_ms: result.wall_time_ms,
        files: result.outputs.as_ref(),
    };
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    if result.status == Verdict::Completed {
        CallToolResult::success(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::error(vec![ContentBlock::text(text)])
    }
}

/// The MIME type of an image file MCP clients show, by its extension.
fn image_type(path: &str) -> Option<&'static str> {
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}
