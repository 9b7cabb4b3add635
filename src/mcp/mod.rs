//! The Model Context Protocol, server side: the JSON-RPC envelope, protocol
//! versions, sessions, the dispatcher and one module per method group.
//! The toolset contract ([`toolset`]) and the merged [`catalog`] belong here:
//! toolsets implement them, the core never imports a toolset.
//! Transport-agnostic: stdio and HTTP both call [`server::Server::handle`].

pub mod catalog;
pub mod client;
pub mod context;
pub mod dispatch;
pub mod error;
pub mod grant;
pub mod jsonrpc;
pub mod meta;
pub mod methods;
pub mod notify;
pub mod outbound;
pub mod reach;
pub mod server;
pub mod session;
pub mod tasks;
pub mod toolset;
pub mod version;

pub use version::ProtocolVersion;
