//! Limits that can never work: refused when the configuration loads, not found out job by job.
//!
//! A zero limit (a `0` timeout kills every job at once, a `0` memory or process count lets
//! nothing start) and a memory below what the backend accepts (Docker refuses under
//! [`DOCKER_MIN_MEMORY`]) would fail every job while health stayed green.

use openshell_backend::BackendKind;
use openshell_protocol::limits::LimitValue;
use openshell_protocol::{ByteSize, LimitName, Limits};

/// The smallest memory limit Docker accepts ("Minimum memory limit allowed is 6MB").
pub const DOCKER_MIN_MEMORY: ByteSize = ByteSize::mib(6);

/// The smallest memory limit a `backend` accepts, when it has one.
pub fn min_memory(backend: &BackendKind) -> Option<ByteSize> {
    (*backend == BackendKind::Docker).then_some(DOCKER_MIN_MEMORY)
}

/// Why `value` of `limit` can never let a job run on `backend`, if it cannot.
pub fn unusable(backend: &BackendKind, limit: LimitName, value: LimitValue) -> Option<String> {
    match value {
        LimitValue::Duration(duration) if duration.millis() == 0 => Some(format!(
            "a {limit} of 0 stops every job at once; set a positive duration such as 30s"
        )),
        LimitValue::Size(size) if size.bytes() == 0 => Some(format!(
            "a {limit} of 0 lets no job run; set a positive size such as 256m"
        )),
        LimitValue::Count(0) => Some(format!(
            "a {limit} of 0 lets no job run; set a positive number such as 256"
        )),
        LimitValue::Cores(cores) if !(cores.is_finite() && cores > 0.0) => Some(format!(
            "{cores} {limit} cannot run a job; set a positive number of cores such as 1.0"
        )),
        LimitValue::Size(size) if limit == LimitName::Memory => {
            let min = min_memory(backend)?;
            (size < min).then(|| {
                format!(
                    "{size} is below the {backend} backend's minimum memory of {min}, so every job \
                     would fail; set at least {min}"
                )
            })
        }
        _ => None,
    }
}

/// The first limit of `limits` that can never work on `backend`, with why.
pub fn first_unusable(backend: &BackendKind, limits: &Limits) -> Option<(LimitName, String)> {
    limits
        .iter()
        .find_map(|(limit, value)| unusable(backend, limit, value).map(|reason| (limit, reason)))
}

#[cfg(test)]
mod tests {
    use openshell_protocol::DurationMs;

    use super::*;

    #[test]
    fn zero_and_tiny_limits_are_unusable() {
        let docker =
            |limits: Limits| first_unusable(&BackendKind::Docker, &limits).map(|(limit, _)| limit);
        let zero_timeout = Limits {
            timeout: Some(DurationMs(0)),
            ..Limits::default()
        };
        assert_eq!(docker(zero_timeout), Some(LimitName::Timeout));
        let tiny = Limits {
            memory: Some(ByteSize::kib(1)),
            ..Limits::default()
        };
        assert_eq!(docker(tiny.clone()), Some(LimitName::Memory));
        assert_eq!(
            first_unusable(&BackendKind::Local, &tiny),
            None,
            "no minimum without docker"
        );
        let negative = Limits {
            cpus: Some(-1.0),
            ..Limits::default()
        };
        assert_eq!(docker(negative), Some(LimitName::Cpus));
        let fine = Limits {
            timeout: Some(DurationMs::secs(1)),
            memory: Some(DOCKER_MIN_MEMORY),
            cpus: Some(0.5),
            processes: Some(1),
            ..Limits::default()
        };
        assert_eq!(docker(fine), None);
    }
}
