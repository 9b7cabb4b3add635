//! The merged view of all enabled toolsets that the dispatcher serves from.
//! Built once per configuration (and again on reload); read lock-free.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

use super::error::McpError;
use super::grant::Grant;
use super::toolset::{
    CompletionRef, Page, PromptDef, ResourceDef, ResourceTemplateDef, ToolDef, Toolset,
};
use super::version::ProtocolVersion;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("tool {name:?} is offered by both {first} and {second}; disable one of them")]
    DuplicateTool {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("prompt {name:?} is offered by both {first} and {second}")]
    DuplicatePrompt {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("the inputSchema of tool {name:?} is not a valid JSON Schema: {reason}")]
    BadSchema { name: String, reason: String },
    #[error("tool {name:?} has an invalid x-mcp-header annotation: {reason}")]
    BadHeaderParam { name: String, reason: String },
}

/// A tool argument mirrored into an `Mcp-Param-{header}` HTTP header
/// (`x-mcp-header`, 2026-07-28).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderParam {
    /// The chain of `properties` keys leading to the argument.
    pub path: Vec<String>,
    /// The `{header}` part of `Mcp-Param-{header}`.
    pub header: String,
    /// `string`, `integer` or `boolean`.
    pub kind: String,
}

/// Finds every `x-mcp-header` annotation, which must sit on a primitive
/// property reachable from the root through `properties` only.
pub fn header_params(schema: &Value) -> Result<Vec<HeaderParam>, String> {
    let mut out = Vec::new();
    collect_header_params(schema, &mut Vec::new(), &mut out)?;
    let mut seen = std::collections::HashSet::new();
    for p in &out {
        if !seen.insert(p.header.to_ascii_lowercase()) {
            return Err(format!("header name {:?} is used twice", p.header));
        }
    }
    Ok(out)
}

fn collect_header_params(
    schema: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<HeaderParam>,
) -> Result<(), String> {
    let Some(obj) = schema.as_object() else {
        return Ok(());
    };
    if let Some(h) = obj.get("x-mcp-header") {
        let header = h.as_str().ok_or("x-mcp-header must be a string")?;
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if header.is_empty() || !header.chars().all(token) {
            return Err(format!("{header:?} is not an HTTP field-name token"));
        }
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "string" | "integer" | "boolean") {
            return Err(format!(
                "{header:?} annotates a {kind:?} property; only string, integer and boolean may be mirrored"
            ));
        }
        if path.is_empty() {
            return Err("x-mcp-header cannot annotate the schema root".into());
        }
        out.push(HeaderParam {
            path: path.clone(),
            header: header.to_owned(),
            kind: kind.to_owned(),
        });
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            path.push(k.clone());
            collect_header_params(v, path, out)?;
            path.pop();
        }
    }
    Ok(())
}

pub struct ToolEntry {
    pub toolset: usize,
    pub def: ToolDef,
    pub header_params: Vec<HeaderParam>,
    validator: jsonschema::Validator,
    /// `erlmcp_tool_call_duration_seconds{toolset,tool}`, looked up once
    /// here rather than by name and labels on every call.
    pub duration: metrics::Histogram,
}

