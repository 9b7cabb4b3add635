//! The fixture's resources: static text and binary, a watched one, one on
//! the stateless path, and a template.

use serde_json::{Value, json};

use super::IMAGE;
use crate::mcp::toolset::{ResourceDef, ResourceTemplateDef};

/// Every fixture resource is under this scheme.
pub(super) const SCHEME: &str = "test://";

/// (uri, name, title, description, MIME type, text or base64 content).
type Fixed = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const FIXED: &[Fixed] = &[
    (
        "test://static-text",
        "static-text",
        "Static Text Resource",
        "A static text resource for testing",
        "text/plain",
        "This is the content of the static text resource.",
    ),
    (
        "test://static-binary",
        "static-binary",
        "Static Binary Resource",
        "A static binary resource (image) for testing",
        "image/png",
        IMAGE,
    ),
    (
        "test://watched-resource",
        "watched-resource",
        "Watched Resource",
        "A resource that auto-updates every 3 seconds",
        "text/plain",
        "Watched resource content",
    ),
    (
        "test://stateless-static-text",
        "Stateless Static Text",
        "Stateless Static Text",
        "A static text resource served on the draft path",
        "text/plain",
        "Static text content from the stateless draft path.",
    ),
];

pub(super) fn list() -> Vec<ResourceDef> {
    FIXED
        .iter()
        .map(|(uri, name, title, description, mime, _)| ResourceDef {
            uri: (*uri).into(),
            name: (*name).into(),
            title: Some((*title).into()),
            description: Some((*description).into()),
            mime_type: Some((*mime).into()),
            size: None,
        })
        .collect()
}

pub(super) fn templates() -> Vec<ResourceTemplateDef> {
    vec![ResourceTemplateDef {
        uri_template: "test://template/{id}/data".into(),
        name: "template".into(),
        title: Some("Resource Template".into()),
        description: Some("A resource template with parameter substitution".into()),
        mime_type: Some("application/json".into()),
    }]
}

/// The `contents` of `uri`; `None` if there is no such resource.
pub(super) fn read(uri: &str) -> Option<Vec<Value>> {
    if let Some((_, _, _, _, mime, body)) = FIXED.iter().find(|f| f.0 == uri) {
        let field = if mime.starts_with("text/") {
            "text"
        } else {
            "blob"
        };
        return Some(vec![json!({ "uri": uri, "mimeType": mime, field: body })]);
    }
    let id = uri
        .strip_prefix("test://template/")
        .and_then(|r| r.strip_suffix("/data"))
        .filter(|id| !id.is_empty() && !id.contains('/'))?;
    let body = json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
    Some(vec![
        json!({ "uri": uri, "mimeType": "application/json", "text": body.to_string() }),
    ])
}
