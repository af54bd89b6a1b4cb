//! How a job ended, as a backend reports it.

use std::time::Duration;

use openshell_protocol::EnforcementReport;

use crate::files::CollectedFiles;

/// Why the program stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited or died of a signal on its own.
    Exited,
    /// The wall timeout killed it.
    Timeout,
    /// The output limit stopped it.
    OutputLimit,
    /// It ran out of memory.
    OutOfMemory,
    /// Cancellation killed it.
    Cancelled,
}

/// The outcome of running a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// Why it stopped.
    pub ending: Ending,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Killing signal, when one did.
    pub signal: Option<i32>,
    /// Wall time of the program.
    pub wall_time: Duration,
    /// CPU time, where measured.
    pub cpu_time: Option<Duration>,
    /// Peak memory in bytes, where measured.
    pub peak_memory_bytes: Option<u64>,
    /// How each limit in force was enforced for this run.
    pub enforcement: EnforcementReport,
    /// The files [`crate::Job::outputs`] asked for, read after the program ended; `None` when
    /// it asked for none or they could not be read.
    pub files: Option<CollectedFiles>,
}

impl Execution {
    /// A program that exited with `code`, with nothing measured.
    pub fn exited(code: i32) -> Self {
        Self {
            ending: Ending::Exited,
            exit_code: Some(code),
            signal: None,
            wall_time: Duration::ZERO,
            cpu_time: None,
            peak_memory_bytes: None,
            enforcement: EnforcementReport::new(),
            files: None,
        }
    }
}