impl ToolEntry {
    /// Checks arguments against the tool's inputSchema; the error lists
    /// every violation with its location.
    pub fn validate(&self, args: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(args)
            .take(10)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

pub struct Catalog {
    /// The serialized `tools/list` result, per protocol version (filled on
    /// first use; a reload builds a new catalog, so it never goes stale).
    list_cache: [std::sync::OnceLock<Option<Arc<Box<serde_json::value::RawValue>>>>; 4],
    toolsets: Vec<Arc<dyn Toolset>>,
    tools: Vec<ToolEntry>,
    tool_index: HashMap<String, usize>,
    prompts: Vec<(usize, PromptDef)>,
    prompt_index: HashMap<String, usize>,
    templates: Vec<(usize, ResourceTemplateDef)>,
}

impl Catalog {
    pub fn new(toolsets: Vec<Arc<dyn Toolset>>) -> Result<Catalog, CatalogError> {
        let mut tools = Vec::new();
        let mut tool_index = HashMap::new();
        let mut prompts = Vec::new();
        let mut prompt_index = HashMap::new();
        let mut templates = Vec::new();
        for (i, ts) in toolsets.iter().enumerate() {
            for def in ts.tools() {
                if let Some(&j) = tool_index.get(&def.name) {
                    let first: &ToolEntry = &tools[j];
                    return Err(CatalogError::DuplicateTool {
                        name: def.name,
                        first: toolsets[first.toolset].name(),
                        second: ts.name(),
                    });
                }
                let validator = jsonschema::validator_for(&def.input_schema).map_err(|e| {
                    CatalogError::BadSchema {
                        name: def.name.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let header_params = header_params(&def.input_schema).map_err(|reason| {
                    CatalogError::BadHeaderParam {
                        name: def.name.clone(),
                        reason,
                    }
                })?;
                tool_index.insert(def.name.clone(), tools.len());
                let duration = metrics::histogram!(
                    "erlmcp_tool_call_duration_seconds",
                    "toolset" => ts.name(),
                    "tool" => def.name.clone()
                );
                tools.push(ToolEntry {
                    toolset: i,
                    def,
                    header_params,
                    validator,
                    duration,
                });
            }
            for p in ts.prompts() {
                if let Some(&j) = prompt_index.get(&p.name) {
                    let (first, _): &(usize, PromptDef) = &prompts[j];
                    return Err(CatalogError::DuplicatePrompt {
                        name: p.name,
                        first: toolsets[*first].name(),
                        second: ts.name(),
                    });
                }
                prompt_index.insert(p.name.clone(), prompts.len());
                prompts.push((i, p));
            }
            for t in ts.resource_templates() {
                templates.push((i, t));
            }
        }
        Ok(Catalog {
            list_cache: Default::default(),
            toolsets,
            tools,
            tool_index,
            prompts,
            prompt_index,
            templates,
        })
    }

    pub fn toolset_names(&self) -> Vec<&'static str> {
        self.toolsets.iter().map(|t| t.name()).collect()
    }

    pub fn tool(&self, name: &str) -> Option<(&ToolEntry, &Arc<dyn Toolset>)> {
        let e = &self.tools[*self.tool_index.get(name)?];
        Some((e, &self.toolsets[e.toolset]))
    }

    pub fn tool_count(&self) -> usize {
        self.tools.len()
    }

    /// The cached `tools/list` result for `version`, made by `make` once.
    pub fn cached_list(
        &self,
        version: ProtocolVersion,
        make: impl FnOnce() -> Option<Box<serde_json::value::RawValue>>,
    ) -> Option<Arc<Box<serde_json::value::RawValue>>> {
        let slot = ProtocolVersion::ALL.iter().position(|v| *v == version)?;
        self.list_cache[slot]
            .get_or_init(|| make().map(Arc::new))
            .clone()
    }

    pub fn tools_page(
        &self,
        version: ProtocolVersion,
        cursor: Option<&str>,
        limit: usize,
        grant: Option<&Grant>,
    ) -> Result<(Vec<Value>, Option<String>), McpError> {
        match grant {
            Some(g) if !g.is_unrestricted() => {
                // The offsets count the tools this caller sees, so a page
                // never comes back short or empty with a next cursor.
                let visible: Vec<&ToolEntry> =
                    self.tools.iter().filter(|e| self.grants(g, e)).collect();
                page_of(&visible, cursor, limit, |e| e.def.to_json(version))
            }
            _ => page_of(&self.tools, cursor, limit, |e| e.def.to_json(version)),
        }
    }

    /// May `grant` call the tool of `entry`?
    pub fn grants(&self, grant: &Grant, entry: &ToolEntry) -> bool {
        grant.allows_tool(self.toolsets[entry.toolset].name(), &entry.def)
    }

    /// The scope of `grant` that allows calling `entry`, if any.
    pub fn scope_for<'g>(&self, grant: &'g Grant, entry: &ToolEntry) -> Option<&'g str> {
        grant.scope_for(self.toolsets[entry.toolset].name(), &entry.def)
    }

    /// The scope a refusal of `entry` names.
    pub fn needed_scope(&self, entry: &ToolEntry) -> String {
        super::grant::needed_scope(self.toolsets[entry.toolset].name(), &entry.def)
    }

    pub fn prompt(&self, name: &str) -> Option<(&PromptDef, &Arc<dyn Toolset>)> {
        let (ts, def) = &self.prompts[*self.prompt_index.get(name)?];
        Some((def, &self.toolsets[*ts]))
    }

    /// May `grant` (everyone when `None`) read toolset `i`'s prompts,
    /// resources and completions?
    fn readable(&self, grant: Option<&Grant>, i: usize) -> bool {
        grant.is_none_or(|g| g.reads(self.toolsets[i].name()))
    }

    /// The definitions (each with its toolset's index) `grant` may read.
    fn visible<'a, T>(&self, defs: &'a [(usize, T)], grant: Option<&Grant>) -> Vec<&'a (usize, T)> {
        defs.iter()
            .filter(|(i, _)| self.readable(grant, *i))
            .collect()
    }

