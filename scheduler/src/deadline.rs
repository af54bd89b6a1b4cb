//! Deadlines: a job past its deadline is not started.

use chrono::{DateTime, Utc};
use openshell_protocol::ErrorKind;

use crate::rejection::Rejection;

/// Refuses a job whose `deadline` is at or before `now` (verdict `expired`).
pub fn check_deadline(
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    match deadline {
        Some(deadline) if deadline <= now => Err(Rejection::new(
            ErrorKind::DeadlineExpired,
            format!(
                "the job's deadline {} passed {} ms before it could start; resubmit with a later deadline",
                deadline.to_rfc3339(),
                (now - deadline).num_milliseconds()
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn past_deadlines_expire() {
        let now = Utc::now();
        assert!(check_deadline(None, now).is_ok());
        assert!(check_deadline(Some(now + Duration::seconds(1)), now).is_ok());
        let error = check_deadline(Some(now - Duration::seconds(1)), now).unwrap_err();
        assert_eq!(error.kind, ErrorKind::DeadlineExpired);
        assert!(check_deadline(Some(now), now).is_err());
    }
}
