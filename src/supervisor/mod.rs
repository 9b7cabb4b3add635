//! An OTP-style supervision tree of tokio tasks, and erlmcp's bond with
//! systemd.
//!
//! A [`Supervisor`] starts its children in order, watches them, and when one
//! ends applies the child's [`Restart`] policy through the supervisor's
//! [`Strategy`], within an intensity limit (at most N restarts in T). Past
//! the limit it stops its children and *escalates*: it ends with an error,
//! which its own supervisor treats as a failed child. At the root that error
//! makes the process exit non-zero, so systemd restarts it.
//!
//! Critical children prove they are alive with [`Heartbeats`]; the
//! [`watchdog`] sends systemd `WATCHDOG=1` only while every heartbeat is
//! fresh, so a hung part gets the process killed and restarted.

pub mod heartbeat;
pub mod systemd;
pub mod tree;
pub mod watchdog;

pub use heartbeat::Heartbeats;
pub use tree::{
    ChildError, ChildSpec, Escalation, Intensity, Restart, Strategy, Supervisor, TreeStatus,
};
