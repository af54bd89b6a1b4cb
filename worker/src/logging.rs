//! Logging through tracing: `LOG_LEVEL` (or `RUST_LOG`), human by default, JSON with `LOG_FORMAT=json`.
//!
//! The filter is checked when the configuration loads ([`check_filter`]), so a filter that
//! would silence the worker (`LOG_LEVEL=verbose` enables only a target named `verbose`) is
//! refused at start-up instead of leaving the worker without a single log line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// What to write instead of a rejected filter.
/// `json` for JSON lines; anything else (or unset) logs for humans.
pub const LOG_FORMAT: &str = "LOG_FORMAT";
const FILTER_HINT: &str = "use a level (trace, debug, info, warn, error, off) or a filter such as `info,openshell_worker=debug`";

/// Why a log filter was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The filter is empty, which tracing reads as `error` only.
    #[error("it is empty; {FILTER_HINT}")]
    Empty,
    /// A bare word that is not a level: tracing reads it as a target name, matching nothing the
    /// worker logs.
    #[error(
        "`{directive}` is neither a level nor `target=level`, so it matches no log line; {FILTER_HINT}"
    )]
    NotALevel {
        /// The offending directive.
        directive: String,
    },
    /// The filter syntax is wrong. The parser's error is shown, not chained: it repeats its own
    /// cause, so a chain would print the same words twice.
    #[error("it does not parse ({parse}); {FILTER_HINT}")]
    Syntax {
        /// The parser's account.
        parse: tracing_subscriber::filter::ParseError,
    },
}

/// Checks that `filter` is a level or a filter whose every directive names a level.
pub fn check_filter(filter: &str) -> Result<(), FilterError> {
    if filter.trim().is_empty() {
        return Err(FilterError::Empty);
    }
    for directive in filter.split(',').map(str::trim) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !directive.is_empty() && directive.parse::<LevelFilter>().is_err() {
            return Err(FilterError::NotALevel {
                directive: directive.to_string(),
            });
        }
    }
    EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|parse| FilterError::Syntax { parse })
}

/// Installs the global subscriber writing to stderr at `filter` (a level or a full filter,
/// already checked by [`check_filter`] when the configuration loaded).
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|error| {
        eprintln!("openshell: log filter {filter:?} is invalid ({error}); logging at info");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let json = std::env::var(LOG_FORMAT).is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if let Err(error) = installed {
        eprintln!("openshell: logging already initialised: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_filters_pass() {
        for filter in [
            "info",
            "DEBUG",
            "off",
            "3",
            "info,openshell_worker=debug",
            "warn,async_nats=off",
        ] {
            assert!(check_filter(filter).is_ok(), "{filter}");
        }
    }

    #[test]
    fn filters_that_match_nothing_are_refused() {
        let error = check_filter("verbose").unwrap_err();
        assert!(
            matches!(error, FilterError::NotALevel { ref directive } if directive == "verbose"),
            "{error}"
        );
        assert!(matches!(
            check_filter("info,warning"),
            Err(FilterError::NotALevel { .. })
        ));
        assert!(matches!(check_filter(" "), Err(FilterError::Empty)));
        assert!(matches!(
            check_filter("x=loud"),
            Err(FilterError::Syntax { .. })
        ));
    }
}
