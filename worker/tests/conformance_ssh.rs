//! The conformance suite against the SSH backend (`SANDBOX_BACKEND=ssh`), each case on its
//! own sshd on a loopback port (see `openshell_test_support::sshd`).

use std::sync::Arc;

use openshell_backend::Backend;

use openshell_test_support::sshd::SshdBackend;

/// The backend with its own sshd; outside CI without sshd, the case passes as skipped.
async fn backend() -> Arc<dyn Backend> {
    match SshdBackend::start().await {
        Some(backend) => Arc::new(backend),
        // The suite's macro needs a backend and there is none to give: end this case (its own
        // process under nextest) as passed, after the skip message `start` printed.
        #[expect(
            clippy::disallowed_methods,
            reason = "a skipped test has nothing to flush"
        )]
        None => std::process::exit(0),
    }
}

openshell_backend::conformance_suite!(backend());
