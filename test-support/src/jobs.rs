//! Small jobs for backend tests that do not go through the conformance suite.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use openshell_backend::{
    Backend, BackendError, CapturedOutput, Execution, Job, JobControl, JobFile, OutputSink,
};
use openshell_protocol::{ByteSize, DurationMs, Limits, Payload};
use tokio_util::sync::CancellationToken;

/// A job running `script` with bash, under a 20 s timeout and a 1 MiB output limit.
pub fn bash_job(script: &str) -> Job {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Job {
        id: format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        tenant: "test".to_string(),
        language: Some("bash".to_string()),
        argv: vec!["bash".to_string(), "main.sh".to_string()],
        stdin: Payload::default(),
        env: BTreeMap::new(),
        files: vec![JobFile {
            path: "main.sh".parse().expect("a relative path"),
            content: script.as_bytes().to_vec(),
            mode: 0o644,
        }],
        limits: Limits {
            timeout: Some(DurationMs::secs(20)),
            output: Some(ByteSize::mib(1)),
            memory: Some(ByteSize::mib(512)),
            processes: Some(256),
            ..Limits::default()
        },
        network: false,
        egress: None,
        outputs: None,
    }
}

/// A job `id` of `tenant` running `code` as `main.py` with python3 under `limits`.
pub fn python_job(id: String, tenant: &str, code: &str, limits: Limits) -> Job {
    Job {
        id,
        tenant: tenant.to_string(),
        language: Some("python".to_string()),
        argv: vec!["python3".to_string(), "main.py".to_string()],
        stdin: Payload::default(),
        env: BTreeMap::new(),
        files: vec![JobFile {
            path: "main.py".parse().expect("a relative path"),
            content: code.as_bytes().to_vec(),
            mode: 0o644,
        }],
        limits,
        network: false,
        egress: None,
        outputs: None,
    }
}

/// Runs `job` with `cancel`; returns the backend's answer and the output kept.
pub async fn run(
    backend: &dyn Backend,
    job: Job,
    cancel: CancellationToken,
) -> (Result<Execution, BackendError>, CapturedOutput) {
    let output = OutputSink::new(job.limits.output.map_or(u64::MAX, ByteSize::bytes));
    let control = JobControl {
        cancel,
        output: output.clone(),
    };
    let result = backend.execute(job, control).await;
    (result, output.snapshot())
}

/// A marker unique to this process and call, for a job's command lines.
pub fn marker(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "openshell-marker-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
