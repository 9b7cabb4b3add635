//! What a request reaches, and the scope that must cover it. One answer
//! for every route a request takes: the HTTP transport asks here to refuse
//! with 403 before any session work, and the dispatcher asks again for
//! every other way a request arrives.
//!
//! | method | reaches | needs |
//! |---|---|---|
//! | `tools/call` | the tool | see [`super::grant`] (`<toolset>:read` for a read-only tool, else `:write`, or `tool:<name>`) |
//! | `prompts/get` | the prompt's toolset | `<toolset>:read` |
//! | `resources/read`, `resources/subscribe` | the toolset owning the URI | `<toolset>:read` |
//! | `completion/complete` | the toolset of the prompt or template | `<toolset>:read` |
//!
//! A `tool:<name>` scope reaches that tool only: no prompt, resource or
//! completion. Lists (`tools/list`, `prompts/list`, `resources/list`,
//! `resources/templates/list`) show only what the caller reaches. A target
//! that does not exist is left to its handler (not found is not a scope
//! question).

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::catalog::Catalog;
use super::error::McpError;
use super::grant::{self, Grant};
use super::methods::completion::Reference;
use super::toolset::CompletionRef;
use crate::store::Store;
use crate::store::audit::{self, AuditEntry};

/// A request beyond its caller's scopes: what it reached and the scope
/// that would have covered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    /// The audit kind: `tool`, `prompt`, `resource` or `completion`.
    pub kind: &'static str,
    /// The tool or prompt name, or the URI.
    pub subject: String,
    pub scope: String,
}

impl Needed {
    /// "calling create_entities needs scope memory:write".
    pub fn description(&self) -> String {
        let verb = if self.kind == "tool" {
            "calling"
        } else {
            "reading"
        };
        format!("{verb} {} needs scope {}", self.subject, self.scope)
    }

    /// The JSON-RPC error: -32001, and 403 where the transport has a
    /// status to give.
    pub fn error(&self) -> McpError {
        let key = if self.kind == "resource" {
            "uri"
        } else {
            "name"
        };
        McpError::new(
            -32001,
            format!("insufficient scope: {}", self.description()),
        )
        .with_data(json!({ key: self.subject, "scope": self.scope }))
        .with_status(403)
    }

    /// Records the refusal (batched, like every call).
    pub fn audit(&self, store: &Store, session_id: Option<String>, principal: Option<String>) {
        let mut entry = AuditEntry::event(
            self.kind,
            &self.subject,
            "insufficient_scope",
            Some(&format!("needs scope {}", self.scope)),
            principal,
        );
        entry.session_id = session_id;
        audit::record_batched(store, entry);
    }
}

/// The params every scoped method names its target with.
#[derive(Deserialize, Default)]
struct Target {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default, rename = "ref")]
    reference: Option<Reference>,
}

/// What `method` with `params` reaches that `grant` does not cover; `None`
/// when it is covered, reaches nothing scoped, or names nothing that
/// exists (params its handler will refuse anyway).
pub fn beyond(
    catalog: &Catalog,
    grant: &Grant,
    method: &str,
    params: Option<&RawValue>,
) -> Option<Needed> {
    if grant.is_unrestricted() {
        return None;
    }
    let t: Target = serde_json::from_str(params?.get()).ok()?;
    let (kind, subject, toolset) = match method {
        "tools/call" => {
            let name = t.name?;
            let (entry, _) = catalog.tool(&name)?;
            if catalog.grants(grant, entry) {
                return None;
            }
            let scope = catalog.needed_scope(entry);
            return Some(Needed {
                kind: "tool",
                subject: name,
                scope,
            });
        }
        "prompts/get" => {
            let name = t.name?;
            let ts = catalog.prompt(&name)?.1.name();
            ("prompt", name, ts)
        }
        "resources/read" | "resources/subscribe" => {
            let uri = t.uri?;
            let ts = catalog.owner_of(&uri)?.name();
            ("resource", uri, ts)
        }
        "completion/complete" => {
            let r = t.reference?;
            let target = r.target()?;
            let ts = catalog.completion_owner(&target)?.name();
            let (CompletionRef::Prompt(subject) | CompletionRef::Resource(subject)) = target;
            ("completion", subject.to_owned(), ts)
        }
        _ => return None,
    };
    (!grant.reads(toolset)).then(|| Needed {
        kind,
        subject,
        scope: grant::read_scope(toolset),
    })
}
