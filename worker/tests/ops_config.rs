//! Configuration through the real `openshell` binary: settings that could never run a job are
//! refused at start-up by `openshell worker` and `openshell config`, naming the variable or
//! key; a pool defined in a file on the `none` backend takes that backend's defaults and runs
//! jobs; the help texts name the real default backend.

use std::process::Output;

use openshell_test_support::Openshell;
use openshell_test_support::nats::NatsServer;

/// The binary under test.
const OPENSHELL: Openshell = Openshell::at(env!("CARGO_BIN_EXE_openshell"));

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `openshell worker` and `openshell config` with `envs`; both must exit non-zero and
/// name `named` and `value` on stderr. The worker fails before it connects anywhere.
async fn refused(envs: &[(&str, &str)], named: &str, value: &str) {
    // A NATS URL nothing listens on: the refusal must come before any connection attempt.
    let mut all = vec![("NATS_URL", "nats://127.0.0.1:1")];
    all.extend_from_slice(envs);
    for command in ["worker", "config"] {
        let out = OPENSHELL.cli([command], &all).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "`openshell {command}` accepted {envs:?}:\n{}",
            text(&out)
        );
        assert!(
            stderr.contains(named) && stderr.contains(value),
            "`openshell {command}` with {envs:?} does not name {named} and {value:?}:\n{stderr}"
        );
        assert!(
            !stderr.contains("connecting to NATS"),
            "refused before connecting: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_log_level_that_matches_nothing_is_refused() {
    refused(&[("LOG_LEVEL", "verbose")], "LOG_LEVEL", "verbose").await;
    refused(&[("RUST_LOG", "chatty")], "RUST_LOG", "chatty").await;
}

#[tokio::test]
async fn limits_that_fail_every_job_are_refused() {
    refused(
        &[("SANDBOX_DOCKER_MEMORY", "1k")],
        "SANDBOX_DOCKER_MEMORY",
        "minimum memory of 6m",
    )
    .await;
    refused(
        &[("SANDBOX_DOCKER_TIMEOUT", "0")],
        "SANDBOX_DOCKER_TIMEOUT",
        "timeout of 0",
    )
    .await;
    refused(
        &[("SANDBOX_BACKEND", "ssh"), ("SSH_TIMEOUT", "0")],
        "SSH_TIMEOUT",
        "timeout of 0",
    )
    .await;
}

#[tokio::test]
async fn file_limits_that_fail_every_job_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "[pools.small]\nbackend = \"none\"\ndefaults = { timeout = \"0s\" }\n",
            "pools.small.defaults.timeout",
        ),
        (
            "[pools.small]\nbackend = \"ssh\"\nceilings = { timeout = 0 }\n",
            "pools.small.ceilings.timeout",
        ),
        (
            "[pools.box]\nbackend = \"docker\"\ndefaults = { memory = \"1k\" }\n",
            "pools.box.defaults.memory",
        ),
    ];
    for (index, (file, key)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("worker-{index}.toml"));
        std::fs::write(&path, file).expect("write config");
        let path = path.to_str().expect("utf-8 path");
        refused(&[("OPENSHELL_CONFIG", path)], key, "").await;
    }
}

#[tokio::test]
async fn help_names_docker_as_the_default_backend() {
    for command in ["worker", "exec", "bench"] {
        let out = OPENSHELL.cli([command, "--help"], &[]).await;
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", text(&out));
        assert!(help.contains("docker"), "`{command} --help`:\n{help}");
        assert!(
            !help.contains("default none") && !help.contains("or none"),
            "`{command} --help` still says none:\n{help}"
        );
    }
}

/// A pool defined in a file on `none`, with and without a `defaults` table, runs a job: it
/// no longer inherits Docker's `cpus = 1`, which the local backend cannot enforce and which
/// failed every job closed as `limit_not_enforceable`.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_pool_on_none_runs_jobs_with_and_without_defaults() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (_dir, path) = config_file(
        "[pools.plain]\nbackend = \"none\"\n\n\
         [pools.tuned]\nbackend = \"none\"\ndefaults = { timeout = \"20s\" }\n",
    );
    let url = nats.url();
    let config = path.to_str().expect("utf-8 path");
    let envs = [("NATS_URL", url.as_str()), ("OPENSHELL_CONFIG", config)];

    let shown = OPENSHELL.cli(["config"], &envs).await;
    assert!(shown.status.success(), "{}", text(&shown));
    let shown: toml::Table =
        toml::from_str(&String::from_utf8_lossy(&shown.stdout)).expect("config prints TOML");
    for pool in ["plain", "tuned"] {
        let defaults = &shown["pools"][pool]["defaults"];
        assert!(
            defaults.get("cpus").is_none(),
            "no CPU share on {pool}: {defaults}"
        );
        assert!(
            defaults.get("memory").is_some(),
            "the none backend's memory default: {defaults}"
        );
    }

    let _worker = OPENSHELL.worker(&envs).await;
    for pool in ["plain", "tuned"] {
        let out = OPENSHELL
            .cli(
                [
                    "exec",
                    "--pool",
                    pool,
                    "--lang",
                    "bash",
                    "-c",
                    "echo ran on $BASH_VERSION",
                ],
                &[("NATS_URL", url.as_str())],
            )
            .await;
        assert!(out.status.success(), "pool {pool}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ran on"),
            "pool {pool}: {}",
            text(&out)
        );
    }
}

/// A limit the pool's backend cannot enforce is refused before the job runs: a `none` pool
/// without its sandbox has no cgroups, so `cpus` cannot be enforced (`limit_not_enforceable`,
/// exit 65), while the same pool with `allow_unenforced_limits` runs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_limit_the_backend_cannot_enforce_is_refused_unless_the_pool_allows_it() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let (_dir, path) = config_file(
        "[pools.strict]\nbackend = \"none\"\nlocal = { sandbox = \"off\" }\n\n\
         [pools.lax]\nbackend = \"none\"\nallow_unenforced_limits = true\nlocal = { sandbox = \"off\" }\n",
    );
    let url = nats.url();
    let config = path.to_str().expect("utf-8 path");
    let _worker = OPENSHELL
        .worker(&[("NATS_URL", url.as_str()), ("OPENSHELL_CONFIG", config)])
        .await;
    let exec = |pool: &'static str| {
        let url = url.clone();
        async move {
            OPENSHELL
                .cli(
                    [
                        "exec",
                        "--pool",
                        pool,
                        "--cpus",
                        "0.5",
                        "--json",
                        "--command",
                        "true",
                    ],
                    &[("NATS_URL", url.as_str())],
                )
                .await
        }
    };
    let strict = exec("strict").await;
    assert_eq!(strict.status.code(), Some(65), "{}", text(&strict));
    assert!(
        String::from_utf8_lossy(&strict.stdout).contains("limit_not_enforceable"),
        "{}",
        text(&strict)
    );
    let lax = exec("lax").await;
    assert!(lax.status.success(), "{}", text(&lax));
}

/// A worker configuration file holding `text`, in a directory removed when the guard drops.
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}
