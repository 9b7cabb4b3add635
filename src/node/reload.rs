//! SIGHUP: re-read the configuration and apply it whole or not at all.
//! Listeners, the data directory, the store and `[replication]` keep their
//! values until a restart (and the reload says so); everything else takes
//! effect at once, sessions untouched.

use super::children::Ctx;
use super::maintenance::Housekeeping;
use crate::config::Config;
use crate::mcp::server::Settings;
use crate::mcp::session::SessionLimits;
use crate::ops;
use crate::supervisor::systemd;
use crate::toolsets::registry;
use crate::transport::http::{HttpSettings, listener, tls};

pub(super) async fn reload(ctx: &Ctx) {
    systemd::reloading();
    let outcome = apply(ctx);
    let at = crate::clock::now_secs();
    let (line, result) = match &outcome {
        Ok(notes) => (format!("applied at {at}{notes}"), "ok"),
        Err(e) => (
            format!("REJECTED at {at}: {e}; the previous configuration stays"),
            "rejected",
        ),
    };
    match &outcome {
        Ok(_) => tracing::info!(result = %line, "configuration reloaded"),
        Err(_) => tracing::error!(result = %line, "configuration reload rejected"),
    }
    metrics::counter!("erlmcp_config_reloads_total", "outcome" => result).increment(1);
    *ctx.ops
        .last_reload
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(line);
    let status = ops::status::one_line(&ops::status::snapshot(&ctx.ops));
    systemd::ready(&format!("{status}; reload {result}"));
}

/// Validates the new configuration in full before changing anything;
/// returns notes on what waits for a restart.
fn apply(ctx: &Ctx) -> Result<String, String> {
    let mut new = ctx.source.load().map_err(|e| e.to_string())?;
    let mut current = ctx.config.lock().unwrap_or_else(|p| p.into_inner());
    let notes = keep_fixed(&current, &mut new);
    let catalog = registry::build(&new, &ctx.store, &ctx.server.hub)?;
    // Read before anything changes: a bad certificate rejects the reload.
    let certificate = match &ctx.http.tls {
        Some(_) => Some(tls::load(&new.http.tls).map_err(|e| e.to_string())?),
        None => None,
    };
    ctx.log.set_level(&new.log.level)?;
    ctx.server
        .reload(catalog, Settings::from_config(&new.mcp, &new.tasks));
    ctx.server
        .sessions
        .set_limits(SessionLimits::from_config(&new.limits));
    ctx.http.reload(HttpSettings::from_config(
        &new.http,
        &new.limits,
        &new.auth,
        listener::fd_limit(),
    ));
    if let (Some(tls), Some(c)) = (&ctx.http.tls, certificate) {
        tls.install(c);
    }
    ctx.files.send_replace(new.toolsets.files.clone());
    ctx.housekeeping
        .send_replace(Housekeeping::from_config(&new));
    *current = new;
    Ok(notes)
}

/// Puts back, in `new`, the settings only a restart can change, and says
/// which of them the file changed.
fn keep_fixed(current: &Config, new: &mut Config) -> String {
    let mut notes = String::new();
    let fixed = [
        ("http.listen", new.http.listen != current.http.listen),
        (
            "http.tls.enabled",
            new.http.tls.enabled != current.http.tls.enabled,
        ),
        ("ops", new.ops != current.ops),
        ("data_dir", new.data_dir != current.data_dir),
        ("store", new.store != current.store),
        ("replication", new.replication != current.replication),
    ];
    for (key, changed) in fixed {
        if changed {
            notes.push_str(&format!("; {key} changed but needs a restart (kept)"));
        }
    }
    new.http.listen = current.http.listen;
    new.http.tls.enabled = current.http.tls.enabled;
    new.ops = current.ops.clone();
    new.data_dir = current.data_dir.clone();
    new.store = current.store.clone();
    new.replication = current.replication.clone();
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_changes_wait_for_a_restart_and_say_so() {
        let current = Config::default();
        let mut new = Config::default();
        new.replication.on_standby_loss = crate::config::StandbyLoss::Degrade;
        new.log.level = "debug".into();
        let notes = keep_fixed(&current, &mut new);
        assert_eq!(notes, "; replication changed but needs a restart (kept)");
        assert_eq!(new.replication, current.replication);
        assert_eq!(new.log.level, "debug", "the rest applies at once");
    }
}
