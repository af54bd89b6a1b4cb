//! The conformance suite against the Docker backend (`SANDBOX_BACKEND=docker`), on the host's
//! daemon with the sandbox image (`deploy/setup.sh`); skipped without them outside CI.

use openshell_test_support::dockerd;

// Without Docker (outside CI) the `return` skips the case.
openshell_backend::conformance_suite!(match dockerd::shared("conformance", 2) {
    Some(backend) => std::future::ready(backend),
    None => return,
});
