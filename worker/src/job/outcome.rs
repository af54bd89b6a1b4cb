//! Turning a backend's [`Execution`] (or failure) into the wire [`ExecResult`].

use openshell_protocol::{ErrorInfo, ErrorKind, ExecResult, Limits, Payload, Verdict};

use openshell_backend::{BackendError, CapturedOutput, Ending, Execution};

/// The verdict and error for how a program ended under `limits`.
pub fn verdict(
    ending: Ending,
    limits: &Limits,
    shutting_down: bool,
) -> (Verdict, Option<ErrorInfo>) {
    let show = |value: Option<String>| value.unwrap_or_else(|| "unset".to_string());
    match ending {
        Ending::Exited => (Verdict::Completed, None),
        Ending::Timeout => (
            Verdict::Timeout,
            Some(ErrorInfo::new(
                ErrorKind::TimeoutExceeded,
                format!(
                    "Sandbox timeout exceeded: the job ran past limits.timeout = {} and was killed; raise the limit or shorten the job",
                    show(limits.timeout.map(|t| t.to_string()))
                ),
            )),
        ),
        Ending::OutOfMemory => (
            Verdict::OutOfMemory,
            Some(ErrorInfo::new(
                ErrorKind::OutOfMemory,
                format!(
                    "the job ran out of memory at limits.memory = {}; raise the limit or use less memory",
                    show(limits.memory.map(|m| m.to_string()))
                ),
            )),
        ),
        Ending::OutputLimit => (
            Verdict::OutputLimit,
            Some(ErrorInfo::new(
                ErrorKind::OutputLimitExceeded,
                format!(
                    "the job wrote more than limits.output = {} and was stopped; the output is truncated",
                    show(limits.output.map(|o| o.to_string()))
                ),
            )),
        ),
        Ending::Cancelled if shutting_down => (
            Verdict::Cancelled,
            Some(ErrorInfo::new(
                ErrorKind::ShuttingDown,
                "the worker shut down before the job finished; resubmit it",
            )),
        ),
        Ending::Cancelled => (
            Verdict::Cancelled,
            Some(ErrorInfo::new(
                ErrorKind::Cancelled,
                "the job was cancelled by a client",
            )),
        ),
    }
}

/// Fills `result` from a finished run.
pub fn apply_execution(
    result: &mut ExecResult,
    outcome: Result<Execution, BackendError>,
    output: CapturedOutput,
    shutting_down: bool,
) {
    result.stdout = Payload(output.stdout);
    result.stderr = Payload(output.stderr);
    result.stdout_truncated = output.stdout_truncated;
    result.stderr_truncated = output.stderr_truncated;
    match outcome {
        Ok(execution) => {
            let (status, error) = verdict(execution.ending, &result.limits, shutting_down);
            result.status = status;
            result.error = error;
            result.exit_code = execution.exit_code;
            result.set_signal(execution.signal);
            result.wall_time_ms = execution.wall_time.as_millis() as u64;
            result.cpu_time_ms = execution.cpu_time.map(|cpu| cpu.as_millis() as u64);
            result.peak_memory_bytes = execution.peak_memory_bytes;
            result.enforcement.extend(execution.enforcement);
        }
        Err(error) => {
            result.status = Verdict::for_error(error.kind);
            result.error = Some(error.to_info());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings_map_to_verdicts() {
        let limits = Limits::default();
        assert_eq!(
            verdict(Ending::Exited, &limits, false).0,
            Verdict::Completed
        );
        let (status, error) = verdict(Ending::Timeout, &limits, false);
        assert_eq!(status, Verdict::Timeout);
        assert!(
            error
                .unwrap()
                .message
                .starts_with("Sandbox timeout exceeded")
        );
        assert_eq!(
            verdict(Ending::Cancelled, &limits, true).1.unwrap().kind,
            ErrorKind::ShuttingDown
        );
    }
}