    pub fn prompts_page(
        &self,
        version: ProtocolVersion,
        cursor: Option<&str>,
        limit: usize,
        grant: Option<&Grant>,
    ) -> Result<(Vec<Value>, Option<String>), McpError> {
        let visible = self.visible(&self.prompts, grant);
        page_of(&visible, cursor, limit, |(_, p)| p.to_json(version))
    }

    pub fn templates_page(
        &self,
        version: ProtocolVersion,
        cursor: Option<&str>,
        limit: usize,
        grant: Option<&Grant>,
    ) -> Result<(Vec<Value>, Option<String>), McpError> {
        let visible = self.visible(&self.templates, grant);
        page_of(&visible, cursor, limit, |(_, t)| t.to_json(version))
    }

    /// A page of concrete resources across toolsets. The cursor names the
    /// toolset and that toolset's own cursor.
    /// The toolsets `grant` cannot read are skipped.
    pub async fn resources_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
        grant: Option<&Grant>,
    ) -> Result<Page<ResourceDef>, McpError> {
        let (mut idx, mut inner) = match cursor {
            None => (0usize, None),
            Some(c) => decode_resource_cursor(c)?,
        };
        let mut out = Vec::new();
        while idx < self.toolsets.len() {
            if !self.readable(grant, idx) {
                idx += 1;
                inner = None;
                continue;
            }
            let want = limit - out.len();
            let page = self.toolsets[idx]
                .list_resources(inner.as_deref(), want)
                .await?;
            out.extend(page.items);
            match page.next {
                Some(next) if out.len() >= limit => {
                    return Ok(Page {
                        items: out,
                        next: Some(encode_resource_cursor(idx, Some(&next))),
                    });
                }
                Some(next) => inner = Some(next),
                None => {
                    idx += 1;
                    inner = None;
                }
            }
            if out.len() >= limit && idx < self.toolsets.len() {
                return Ok(Page {
                    items: out,
                    next: Some(encode_resource_cursor(idx, None)),
                });
            }
        }
        Ok(Page {
            items: out,
            next: None,
        })
    }

    /// The toolset answering reads of `uri`.
    pub fn owner_of(&self, uri: &str) -> Option<&Arc<dyn Toolset>> {
        self.toolsets.iter().find(|t| t.owns_uri(uri))
    }

    /// The toolset completing arguments of `reference`'s prompt or
    /// resource template.
    pub fn completion_owner(&self, reference: &CompletionRef<'_>) -> Option<&Arc<dyn Toolset>> {
        match reference {
            CompletionRef::Prompt(name) => self.prompt(name).map(|(_, t)| t),
            CompletionRef::Resource(uri) => self
                .templates
                .iter()
                .find(|(_, t)| t.uri_template == *uri)
                .map(|(i, _)| &self.toolsets[*i]),
        }
    }

    pub async fn complete(
        &self,
        reference: &CompletionRef<'_>,
        argument: &str,
        value: &str,
        context: Option<&Map<String, Value>>,
    ) -> Vec<String> {
        match self.completion_owner(reference) {
            Some(t) => t
                .complete(reference, argument, value, context)
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// Offset pagination over a static list; the cursor is the opaque offset.
fn page_of<T>(
    items: &[T],
    cursor: Option<&str>,
    limit: usize,
    render: impl Fn(&T) -> Value,
) -> Result<(Vec<Value>, Option<String>), McpError> {
    let start = match cursor {
        None => 0,
        Some(c) => decode_offset(c)?,
    };
    if start > items.len() {
        return Err(McpError::invalid_params("invalid cursor"));
    }
    let end = (start + limit).min(items.len());
    let page = items[start..end].iter().map(render).collect();
    let next = (end < items.len()).then(|| URL_SAFE_NO_PAD.encode(format!("o:{end}")));
    Ok((page, next))
}

fn decode_offset(cursor: &str) -> Result<usize, McpError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| McpError::invalid_params("invalid cursor"))
}

