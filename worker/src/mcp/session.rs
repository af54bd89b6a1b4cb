//! The session tools: `open_session`, `run_in_session`, `close_session`. A session keeps one
//! sandbox (and with `kernel: "python"` a live interpreter) across calls; the agent holds its
//! handle (`WORKER.SESSION`) between them.

use openshell_protocol::session::{Kernel, SessionOpen};
use openshell_protocol::session_client::SessionHandle;
use openshell_protocol::{DurationMs, ExecRequest};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use super::{McpServer, outcome, tool_error};

/// The arguments of `open_session`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    /// `python` (or `node`) to keep an interpreter alive between calls of that language
    /// (variables persist).
    #[serde(default)]
    pub kernel: Option<String>,
    /// Longest life, e.g. `10m` (the pool's default when absent).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Close after this long without a call, e.g. `2m`.
    #[serde(default)]
    pub idle: Option<String>,
    /// The pool (the server's pool when absent).
    #[serde(default)]
    pub pool: Option<String>,
}

/// The arguments of `run_in_session`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunInSession {
    /// The handle `open_session` returned.
    pub session: String,
    /// The language: python (a cell of the kernel, if the session has one), bash, sh, node.
    pub language: String,
    /// The source code to run.
    pub code: String,
    /// Wall-clock limit of this call, e.g. `10s`.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The arguments of `close_session`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseSession {
    /// The handle `open_session` returned.
    pub session: String,
}

fn duration(what: &str, text: Option<&String>) -> Result<Option<DurationMs>, String> {
    text.map(|text| {
        text.parse::<DurationMs>()
            .map_err(|error| format!("{what} `{text}`: {error}"))
    })
    .transpose()
}

#[tool_router(router = session_router, vis = "pub(super)")]
impl McpServer {
    #[tool(
        description = "Open a session: one sandbox kept across calls, whose files persist; with kernel \"python\" a live Python interpreter keeps variables and imports between python calls, as in a notebook. Returns the session handle for run_in_session and close_session. Optional: ttl (e.g. 10m), idle (e.g. 2m), pool."
    )]
    async fn open_session(&self, Parameters(call): Parameters<OpenSession>) -> CallToolResult {
        let kernel = match call.kernel.as_deref() {
            None => None,
            Some("python") => Some(Kernel::Python),
            Some("node") => Some(Kernel::Node),
            Some(other) => {
                return tool_error(format!("unknown kernel `{other}`: use python or node"));
            }
        };
        let (ttl, idle) = match (
            duration("ttl", call.ttl.as_ref()),
            duration("idle", call.idle.as_ref()),
        ) {
            (Ok(ttl), Ok(idle)) => (ttl, idle),
            (Err(error), _) | (_, Err(error)) => {
                return tool_error(format!("invalid open_session arguments: {error}"));
            }
        };
        let request = SessionOpen {
            kernel,
            ttl,
            idle,
            ..SessionOpen::default()
        };
        let pool = call.pool.unwrap_or_else(|| self.pool.clone());
        match self
            .client
            .open_session(&pool, &self.tenant, &request)
            .await
        {
            Ok(opened) => {
                let answer = serde_json::json!({
                    "session": SessionHandle::of(&opened).to_string(),
                    "expires_at": opened.expires_at,
                    "idle_ms": opened.idle.millis(),
                    "kernel": opened.kernel,
                });
                CallToolResult::success(vec![ContentBlock::text(answer.to_string())])
            }
            Err(error) => tool_error(format!("the session was not opened: {error}")),
        }
    }

    #[tool(
        description = "Run code in an open session (see open_session): files written by earlier calls are there, and python code runs in the session's live interpreter if it has one. One call at a time per session."
    )]
    async fn run_in_session(&self, Parameters(call): Parameters<RunInSession>) -> CallToolResult {
        let handle = match SessionHandle::parse(&call.session) {
            Ok(handle) => handle,
            Err(error) => return tool_error(error.to_string()),
        };
        let mut request = ExecRequest::code(self.next_id(), call.language, call.code);
        match duration("timeout", call.timeout.as_ref()) {
            Ok(timeout) => request.limits.timeout = timeout,
            Err(error) => return tool_error(format!("invalid run_in_session arguments: {error}")),
        }
        let subject =
            self.client
                .subjects()
                .session_run(&handle.worker, &self.tenant, &handle.session);
        match self
            .client
            .session_exec_at(&subject, &handle.session, &request)
            .await
        {
            Ok(result) => {
                let mut answer = outcome(&result);
                if result.kernel_restarted {
                    answer.content.push(ContentBlock::text(
                        "the session's python kernel was restarted: its variables are lost, its files are kept",
                    ));
                }
                answer
            }
            Err(error) => tool_error(format!("the call was not run: {error}")),
        }
    }

    #[tool(description = "Close a session, destroying its sandbox and everything in it.")]
    async fn close_session(&self, Parameters(call): Parameters<CloseSession>) -> CallToolResult {
        let handle = match SessionHandle::parse(&call.session) {
            Ok(handle) => handle,
            Err(error) => return tool_error(error.to_string()),
        };
        let subject =
            self.client
                .subjects()
                .session_close(&handle.worker, &self.tenant, &handle.session);
        match self
            .client
            .close_session_at(&subject, &handle.session)
            .await
        {
            Ok(closed) => CallToolResult::success(vec![ContentBlock::text(
                serde_json::to_string(&closed).unwrap_or_default(),
            )]),
            Err(error) => tool_error(format!("the session was not closed: {error}")),
        }
    }
}
