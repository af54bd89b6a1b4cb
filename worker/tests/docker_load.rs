//! The Docker backend under load: 20 jobs at once, each in its own container, all cleaned up.
//! Needs the host's dockerd and the sandbox image (`deploy/setup.sh`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openshell_backend::{Backend, Ending, Job, JobControl, OutputSink};
use openshell_protocol::{ByteSize, DurationMs, Limits};
use openshell_test_support::dockerd;
use openshell_test_support::jobs::python_job;
use tokio_util::sync::CancellationToken;

fn python(index: usize) -> Job {
    // The container id is in the source path of the /etc/hostname bind mount.
    let code = "import os\nused = os.path.exists('/tmp/used')\nopen('/tmp/used', 'w').close()\nmounts = [line.split() for line in open('/proc/self/mountinfo')]\ncontainer = [m[3] for m in mounts if m[4] == '/etc/hostname'][0].split('/')[-2]\nprint(container, used, os.getuid())\n";
    let limits = Limits {
        timeout: Some(DurationMs::secs(60)),
        memory: Some(ByteSize::mib(128)),
        processes: Some(32),
        output: Some(ByteSize::kib(16)),
        ..Limits::default()
    };
    python_job(format!("load-{index}"), "load", code, limits)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_jobs_each_get_a_fresh_container_and_none_is_left() {
    let name = dockerd::pool_name("load");
    let Some(backend) = dockerd::backend(&name, 2) else {
        return;
    };
    let started = Instant::now();
    let jobs = (0..20).map(|index| {
        let backend = &backend;
        async move {
            let control = JobControl {
                cancel: CancellationToken::new(),
                output: OutputSink::new(16 << 10),
            };
            let execution = backend.execute(python(index), control.clone()).await;
            (index, execution, control.output.snapshot())
        }
    });
    let mut containers = BTreeSet::new();
    for (index, execution, output) in futures::future::join_all(jobs).await {
        let execution = execution.unwrap_or_else(|error| panic!("job {index}: {error}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(
            execution.ending,
            Ending::Exited,
            "job {index}: {stdout} {:?}",
            output.stderr
        );
        assert_eq!(
            execution.exit_code,
            Some(0),
            "job {index}: {:?}",
            String::from_utf8_lossy(&output.stderr)
        );
        let fields: Vec<&str> = stdout.split_whitespace().collect();
        assert_eq!(
            fields[1..],
            ["False", "1000"],
            "a used container or the wrong user: {stdout}"
        );
        containers.insert(fields[0].to_string());
    }
    let elapsed = started.elapsed();
    eprintln!("20 concurrent jobs took {elapsed:?}");
    assert_eq!(
        containers.len(),
        20,
        "jobs shared containers: {containers:?}"
    );
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
    drop(backend);
    dockerd::assert_none_left(None, &dockerd::pool_label(&name), Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_backend_removes_its_warm_containers() {
    let name = dockerd::pool_name("drop");
    let Some(backend) = dockerd::backend(&name, 2) else {
        return;
    };
    let label = dockerd::pool_label(&name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dockerd::containers_with(None, &label).len() < 2 {
        assert!(Instant::now() < deadline, "the warm pool never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(backend);
    dockerd::assert_none_left(None, &label, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_dead_worker_are_swept_at_start_up() {
    if !dockerd::available() {
        return;
    }
    let name = dockerd::pool_name("orphans");
    let mut exited = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead_pid = exited.id().to_string();
    exited.wait().expect("wait for true");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let labels = [
        "openshell.managed=true".to_string(),
        "openshell.instance=dead-worker".to_string(),
        format!("openshell.host={}", host.trim()),
        format!("openshell.pid={dead_pid}"),
        dockerd::pool_label(&name),
    ];
    let mut args = vec!["create".to_string()];
    for label in &labels {
        args.extend(["--label".to_string(), label.clone()]);
    }
    args.extend([dockerd::image(), "sleep".into(), "infinity".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dockerd::docker(None, &args).expect("create an orphan");
    let label = dockerd::pool_label(&name);
    assert_eq!(dockerd::containers_with(None, &label).len(), 1);
    let backend = dockerd::backend(&format!("{name}-sweeper"), 0).expect("backend");
    dockerd::assert_none_left(None, &label, Duration::from_secs(15)).await;
    drop(backend);
}
