//! The deploy kit under `deploy/`: alert rules and scrape config pass `promtool`, the Grafana
//! dashboard and the alerts query only metrics the worker exports, the Dockerfile builds the
//! whole workspace. The compose file is checked by `ops_compose.rs`, the Kubernetes manifests
//! by `ops_k8s.rs`, the systemd unit by `ops_systemd.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use openshell_test_support::{deploy_dir, tool};
use openshell_worker::metrics::{Metrics, text_format};

fn run(tool: &Path, args: &[&str], dir: &Path) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("run {}: {error}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_and_scrape_config_pass_promtool() {
    let Some(promtool) = tool("promtool", "run deploy/setup.sh --install-only") else {
        return;
    };
    let dir = deploy_dir().join("prometheus");
    run(&promtool, &["check", "rules", "alerts.yml"], &dir);
    run(&promtool, &["check", "config", "prometheus.yml"], &dir);
}

/// Every series name the worker can export, with each family populated once.
fn exported_names() -> BTreeSet<String> {
    let (metrics, registry) = Metrics::new();
    let ms = Duration::from_millis(1);
    metrics.job_ended("p", "none", "timeout", ms);
    metrics.rejected("p", "invalid_request");
    metrics.overhead("p", "intake", ms);
    metrics.queued("p", ms);
    metrics.audit(false);
    metrics.slots("p", 1, 1);
    metrics.backends.health("p", "none", false);
    metrics.backends.sandbox_started("p", ms);
    metrics.backends.warm_pool("p", 1, 1);
    metrics.backends.warm_pool_missed("p");
    metrics.limit_hit("p", "processes");
    metrics.backends.ssh("p", 1, 1);
    metrics.backends.ssh_reconnected("p");
    metrics.nats.pending("p", 1);
    metrics.nats.redelivered("p");
    metrics.nats.reconnects.inc();
    let mut open = String::new();
    prometheus_client::encoding::text::encode(&mut open, &registry).expect("encode");
    text_format::from_openmetrics(&open)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

/// `openshell_*` names in `text`, e.g. a PromQL expression.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("openshell_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboard_and_alerts_only_query_metrics_the_worker_exports() {
    let exported = exported_names();
    let deploy = deploy_dir();
    let dashboard = std::fs::read_to_string(deploy.join("grafana/openshell-workers.json"))
        .expect("read dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "dashboard has its panels");
    let mut exprs = String::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries something",
            panel["title"]
        );
        for target in targets {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    exprs.push_str(
        &std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).expect("read alerts"),
    );
    let unknown: Vec<_> = referenced(&exprs)
        .into_iter()
        .filter(|name| !exported.contains(name))
        .collect();
    assert!(
        unknown.is_empty(),
        "queried but never exported: {unknown:?}\nexported: {exported:?}"
    );
}

#[test]
fn dockerfile_builds_the_workspace_and_checks_health_cheaply() {
    let root = openshell_test_support::workspace_root();
    let dockerfile =
        std::fs::read_to_string(deploy_dir().join("Dockerfile")).expect("read Dockerfile");
    assert!(dockerfile.contains(" AS build"), "a build stage");
    assert!(dockerfile.contains("COPY --from=build"), "a runtime stage");
    assert!(dockerfile.contains("USER 10001"), "runs as non-root");
    // Cargo resolves the whole workspace even for one package: every member is copied.
    let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("read Cargo.toml")
        .parse()
        .expect("Cargo.toml is TOML");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    for member in members {
        let member = member.as_str().expect("a path");
        assert!(
            dockerfile.contains(&format!("COPY {member} {member}\n")),
            "the Dockerfile does not copy workspace member {member}"
        );
    }
    // The health check is `openshell health` (one GET of /healthz), never `doctor`.
    let healthcheck = dockerfile
        .lines()
        .skip_while(|line| !line.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(
        healthcheck.contains(r#"CMD ["/usr/local/bin/openshell", "health"]"#),
        "{healthcheck}"
    );
    assert!(!healthcheck.contains("doctor"), "{healthcheck}");
}
