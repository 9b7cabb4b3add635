//! What the server offers out of the box: one module per toolset, each
//! implementing [`crate::mcp::toolset::Toolset`], and [`registry::build`],
//! the one place that turns the configuration into the enabled toolsets.

pub mod conformance;
pub mod files;
pub mod memory;
pub mod prompts;
pub mod registry;
