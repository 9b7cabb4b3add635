//! Upgrade metrics (Prometheus names, base units in the name): this
//! release's standing on its data, as `upgrade.json` records it.

use super::record::State;

/// The states, as label values of `erlmcp_upgrade_state`.
const STATES: [&str; 3] = ["probation", "confirmed", "rolled_back"];

/// Sets the gauges to `s`: one series per state, 1 for the current one,
/// and when that state began.
pub(crate) fn state(s: &State) {
    let (name, since) = match s {
        State::Probation { since } => ("probation", *since),
        State::Confirmed { at } => ("confirmed", *at),
        State::RolledBack { at, .. } => ("rolled_back", *at),
    };
    for other in STATES {
        metrics::gauge!("erlmcp_upgrade_state", "state" => other).set(if other == name {
            1.0
        } else {
            0.0
        });
    }
    metrics::gauge!("erlmcp_upgrade_state_timestamp_seconds").set(since as f64);
}

pub(crate) fn describe() {
    use metrics::{Unit, describe_gauge};
    describe_gauge!(
        "erlmcp_upgrade_state",
        "1 for this release's standing on its data (label state: probation, confirmed, rolled_back)"
    );
    describe_gauge!(
        "erlmcp_upgrade_state_timestamp_seconds",
        Unit::Seconds,
        "When that standing began (Unix time)"
    );
}
