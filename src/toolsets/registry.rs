//! The one place toolsets are registered: configuration in, catalog out.
//! Adding a toolset means one module and one line here.

use std::sync::Arc;

use super::{conformance, files, memory, prompts};
use crate::config::Config;
use crate::mcp::catalog::Catalog;
use crate::mcp::notify::Hub;
use crate::mcp::toolset::Toolset;
use crate::store::Store;

/// Builds the catalog of every toolset the configuration enables.
pub fn build(config: &Config, store: &Store, hub: &Arc<Hub>) -> Result<Catalog, String> {
    let mut toolsets: Vec<Arc<dyn Toolset>> = Vec::new();
    let t = &config.toolsets;
    if t.memory.enabled {
        toolsets.push(Arc::new(memory::Memory::new(store.clone(), hub.clone())));
    }
    if t.files.enabled {
        toolsets.push(Arc::new(files::Files::new(&t.files)?));
    }
    if !config.prompts.is_empty() {
        toolsets.push(Arc::new(prompts::Prompts::new(config.prompts.clone())));
    }
    if t.conformance.enabled {
        toolsets.push(Arc::new(conformance::Conformance::new(hub.clone())));
    }
    Catalog::new(toolsets).map_err(|e| e.to_string())
}
