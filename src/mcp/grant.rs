//! What an authenticated caller may do: a principal and its scopes.
//!
//! Scopes (as a token carries them, space-separated like OAuth's):
//!
//! | scope | grants |
//! |---|---|
//! | `*` | everything: every tool, and the ops listener |
//! | `ops` | the ops listener's state-changing endpoints; no tool |
//! | `<toolset>:read` | the toolset's tools annotated `readOnlyHint: true`, its prompts, resources and completions |
//! | `<toolset>:write` | every tool of the toolset, and all it reads (write implies read) |
//! | `tool:<name>` | that one tool (no prompt, resource or completion) |
//!
//! A tool without `readOnlyHint: true` counts as writing: the annotation is
//! the toolset's own promise, and missing it must not widen a read scope.
//! A transport decides who is asking; the protocol core only filters
//! `tools/list` and refuses `tools/call` with the [`Grant`] it is handed.

use super::toolset::ToolDef;

/// The scope that grants everything.
pub const ALL: &str = "*";
/// The scope of the ops listener.
pub const OPS: &str = "ops";

/// A caller who authenticated, and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The token's name (the principal audit rows carry).
    pub principal: String,
    pub scopes: Vec<String>,
}

impl Grant {
    pub fn new(principal: impl Into<String>, scopes: Vec<String>) -> Grant {
        Grant {
            principal: principal.into(),
            scopes,
        }
    }

    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope || s == ALL)
    }

    /// Everything, whatever the tool.
    pub fn is_unrestricted(&self) -> bool {
        self.scopes.iter().any(|s| s == ALL)
    }

    /// May read `toolset`'s prompts, resources and completions? (A tool
    /// scope reaches its tool only.)
    pub fn reads(&self, toolset: &str) -> bool {
        self.scopes.iter().any(|s| {
            s == ALL
                || s.split_once(':')
                    .is_some_and(|(ts, level)| ts == toolset && matches!(level, "read" | "write"))
        })
    }

    /// May call `tool` of `toolset`?
    pub fn allows_tool(&self, toolset: &str, tool: &ToolDef) -> bool {
        self.scope_for(toolset, tool).is_some()
    }

    /// The first of the scopes that allows calling `tool` of `toolset`
    /// (what the call's audit row names).
    pub fn scope_for(&self, toolset: &str, tool: &ToolDef) -> Option<&str> {
        let read_only = is_read_only(tool);
        self.scopes
            .iter()
            .find(|s| {
                if *s == ALL {
                    return true;
                }
                if let Some(name) = s.strip_prefix("tool:") {
                    return name == tool.name;
                }
                match s.split_once(':') {
                    Some((ts, "write")) => ts == toolset,
                    Some((ts, "read")) => ts == toolset && read_only,
                    _ => false,
                }
            })
            .map(String::as_str)
    }
}

/// The scope that reads `toolset`: what a refusal of a prompt, resource or
/// completion names.
pub fn read_scope(toolset: &str) -> String {
    format!("{toolset}:read")
}

/// The narrowest toolset scope that grants `tool`: what a refusal names.
pub fn needed_scope(toolset: &str, tool: &ToolDef) -> String {
    if is_read_only(tool) {
        format!("{toolset}:read")
    } else {
        format!("{toolset}:write")
    }
}

fn is_read_only(tool: &ToolDef) -> bool {
    tool.annotations
        .as_ref()
        .and_then(|a| a.get("readOnlyHint"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// Checks one scope's spelling: one of the forms above, names of letters,
/// digits, `_`, `-` and `.` (so it can go into a `WWW-Authenticate` header
/// unquoted and is never mistaken for a list).
pub fn check_scope(s: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let ok = s == ALL
        || s == OPS
        || s.strip_prefix("tool:").is_some_and(name_ok)
        || s.strip_suffix(":read").is_some_and(name_ok)
        || s.strip_suffix(":write").is_some_and(name_ok);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid scope {s:?}: use *, ops, <toolset>:read, <toolset>:write or tool:<name>"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, read_only: Option<bool>) -> ToolDef {
        let t = ToolDef::new(name, "", json!({"type": "object"}));
        match read_only {
            Some(r) => t.annotations(json!({ "readOnlyHint": r })),
            None => t,
        }
    }

    fn grant(scopes: &[&str]) -> Grant {
        Grant::new("t", scopes.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn scopes_grant_what_the_table_says() {
        let read = tool("read_graph", Some(true));
        let write = tool("create_entities", Some(false));
        let unmarked = tool("echo", None);
        let r = grant(&["memory:read"]);
        assert!(r.allows_tool("memory", &read));
        assert!(!r.allows_tool("memory", &write));
        assert!(!r.allows_tool("files", &tool("x", Some(true))));
        let w = grant(&["memory:write"]);
        assert!(w.allows_tool("memory", &read) && w.allows_tool("memory", &write));
        assert!(!grant(&["conformance:read"]).allows_tool("conformance", &unmarked));
        assert!(grant(&["conformance:write"]).allows_tool("conformance", &unmarked));
        let one = grant(&["tool:echo"]);
        assert!(one.allows_tool("conformance", &unmarked));
        assert!(!one.allows_tool("memory", &read));
        assert!(grant(&["*"]).allows_tool("memory", &write));
        assert!(!grant(&["ops"]).allows_tool("memory", &read));
        assert!(grant(&["ops"]).has(OPS) && grant(&["*"]).has(OPS));
        assert!(!grant(&["memory:write"]).has(OPS));
        assert_eq!(needed_scope("memory", &read), "memory:read");
        assert_eq!(needed_scope("memory", &unmarked), "memory:write");
    }

    #[test]
    fn scopes_are_spelled_one_way() {
        for ok in ["*", "ops", "memory:read", "files:write", "tool:read_graph"] {
            check_scope(ok).unwrap();
        }
        for bad in [
            "",
            "memory",
            "memory:admin",
            "tool:",
            ":read",
            "a b:read",
            "x\":read",
        ] {
            assert!(check_scope(bad).is_err(), "{bad}");
        }
    }
}
