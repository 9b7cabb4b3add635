//! How messages reach the protocol core: [`stdio`] for a client that runs
//! erlmcp as its child process, [`http`] for Streamable HTTP on `/mcp`.

pub mod http;
pub mod stdio;
