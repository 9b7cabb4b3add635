//! The process's stop signals as a future, for the command line to pass to
//! [`super::daemon::run`] and [`super::stdio::run`] (which never install
//! signal handlers of their own for stopping: a test or an embedding
//! passes any future instead).

use std::future::Future;

/// Resolves on SIGTERM or SIGINT. The handlers are installed now, not when
/// the future is first polled (that is after start-up, and a SIGTERM in
/// between would kill the process with the default action, uncleanly).
/// Call it inside the runtime.
pub(crate) fn terminated() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install the SIGTERM/SIGINT handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
