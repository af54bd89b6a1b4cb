//! `openshell bench --session`: a call in a warm session against a fresh job on the same pool,
//! interleaved call by call so that drift affects both, reported as a ratio.
//!
//! Calls are sequential (a session runs one job at a time); `--total` calls per side after
//! `--warmup` unmeasured ones. With `--lang python` the session has a Python kernel, so its
//! calls are cells of a live interpreter, the case sessions are for.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use openshell_protocol::session::{Kernel, SessionOpen};
use openshell_protocol::{Client, ExecRequest, Limits, Verdict};

use super::workload::Workload;

/// What the session bench measured.
#[derive(Debug, serde::Serialize)]
struct SessionReport {
    pool: String,
    calls: u64,
    kernel: bool,
    session_p50_ms: f64,
    session_p90_ms: f64,
    fresh_p50_ms: f64,
    fresh_p90_ms: f64,
    /// Session p50 ÷ fresh p50: below 1 means the session call is faster.
    ratio_p50: f64,
}

/// Runs the session bench: `total` calls per side on `pool` as `tenant`.
pub(super) async fn run(
    client: &Client,
    pool: &str,
    tenant: &str,
    workload: &Workload,
    limits: &Limits,
    (warmup, total): (u64, u64),
    json: bool,
) -> anyhow::Result<ExitCode> {
    let kernel = matches!(workload, Workload::Code { language, .. } if language == "python");
    let open = SessionOpen {
        kernel: kernel.then_some(Kernel::Python),
        ..SessionOpen::default()
    };
    let session = client
        .open_session(pool, tenant, &open)
        .await
        .context("opening the bench's session")?;
    let run_id = std::process::id();
    let mut in_session = Vec::new();
    let mut fresh = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for call in 0..warmup + total {
            let request = workload.request(format!("bench-s-{run_id}-{call}"), limits);
            let started = Instant::now();
            let result = client.session_exec(&session, &request).await?;
            let took = started.elapsed();
            check(&result, "session")?;
            let request: ExecRequest = workload.request(format!("bench-f-{run_id}-{call}"), limits);
            let started = Instant::now();
            let result = client.exec(pool, tenant, &request).await?;
            let took_fresh = started.elapsed();
            check(&result, "fresh")?;
            if call >= warmup {
                in_session.push(took);
                fresh.push(took_fresh);
            }
        }
        Ok(())
    }
    .await;
    let closed = client.close_session(&session).await;
    outcome?;
    closed.context("closing the bench's session")?;
    let report = SessionReport {
        pool: pool.to_string(),
        calls: total,
        kernel,
        session_p50_ms: percentile(&mut in_session, 0.5),
        session_p90_ms: percentile(&mut in_session, 0.9),
        fresh_p50_ms: percentile(&mut fresh, 0.5),
        fresh_p90_ms: percentile(&mut fresh, 0.9),
        ratio_p50: 0.0,
    };
    let report = SessionReport {
        ratio_p50: report.session_p50_ms / report.fresh_p50_ms.max(f64::MIN_POSITIVE),
        ..report
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "pool {} ({} calls per side{}):\n  session call  p50 {:.1} ms  p90 {:.1} ms\n  fresh job     p50 {:.1} ms  p90 {:.1} ms\n  session ÷ fresh (p50): {:.3}",
            report.pool,
            report.calls,
            if kernel { ", python kernel" } else { "" },
            report.session_p50_ms,
            report.session_p90_ms,
            report.fresh_p50_ms,
            report.fresh_p90_ms,
            report.ratio_p50
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check(result: &openshell_protocol::ExecResult, side: &str) -> anyhow::Result<()> {
    if result.status != Verdict::Completed || result.exit_code != Some(0) {
        bail!(
            "a {side} call did not complete with exit 0: {} {:?}",
            result.status,
            result.error
        );
    }
    Ok(())
}

/// The `q` quantile of `samples`, in milliseconds (0 when empty).
fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let index = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[index.min(samples.len() - 1)].as_secs_f64() * 1000.0
}
