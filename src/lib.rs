//! # erlmcp
//!
//! An MCP (Model Context Protocol) server that is built to be operated: one
//! binary with durable state in SQLite, run under systemd.
//!
//! # Layers
//!
//! Modules stand in layers; **a module imports only from layers below
//! its own** (`tests/layers` checks every `crate::` path in CI). From the
//! top:
//!
//! | layer | modules | job |
//! |---|---|---|
//! | 11 | [`fuzzing`] | entry points of the fuzz targets and their property tests (tests and feature `fuzzing` only) |
//! | 10 | [`cli`] | one file per subcommand; the only layer that prints for humans |
//! | 9 | [`node`] | a running process: wiring, the supervised children, reload, shutdown |
//! | 8 | [`ops`] | the operations listener: one file per endpoint group, its client, the peer link |
//! | 7 | [`transport`], [`upgrade`] | stdio and Streamable HTTP; releases on probation, rolled back with their data |
//! | 6 | [`replication`] | primary and standby: the log, the link, roles and epochs |
//! | 5 | [`backup`] | domain subsystems: no HTTP, no printing |
//! | 4 | [`toolsets`] | implementations (memory, files, prompts, conformance) and their registry |
//! | 3 | [`mcp`] | the protocol core and the toolset contract |
//! | 2 | [`store`], [`supervisor`] | SQLite; the OTP-style tree and systemd |
//! | 1 | [`config`], [`logging`] | the configuration file; where logs go |
//! | 0 | [`clock`], [`fsx`], [`exit`], [`release`] | time, crash-safe file steps, exit codes, this release |
//!
//! Modules of one layer do not import each other.
//!
//! # A request's path
//!
//! A transport parses the envelope ([`mcp::jsonrpc::parse`]), decides its
//! era (legacy session or modern per-request `_meta`) and calls
//! [`mcp::server::Server::handle`], which builds a
//! [`mcp::context::RequestContext`] and routes to the method's handler; the
//! transport writes the result as JSON or SSE. `docs/architecture.md` has
//! the code map and the invariants.

pub mod cli;
pub(crate) mod node;
pub(crate) mod ops;
pub(crate) mod replication;
pub(crate) mod transport;
pub(crate) mod upgrade;
// `pub` where integration tests use the library directly.
pub mod backup;
pub mod clock;
pub mod config;
pub(crate) mod exit;
pub(crate) mod fsx;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub(crate) mod logging;
pub(crate) mod mcp;
pub mod release;
pub mod store;
pub(crate) mod supervisor;
pub(crate) mod toolsets;
