//! The canary: one tiny job (`true`) through a pool's backend under the pool's own defaults,
//! admitted as any job is. It fails where every job of the pool would: a missing image, a
//! limit the backend refuses or cannot enforce, a zero timeout, a host that cannot start
//! sandboxes. Health checks and `openshell doctor` run it.

use std::time::Duration;

use chrono::Utc;
use openshell_protocol::{ErrorInfo, ExecRequest};
use openshell_scheduler::{PoolPolicy, TenantFilter, admit};
use tokio_util::sync::CancellationToken;

use openshell_backend::{Backend, Capabilities, Ending, JobControl, OutputSink};

/// The tenant canary jobs run as.
pub const CANARY_TENANT: &str = "_canary";
/// Time a canary gets beyond the pool's default timeout.
const SLACK: Duration = Duration::from_secs(10);

/// Runs the canary through `backend` under `policy`; `Err` says what failed and what to do.
pub async fn run(
    backend: &dyn Backend,
    policy: &PoolPolicy,
    capabilities: &Capabilities,
) -> Result<(), String> {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let request = ExecRequest::command(format!("canary-{nanos}"), vec!["true".into()]);
    // The canary checks the pool's defaults, not who may use it.
    let policy = PoolPolicy {
        tenants: TenantFilter::Any,
        allow_commands: true,
        ..policy.clone()
    };
    let admitted =
        admit(&request, CANARY_TENANT, &policy, capabilities, Utc::now()).map_err(|rejection| {
            format!(
                "the pool's own defaults are refused ({}); fix the pool's defaults",
                ErrorInfo::from(rejection)
            )
        })?;
    let job = super::prepare::build_job(&request, &admitted, CANARY_TENANT, None, None);
    let output = OutputSink::new(64 * 1024);
    let control = JobControl {
        cancel: CancellationToken::new(),
        output: output.clone(),
    };
    let allowed = admitted
        .limits
        .timeout
        .map_or(Duration::ZERO, |timeout| timeout.as_duration())
        + SLACK;
    let execution = tokio::time::timeout(allowed, backend.execute(job, control))
        .await
        .map_err(|_| format!("the canary job (`true`) did not end within {allowed:?}"))?
        .map_err(|error| format!("the canary job (`true`) could not run: {error}"))?;
    let stderr = String::from_utf8_lossy(&output.snapshot().stderr).into_owned();
    match (execution.ending, execution.exit_code) {
        (Ending::Exited, Some(0)) => Ok(()),
        (ending, code) => Err(format!(
            "the canary job (`true`) ended {ending:?} with exit code {code:?} under the pool's defaults {}; stderr: {}",
            serde_json::to_string(&admitted.limits).unwrap_or_default(),
            stderr.trim()
        )),
    }
}
