//! A job held to egress rules: its proxy started before the backend runs it, each connection
//! attempt audited (`network` events) and counted as it ends, and the byte cap's verdict.

use std::sync::Arc;

use chrono::Utc;
use openshell_protocol::audit::NetworkAttempt;
use openshell_protocol::{AuditEvent, AuditEventType, ErrorInfo, ErrorKind, ExecResult, Verdict};
use openshell_scheduler::NetworkGrant;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::audit::AuditSink;
use crate::config::NetworkConfig;
use crate::egress::{EgressProxy, EgressSummary, MAX_ATTEMPTS};
use crate::metrics::Metrics;
use openshell_backend::EgressEndpoint;

/// A job's running proxy and the task auditing its attempts.
pub(super) struct JobEgress {
    proxy: EgressProxy,
    auditor: JoinHandle<()>,
}

impl JobEgress {
    /// The proxy for a job granted `grant` (none unless it is held to egress rules); `event`
    /// is the job's `started` event, the base of its `network` events.
    pub fn start(
        grant: &NetworkGrant,
        config: &NetworkConfig,
        event: &AuditEvent,
        audit: Arc<dyn AuditSink>,
        metrics: (Arc<Metrics>, String),
    ) -> Result<Option<Self>, ErrorInfo> {
        let NetworkGrant::Egress(rules) = grant else {
            return Ok(None);
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let proxy = EgressProxy::start(
            &config.dir,
            &event.job_id,
            config.policy(rules.clone()),
            sender,
        )
        .map_err(|error| {
            ErrorInfo::new(
                ErrorKind::SandboxStartFailed,
                format!("{error}; the job was not run: check pools.NAME.network.dir"),
            )
        })?;
        let base = AuditEvent {
            event: AuditEventType::Network,
            code: None,
            ..event.clone()
        };
        let auditor = tokio::spawn(audit_attempts(receiver, base, audit, metrics));
        Ok(Some(Self { proxy, auditor }))
    }

    /// What the backend mounts.
    pub fn endpoint(&self) -> EgressEndpoint {
        self.proxy.endpoint().clone()
    }

    /// Stops the proxy once the job ended, waits until every attempt was audited, and puts
    /// the byte cap's verdict on `result` when the job passed it.
    pub async fn finish(self, result: &mut ExecResult, max_bytes: Option<u64>) -> EgressSummary {
        let summary = self.proxy.finish().await;
        let _ = self.auditor.await;
        let why = if summary.over_limit {
            format!(
                "the job moved more than the pool's network.max_bytes = {} bytes through the egress \
                 proxy; its connections were cut (the program went on without them)",
                max_bytes.unwrap_or_default()
            )
        } else {
            format!(
                "the job opened more than {MAX_ATTEMPTS} connections through the egress proxy, which \
                 then stopped taking more (the program went on without them)"
            )
        };
        if (summary.over_limit || summary.too_many_attempts)
            && matches!(result.status, Verdict::Completed)
        {
            result.status = Verdict::NetworkLimit;
            result.error = Some(ErrorInfo::new(ErrorKind::NetworkLimitExceeded, why));
        }
        summary
    }
}

async fn audit_attempts(
    mut attempts: mpsc::UnboundedReceiver<NetworkAttempt>,
    base: AuditEvent,
    audit: Arc<dyn AuditSink>,
    (metrics, pool): (Arc<Metrics>, String),
) {
    while let Some(attempt) = attempts.recv().await {
        metrics.network.attempt(
            &pool,
            attempt.allowed,
            attempt.bytes_sent + attempt.bytes_received,
        );
        let event = AuditEvent {
            timestamp: Utc::now(),
            network: Some(attempt),
            ..base.clone()
        };
        let published = audit.publish(&event).await;
        metrics.audit(published.is_ok());
        if let Err(error) = published {
            tracing::error!(%error, "network audit event lost");
        }
    }
}
