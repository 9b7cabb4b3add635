//! # erlmcp
//!
//! An MCP (Model Context Protocol) server that is built to be operated: one
//! binary with durable state in SQLite, run under systemd.
//!
//! # Layout
//!
//! - [`mcp`]: the protocol. The JSON-RPC envelope ([`mcp::jsonrpc`]),
//!   versions and their negotiation ([`mcp::version`]), sessions
//!   ([`mcp::session`]), the per-request context handlers use
//!   ([`mcp::context`]), the dispatcher ([`mcp::dispatch`]) and one module per
//!   method group ([`mcp::methods`]). Knows nothing of sockets.
//! - [`transport`]: how messages arrive — [`transport::stdio`] (newline
//!   delimited) and [`transport::http`] (Streamable HTTP on `/mcp`).
//! - [`store`]: SQLite. One writer thread commits in groups, a few readers,
//!   migrations, and one module per table family (sessions, SSE events,
//!   audit log, key-value).
//! - [`backup`]: online, zstd-compressed, verified snapshots with JSON
//!   manifests; retention; restore (offline on the files, or through the
//!   daemon's store); the scheduler the daemon runs.
//! - [`toolsets`]: what is served. One module per toolset (`memory`,
//!   `files`, `prompts`, `conformance`), registered in
//!   [`toolsets::registry`], merged by [`toolsets::Catalog`].
//! - [`supervisor`]: the OTP-style supervision tree, heartbeats, the systemd
//!   watchdog, sd_notify and socket activation.
//! - [`daemon`]: `erlmcp serve` as a tree of supervised children, with
//!   reload (SIGHUP) and graceful stop (SIGTERM).
//! - [`ops`]: the operations listener: health, readiness, metrics, status.
//! - [`config`]: the TOML file, defaults and `ERLMCP_*` overrides;
//!   [`logging`]: journald or stderr.
//! - [`cli`]: the command line; [`app`] wires the pieces shared by `serve`
//!   and `stdio`.
//!
//! A request's path: a transport parses the envelope
//! ([`mcp::jsonrpc::parse`]), decides its era (legacy session or modern
//! per-request `_meta`) and calls [`mcp::server::Server::handle`], which
//! builds a [`mcp::context::RequestContext`] and routes to the method's
//! handler; the transport writes the result as JSON or SSE.

pub mod app;
pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod logging;
pub mod mcp;
pub mod ops;
pub mod store;
pub mod supervisor;
pub mod toolsets;
pub mod transport;
