//! The sd_notify protocol and socket activation. Every function is a no-op
//! when systemd did not ask for it (no `NOTIFY_SOCKET`, no `LISTEN_FDS`).

use sd_notify::NotifyState;
use std::net::TcpListener;
use std::os::fd::FromRawFd;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// READY=1 with a status line: the database is open, migrations are done
/// and the listeners are bound.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// RELOADING=1 with the monotonic time (systemd >= 253 requires it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading configuration"),
        ]),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock for RELOADING"),
    }
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining requests"),
    ]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Sockets passed by systemd, by name (`LISTEN_FDNAMES`): `mcp` and `ops`.
/// Unnamed sockets are taken as `mcp`, then `ops`, in order.
#[derive(Default)]
pub struct Activated {
    pub mcp: Option<TcpListener>,
    pub ops: Option<TcpListener>,
}

/// Takes the activated sockets and clears the variables so children do not
/// inherit them.
///
/// # Safety
/// Must run before any other thread exists (it edits the environment).
pub unsafe fn take_listeners() -> std::io::Result<Activated> {
    let mut out = Activated::default();
    let ours =
        std::env::var("LISTEN_PID").is_ok_and(|p| p.trim() == std::process::id().to_string());
    if !ours {
        // Not for us (absent, or inherited from a parent): ignore and clear.
        // SAFETY: the caller guarantees no other thread is running.
        unsafe {
            for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                std::env::remove_var(v);
            }
        }
        return Ok(out);
    }
    // SAFETY: the caller guarantees no other thread is running.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env()? };
    for (i, (fd, name)) in fds.enumerate() {
        // SAFETY: systemd passed this descriptor to us and nothing else owns it.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        listener.set_nonblocking(true)?;
        let slot = match (name.as_str(), i) {
            ("mcp", _) => &mut out.mcp,
            ("ops", _) => &mut out.ops,
            (_, 0) => &mut out.mcp,
            (_, 1) => &mut out.ops,
            (other, _) => {
                tracing::warn!(name = other, "ignoring an unknown activated socket");
                continue;
            }
        };
        *slot = Some(listener);
    }
    Ok(out)
}