fn encode_resource_cursor(toolset: usize, inner: Option<&str>) -> String {
    URL_SAFE_NO_PAD.encode(format!("r:{toolset}:{}", inner.unwrap_or("")))
}

fn decode_resource_cursor(cursor: &str) -> Result<(usize, Option<String>), McpError> {
    let bad = || McpError::invalid_params("invalid cursor");
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let rest = text.strip_prefix("r:").ok_or_else(bad)?;
    let (idx, inner) = rest.split_once(':').ok_or_else(bad)?;
    let idx = idx.parse().map_err(|_| bad())?;
    Ok((idx, (!inner.is_empty()).then(|| inner.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_pages_cover_the_list_once() {
        let items: Vec<u32> = (0..7).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = page_of(&items, cursor.as_deref(), 3, |n| Value::from(*n)).unwrap();
            seen.extend(page);
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
    }

    #[test]
    fn header_params_are_found_and_checked() {
        let ok = serde_json::json!({ "type": "object", "properties": {
            "region": { "type": "string", "x-mcp-header": "Region" },
            "nested": { "type": "object", "properties": { "n": { "type": "integer", "x-mcp-header": "N" } } },
            "list": { "type": "array", "items": { "type": "string" } }
        }});
        let found = header_params(&ok).unwrap();
        assert_eq!(found.len(), 2);
        assert!(
            found
                .iter()
                .any(|p| p.path == ["nested", "n"] && p.header == "N")
        );
        let number =
            serde_json::json!({ "properties": { "x": { "type": "number", "x-mcp-header": "X" } } });
        assert!(header_params(&number).is_err());
        let dup = serde_json::json!({ "properties": {
            "a": { "type": "string", "x-mcp-header": "Same" },
            "b": { "type": "string", "x-mcp-header": "same" } } });
        assert!(header_params(&dup).is_err());
        let bad = serde_json::json!({ "properties": { "a": { "type": "string", "x-mcp-header": "has space" } } });
        assert!(header_params(&bad).is_err());
    }

    #[test]
    fn garbage_cursors_are_invalid_params() {
        let items = [1, 2];
        for c in ["", "xyz", "!!!", &URL_SAFE_NO_PAD.encode("o:99")] {
            let err = page_of(&items, Some(c), 1, |n| Value::from(*n)).unwrap_err();
            assert_eq!(err.code, -32602, "{c}");
        }
        assert!(decode_resource_cursor("nope").is_err());
    }
}
