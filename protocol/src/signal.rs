//! Signal numbers and their names, as results report them (Linux numbering on every backend).

/// SIGKILL, the signal every backend sends to stop a job.
pub const SIGKILL: i32 = 9;

/// Names of the standard signals 1 to 31, in number order (x86_64 and aarch64 agree on them).
const STANDARD: [&str; 31] = [
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// The lowest real-time signal a program can use (glibc keeps 32 and 33 for itself).
const RT_MIN: i32 = 34;

/// The highest signal number (`_NSIG - 1`).
const RT_MAX: i32 = 64;

/// The name of signal `number` as `kill -l` spells it (`SIGKILL`, `SIGRTMIN+3`), or `None`
/// for a number that is no signal a program can be killed by.
pub fn signal_name(number: i32) -> Option<String> {
    match number {
        1..=31 => usize::try_from(number - 1)
            .ok()
            .and_then(|index| STANDARD.get(index))
            .map(|name| (*name).to_string()),
        RT_MIN => Some("SIGRTMIN".to_string()),
        RT_MAX => Some("SIGRTMAX".to_string()),
        35..=49 => Some(format!("SIGRTMIN+{}", number - RT_MIN)),
        50..=63 => Some(format!("SIGRTMAX-{}", RT_MAX - number)),
        _ => None,
    }
}

/// The number of the signal named `name`, with or without its `SIG` prefix (`KILL`, `SIGXCPU`).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    (1..=RT_MAX).find(|&number| {
        signal_name(number).is_some_and(|known| known.strip_prefix("SIG") == Some(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_kill_dash_l() {
        assert_eq!(signal_name(SIGKILL).as_deref(), Some("SIGKILL"));
        assert_eq!(signal_name(24).as_deref(), Some("SIGXCPU"));
        assert_eq!(signal_name(31).as_deref(), Some("SIGSYS"));
        assert_eq!(signal_name(34).as_deref(), Some("SIGRTMIN"));
        assert_eq!(signal_name(36).as_deref(), Some("SIGRTMIN+2"));
        assert_eq!(signal_name(50).as_deref(), Some("SIGRTMAX-14"));
        assert_eq!(signal_name(64).as_deref(), Some("SIGRTMAX"));
        for unnamed in [0, -1, 32, 33, 65, 137] {
            assert_eq!(signal_name(unnamed), None, "{unnamed}");
        }
    }

    #[test]
    fn numbers_round_trip_through_names() {
        for number in (1..=31).chain(34..=64) {
            let name = signal_name(number).unwrap();
            assert_eq!(signal_number(&name), Some(number), "{name}");
        }
        assert_eq!(signal_number("XCPU"), Some(24));
        assert_eq!(signal_number("SIG@openssh.com"), None);
    }
}
