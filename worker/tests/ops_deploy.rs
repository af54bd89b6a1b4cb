//! The deploy kit under `deploy/`: alert rules and scrape config pass `promtool`, the compose
//! file passes `docker-compose config`, the Kubernetes manifests and Grafana dashboard are
//! well formed and agree with each other, and everything they query is a metric the worker
//! exports.

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

#[test]
fn compose_file_passes_docker_compose_config() {
    let Some(compose) = tool("docker-compose", "run deploy/setup.sh --install-only") else {
        return;
    };
    let dir = deploy_dir().join("compose");
    run(
        &compose,
        &["-f", "docker-compose.yml", "config", "-q"],
        &dir,
    );
}

/// Checks the manifests with Python's yaml module (python3-yaml, a docker-compose dependency).
const CHECK_MANIFESTS: &str = r#"
import sys, yaml
deploy = sys.argv[1]
def docs(path):
    with open(deploy + "/" + path) as f:
        return [d for d in yaml.safe_load_all(f) if d]
kinds = {}
for name in ["deployment.yaml", "service.yaml", "pdb.yaml", "keda-scaledobject.yaml"]:
    for d in docs("k8s/" + name):
        for key in ["apiVersion", "kind", "metadata"]:
            assert key in d, f"{name}: no {key}"
        kinds[d["kind"]] = d
dep = kinds["Deployment"]
labels = dep["spec"]["template"]["metadata"]["labels"]
assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "selector does not match pods"
c = dep["spec"]["template"]["spec"]["containers"][0]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert any(p["containerPort"] == 9464 for p in c["ports"])
envs = {e["name"] for e in c["env"]}
assert {"NATS_URL", "SANDBOX_BACKEND", "METRICS_ADDR"} <= envs, envs
mounts = {m["name"] for m in c["volumeMounts"]}
assert {"docker-socket", "ssh"} <= mounts, mounts
assert kinds["Service"]["spec"]["selector"].items() <= labels.items()
assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
so = kinds["ScaledObject"]
assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
trigger = so["spec"]["triggers"][0]
assert trigger["type"] == "nats-jetstream" and trigger["metadata"]["stream"] == "OPENSHELL_JOBS"
compose = docs("compose/docker-compose.yml")[0]
services = compose["services"]
assert {"nats", "worker-1", "worker-2", "prometheus"} <= set(services), set(services)
assert "--jetstream" in services["nats"]["command"]
print("manifests ok")
"#;

#[test]
fn kubernetes_manifests_and_compose_file_agree() {
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    let Some(python) = python else {
        assert!(
            !support_in_ci(),
            "python3 with yaml not found under CI: run deploy/setup.sh --install-only"
        );
        eprintln!("SKIP: python3-yaml not found (run deploy/setup.sh --install-only)");
        return;
    };
    let deploy = deploy_dir();
    let deploy = deploy.to_str().expect("UTF-8 path");
    run(
        Path::new(python),
        &["-c", CHECK_MANIFESTS, deploy],
        Path::new("."),
    );
}

fn support_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1"))
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
fn systemd_unit_is_hardened_and_dockerfile_is_multi_stage() {
    let deploy = deploy_dir();
    let unit = std::fs::read_to_string(deploy.join("systemd/openshell-worker.service"))
        .expect("read unit");
    for option in [
        "ExecStart=/usr/local/bin/openshell worker",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=",
        "DynamicUser=yes",
    ] {
        assert!(unit.contains(option), "unit lacks {option}");
    }
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).expect("read Dockerfile");
    assert!(dockerfile.contains(" AS build"), "a build stage");
    assert!(dockerfile.contains("COPY --from=build"), "a runtime stage");
    assert!(dockerfile.contains("USER 10001"), "runs as non-root");
}
