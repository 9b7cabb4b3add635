//! Test-only faults of a release (the `fault-injection` feature, never in a
//! release build): `TEST_ERLMCP_FAULT=NAME` or `NAME@RELEASE` (only that
//! release is affected, so the release an upgrade rolls back to is not).
//! `unready`: readiness never comes (probation fails); `crash`: the process
//! exits right after its migrations (a crash loop).

/// Whether fault `name` applies to this release.
pub(crate) fn active(name: &str) -> bool {
    let Ok(spec) = std::env::var("TEST_ERLMCP_FAULT") else {
        return false;
    };
    spec.split(',').any(|f| match f.split_once('@') {
        Some((n, release)) => n == name && release == crate::release::VERSION,
        None => f == name,
    })
}
