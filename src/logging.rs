//! Logs through `tracing`: to journald with structured fields when stderr is
//! the journal (systemd sets `JOURNAL_STREAM`), human-readable to stderr
//! otherwise; never to stdout. The level comes from `RUST_LOG` or the
//! configuration and can be changed on reload. Spans for OpenTelemetry
//! ([`traces`]) go to their exporter only, never to the log.

pub mod traces;

use std::os::unix::fs::MetadataExt;
use tracing_subscriber::filter::{Targets, filter_fn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Changes the log level of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
    traces: bool,
}

impl LogControl {
    /// Applies a new configured level; `RUST_LOG`, when set, keeps winning.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        if self.from_env {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
        let filter = with_traces(filter, self.traces);
        match &self.handle {
            Some(h) => h.reload(filter).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// True when systemd connected stderr to the journal.
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Adds the directive for the trace spans' target: enabled while they are
/// exported, off otherwise (then each is a disabled span, almost free),
/// whatever the level.
fn with_traces(filter: EnvFilter, on: bool) -> EnvFilter {
    let d = if on {
        format!("{}=info", traces::TARGET)
    } else {
        format!("{}=off", traces::TARGET)
    };
    match d.parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

/// Installs the global subscriber (once; later calls return a no-op control).
pub fn init(level: &str) -> LogControl {
    install(level, None)
}

/// [`init`], and exports trace spans as `settings` say. Must run inside
/// the tokio runtime that will carry the exporter.
pub fn init_with_traces(
    level: &str,
    settings: Option<&traces::Settings>,
) -> Result<(LogControl, Option<traces::Exporter>), traces::TracesError> {
    let provider = settings.map(traces::provider).transpose()?;
    let control = install(level, provider.as_ref());
    // Nothing to flush when another subscriber was installed first.
    let exporter = provider
        .filter(|_| control.handle.is_some())
        .map(traces::started);
    Ok((control, exporter))
}

fn install(
    level: &str,
    provider: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) -> LogControl {
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let traced = provider.is_some();
    let (filter, handle) = reload::Layer::new(with_traces(filter, traced));
    let not_traces = || filter_fn(|m| m.target() != traces::TARGET);
    let journald = if stderr_is_journal() {
        tracing_journald::layer().ok().map(|j| {
            // Plain field names (SESSION=, METHOD=), not F_SESSION=.
            j.with_syslog_identifier("erlmcp".into())
                .with_field_prefix(None)
                .with_filter(not_traces())
        })
    } else {
        None
    };
    let stderr = journald.is_none().then(|| {
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(not_traces())
    });
    let otel = provider.map(|p| {
        traces::layer(p)
            .with_filter(Targets::new().with_target(traces::TARGET, tracing::Level::TRACE))
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(journald)
        .with(stderr)
        .try_init()
        .is_ok();
    LogControl {
        handle: installed.then_some(handle),
        from_env,
        traces: traced,
    }
}
