//! How commands print: one JSON document with `--json`, lines for a human
//! otherwise.

use super::CliError;

/// Prints a command's result: as JSON, or for a human.
pub(super) fn print<T: serde::Serialize>(value: &T, json: bool, human: impl Fn(&T)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("command results serialize")
        );
    } else {
        human(value);
    }
}

/// With `--json`, a failure is also one JSON document on stdout.
pub(super) fn print_failure(e: &CliError, json: bool) {
    if json && !matches!(e, CliError::Reported { .. }) {
        let body = crate::ops::ErrorBody {
            error: e.to_string(),
            exit_code: e.exit_code(),
        };
        println!(
            "{}",
            serde_json::to_string(&body).expect("an error body serializes")
        );
    }
}

/// `12.3 MiB`.
pub(super) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
