//! Signs that a program ran out of memory, read from its exit and stderr: the backends that
//! limit memory with rlimits (allocations fail, nothing is killed) build their verdict on them.

/// How runtimes report a failed allocation on stderr, lowercase.
const ALLOCATION_FAILURES: [&str; 8] = [
    "memoryerror",                    // Python
    "cannot allocate",                // strerror(ENOMEM), bash's "xmalloc: cannot allocate N bytes"
    "std::bad_alloc",                 // C++
    "javascript heap out of memory",  // Node: the V8 heap cannot grow
    "array buffer allocation failed", // Node: a Buffer or ArrayBuffer cannot be allocated
    "fatal process oom",              // V8 failing to map memory ("Fatal process OOM in ...")
    "memory allocation of",           // Rust's alloc error handler
    "out of memory", // Go, glibc, V8's "Fatal process out of memory" and most others
];

/// Whether a program with this `(exit code, signal)` failed: a non-zero code or a signal.
pub fn failed(exit: (Option<i32>, Option<i32>)) -> bool {
    match exit {
        (Some(code), _) => code != 0,
        (None, signal) => signal.is_some(),
    }
}

/// Whether `stderr` shows a runtime's allocation failure.
pub fn reports_allocation_failure(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr).to_lowercase();
    ALLOCATION_FAILURES
        .iter()
        .any(|marker| text.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_allocation_failures_are_recognised() {
        assert!(reports_allocation_failure(b"Traceback...\nMemoryError\n"));
        assert!(reports_allocation_failure(
            b"bash: xmalloc: cannot allocate 1 bytes"
        ));
        assert!(!reports_allocation_failure(b"Segmentation fault"));
        assert!(failed((Some(1), None)) && failed((None, Some(9))));
        assert!(!failed((Some(0), None)));
    }
}
