//! Audit events as OCSF 1.8.0 events (the Open Cybersecurity Schema Framework, which most SIEMs
//! read): a request taken or refused (`received`, `rejected`) is an **API Activity** (class
//! 6003, activity Create: a job was asked for), a program started or ended (`started`,
//! `finished`) a **Process Activity** (class 1007, Launch or Terminate). Each carries the stored
//! event verbatim in `raw_data`, chain fields included, so nothing is lost and its hash can be
//! checked against the chain. Checkpoints have no OCSF class and are left out (the JSON Lines
//! export keeps them). `worker/tests/ocsf/` vendors the two classes' JSON Schemas, which the
//! tests validate every exported event against.

use openshell_protocol::{AuditEvent, AuditEventType, Verdict};
use serde_json::{Value, json};

/// The OCSF version the events follow.
pub const OCSF_VERSION: &str = "1.8.0";

/// API Activity, category Application Activity.
const API_ACTIVITY: (u32, u32) = (6003, 6);
/// Network Activity, category Network Activity.
const NETWORK_ACTIVITY: (u32, u32) = (4001, 4);
/// Process Activity, category System Activity.
const PROCESS_ACTIVITY: (u32, u32) = (1007, 1);

/// The OCSF event of the stored audit record `payload`, or `None` for a checkpoint or a record
/// that is not an audit event.
pub fn event(payload: &[u8]) -> Option<Value> {
    let event: AuditEvent = serde_json::from_slice(payload).ok()?;
    let raw = String::from_utf8_lossy(payload).into_owned();
    let ((class_uid, category_uid), class_name, category_name, activity_id, activity_name) =
        match event.event {
            AuditEventType::Received | AuditEventType::Rejected => (
                API_ACTIVITY,
                "API Activity",
                "Application Activity",
                1,
                "Create",
            ),
            AuditEventType::Started => (
                PROCESS_ACTIVITY,
                "Process Activity",
                "System Activity",
                1,
                "Launch",
            ),
            AuditEventType::Finished => (
                PROCESS_ACTIVITY,
                "Process Activity",
                "System Activity",
                2,
                "Terminate",
            ),
            AuditEventType::SessionOpened => (
                API_ACTIVITY,
                "API Activity",
                "Application Activity",
                1,
                "Create",
            ),
            AuditEventType::SessionClosed | AuditEventType::SessionExpired => (
                API_ACTIVITY,
                "API Activity",
                "Application Activity",
                4,
                "Delete",
            ),
            AuditEventType::Network => (
                NETWORK_ACTIVITY,
                "Network Activity",
                "Network Activity",
                1,
                "Open",
            ),
        };
    let failed = match event.event {
        AuditEventType::Rejected => true,
        AuditEventType::Network => event
            .network
            .as_ref()
            .is_some_and(|attempt| !attempt.allowed),
        AuditEventType::Finished => event.verdict != Some(Verdict::Completed),
        _ => false,
    };
    let mut ocsf = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
        "time": event.timestamp.timestamp_millis(),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "message": message(&event),
        "metadata": metadata(&event),
        "actor": { "user": { "name": event.tenant, "uid": event.tenant } },
        "raw_data": raw,
    });
    if let Some(error) = &event.error {
        ocsf["status_code"] = json!(error.kind.as_str());
        ocsf["status_detail"] = json!(error.message);
    }
    if class_uid == API_ACTIVITY.0 {
        ocsf["api"] = json!({
            "operation": format!("exec {}", event.event),
            "service": { "name": "openshell", "uid": event.pool },
        });
        ocsf["src_endpoint"] = json!({ "name": event.tenant });
    } else if let Some(attempt) = &event.network {
        ocsf["src_endpoint"] = json!({ "name": event.job_id });
        ocsf["dst_endpoint"] = json!({
            "hostname": attempt.destination,
            "port": attempt.port,
            "ip": attempt.address.as_deref().and_then(|address| address.rsplit_once(':')).map(|(ip, _)| ip.trim_matches(['[', ']'])),
        });
        ocsf["traffic"] = json!({
            "bytes_out": attempt.bytes_sent,
            "bytes_in": attempt.bytes_received,
            "bytes": attempt.bytes_sent + attempt.bytes_received,
        });
        ocsf["disposition"] = json!(if attempt.allowed {
            "Allowed"
        } else {
            "Blocked"
        });
        ocsf["disposition_id"] = json!(if attempt.allowed { 1 } else { 2 });
    } else {
        ocsf["device"] = json!({ "type_id": 1, "type": "Server", "name": event.worker_id });
        ocsf["process"] = process(&event);
        if event.event == AuditEventType::Finished
            && let Some(code) = event.usage.as_ref().and_then(|usage| usage.exit_code)
        {
            ocsf["exit_code"] = json!(code);
        }
    }
    Some(ocsf)
}

fn metadata(event: &AuditEvent) -> Value {
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "OpenShell",
            "vendor_name": "OpenShell",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "log_name": "OPENSHELL_AUDIT",
        "event_code": event.event.as_str(),
        "correlation_uid": event.job_id,
        "tenant_uid": event.tenant,
    });
    if let (Some(chain), Some(seq)) = (&event.chain, event.seq) {
        metadata["uid"] = json!(format!("{chain}-{seq}"));
        metadata["sequence"] = json!(seq);
    }
    metadata
}

/// The program, as far as the event says: its argv (or language), and its hash as uid.
fn process(event: &AuditEvent) -> Value {
    let argv: Vec<String> = match (&event.command, &event.language) {
        (Some(command), _) => command.iter().chain(&event.args).cloned().collect(),
        (None, Some(language)) => std::iter::once(language.clone())
            .chain(event.args.iter().cloned())
            .collect(),
        (None, None) => Vec::new(),
    };
    json!({
        "name": argv.first().cloned().unwrap_or_default(),
        "cmd_line": argv.join(" "),
        "uid": event.sha256,
    })
}

fn message(event: &AuditEvent) -> String {
    let mut message = format!(
        "job {} of tenant {} on pool {}: {}",
        event.job_id, event.tenant, event.pool, event.event
    );
    if let Some(verdict) = event.verdict {
        message.push_str(&format!(" ({verdict})"));
    }
    message
}
