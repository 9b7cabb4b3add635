//! Tools whose answer is fixed content of each kind.

use serde_json::{Value, json};

use super::{IMAGE, Tool, done, empty};
use crate::mcp::toolset::{ToolError, ToolOutput};

const AUDIO: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

pub(super) const TOOLS: &[Tool] = &[
    Tool {
        name: "test_simple_text",
        description: "Tests simple text content response",
        schema: empty,
        call: |_, _, _| {
            done(Ok(ToolOutput::text(
                "This is a simple text response for testing.",
            )))
        },
    },
    Tool {
        name: "test_image_content",
        description: "Tests image content response",
        schema: empty,
        call: |_, _, _| {
            done(Ok(ToolOutput::content(vec![
                json!({ "type": "image", "data": IMAGE, "mimeType": "image/png" }),
            ])))
        },
    },
    Tool {
        name: "test_audio_content",
        description: "Tests audio content response",
        schema: empty,
        call: |_, _, _| {
            done(Ok(ToolOutput::content(vec![
                json!({ "type": "audio", "data": AUDIO, "mimeType": "audio/wav" }),
            ])))
        },
    },
    Tool {
        name: "test_embedded_resource",
        description: "Tests embedded resource content response",
        schema: empty,
        call: |_, _, _| {
            done(Ok(ToolOutput::content(vec![json!({
                "type": "resource",
                "resource": { "uri": "test://embedded-resource", "mimeType": "text/plain",
                              "text": "This is an embedded resource content." }
            })])))
        },
    },
    Tool {
        name: "test_multiple_content_types",
        description: "Tests response with multiple content types (text, image, resource)",
        schema: empty,
        call: |_, _, _| {
            done(Ok(ToolOutput::content(vec![
                json!({ "type": "text", "text": "Multiple content types test:" }),
                json!({ "type": "image", "data": IMAGE, "mimeType": "image/png" }),
                json!({ "type": "resource", "resource": { "uri": "test://mixed-content-resource",
                    "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}" } }),
            ])))
        },
    },
    Tool {
        name: "test_error_handling",
        description: "Tests error response handling",
        schema: empty,
        call: |_, _, _| {
            done(Err(ToolError::Failed(
                "This tool intentionally returns an error for testing".into(),
            )))
        },
    },
    Tool {
        name: "json_schema_2020_12_tool",
        description: "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
        schema: json_schema_2020_12,
        call: |_, args, _| {
            done(Ok(ToolOutput::text(format!(
                "JSON Schema 2020-12 tool called with: {args}"
            ))))
        },
    },
    Tool {
        name: "test_custom_header",
        description: "Echoes a region that HTTP clients also mirror into the Mcp-Param-Region header (SEP-2243)",
        schema: region,
        call: |_, args, _| {
            let region = args
                .get("region")
                .and_then(Value::as_str)
                .unwrap_or_default();
            done(Ok(ToolOutput::text(format!("region: {region}"))))
        },
    },
];

fn region() -> Value {
    json!({
        "type": "object",
        "properties": { "region": { "type": "string", "description": "A region name", "x-mcp-header": "Region" } },
        "required": ["region"]
    })
}

fn json_schema_2020_12() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
            }
        },
        "properties": {
            "name": { "type": "string" },
            "address": { "$ref": "#/$defs/address" },
            "contactMethod": { "type": "string", "enum": ["phone", "email"] },
            "phone": { "type": "string" },
            "email": { "type": "string" }
        },
        "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
        "if": { "properties": { "contactMethod": { "const": "phone" } }, "required": ["contactMethod"] },
        "then": { "required": ["phone"] },
        "else": { "required": ["email"] },
        "additionalProperties": false
    })
}
