//! Processes of the services under test: stopping a child gracefully, and finding processes
//! in `/proc` by command line or by ancestry.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit, then SIGKILLs it;
/// either way the child is reaped.
pub async fn terminate(child: &mut Child, timeout: Duration) {
    signal(child, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    // An error polling means it is gone (reaped elsewhere): nothing left to wait for.
    while let Ok(None) = child.try_wait() {
        if Instant::now() > deadline {
            kill_and_reap(child);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs `child` and reaps it; for `Drop`, which cannot wait politely.
pub fn kill_and_reap(child: &mut Child) {
    // Errors only mean it already exited (kill) or was reaped (wait).
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `signal` to `child`; ESRCH (it already exited) is not an error here.
pub fn signal(child: &Child, signal: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Pids of live processes whose command line contains `marker` (this process left out).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            (String::from_utf8_lossy(&cmdline).contains(marker) && pid != own).then_some(pid)
        })
        .collect()
}

/// The command line of process `pid`, its arguments joined by spaces (empty once it is gone).
pub fn cmdline(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&cmdline).replace('\0', " ")
}

/// Every process below `root`, with its command name (`comm`).
pub fn descendants(root: i32) -> Vec<(i32, String)> {
    let processes: Vec<(i32, i32, String)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_string();
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm))
        })
        .collect();
    let mut found = vec![root];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            processes
                .iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, _)| *pid),
        );
        index += 1;
    }
    processes
        .into_iter()
        .filter(|(pid, _, _)| *pid != root && found.contains(pid))
        .map(|(pid, _, comm)| (pid, comm))
        .collect()
}
