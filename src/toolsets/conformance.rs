//! The `conformance` toolset: the tools, resources and prompts the official
//! MCP conformance suite expects (mirroring its reference
//! `everything-server.ts`). Off unless enabled (`--fixture conformance`).
//!
//! Tools that need client input use [`RequestContext::input`], so the same
//! code sends a server request on a legacy session and returns an
//! `InputRequiredResult` on a modern request.

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::{
    CompletionRef, Page, PromptArgument, PromptDef, ResourceDef, ResourceTemplateDef, ToolDef,
    ToolError, ToolOutput, ToolResult, Toolset,
};
use crate::mcp::client::LogLevel;
use crate::mcp::context::{InputRequired, RequestContext};
use crate::mcp::error::McpError;
use crate::mcp::notify::{Change, Hub};

const IMAGE: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const AUDIO: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

pub struct Conformance {
    hub: Arc<Hub>,
}

impl Conformance {
    pub fn new(hub: Arc<Hub>) -> Self {
        Conformance { hub }
    }
}

fn empty() -> Value {
    json!({ "type": "object", "properties": {} })
}

fn one_string(name: &str, description: &str) -> Value {
    json!({
        "type": "object",
        "properties": { name: { "type": "string", "description": description } },
        "required": [name]
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

fn elicit(message: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "message": message,
        "requestedSchema": { "type": "object", "properties": properties, "required": required }
    })
}

fn sampling(text: &str, max_tokens: u32) -> Value {
    json!({
        "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
        "maxTokens": max_tokens
    })
}

/// `content.<field>` of an elicitation answer, as the reference fixture reads it.
fn answer_text(answer: &Value, field: &str) -> String {
    answer
        .pointer(&format!("/content/{field}"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned()
}

fn elicit_summary(prefix: &str, answer: &Value) -> String {
    let action = answer
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let content = answer.get("content").cloned().unwrap_or_else(|| json!({}));
    format!("{prefix}: action={action}, content={content}")
}

/// Modern only: asks for `wanted` with signed `state` until every answer and
/// a valid state of `kind` come back; returns the answers.
fn ask_with_state(
    ctx: &RequestContext,
    kind: &str,
    wanted: Vec<(&str, &str, Value)>,
) -> Result<Vec<Value>, ToolError> {
    let state_ok = ctx
        .verified_state()?
        .is_some_and(|s| s.get("kind") == Some(&json!(kind)));
    let given = ctx.input_responses.as_ref();
    let all_given = wanted
        .iter()
        .all(|(k, _, _)| given.is_some_and(|g| g.contains_key(*k)));
    if state_ok && all_given {
        return Ok(wanted
            .iter()
            .map(|(k, _, _)| given.and_then(|g| g.get(*k)).cloned().unwrap_or_default())
            .collect());
    }
    let nonce: u64 = rand::random();
    Err(ToolError::InputRequired(InputRequired {
        requests: wanted
            .into_iter()
            .map(|(k, m, p)| (k.to_owned(), json!({ "method": m, "params": p })))
            .collect(),
        state: Some(ctx.sign_state(&json!({ "kind": kind, "nonce": nonce }))),
    }))
}

fn modern_only(ctx: &RequestContext) -> Result<(), ToolError> {
    if ctx.version.is_stateless() {
        Ok(())
    } else {
        Err(ToolError::Failed(
            "this tool exercises requestState, which exists only in protocol 2026-07-28".into(),
        ))
    }
}

impl Conformance {
    async fn with_logging(&self, ctx: &RequestContext) -> ToolResult {
        for (i, msg) in [
            "Tool execution started",
            "Tool processing data",
            "Tool execution completed",
        ]
        .iter()
        .enumerate()
        {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ctx.log(LogLevel::Info, None, json!(msg));
        }
        Ok(ToolOutput::text("Tool with logging executed successfully"))
    }

    async fn with_progress(&self, ctx: &RequestContext) -> ToolResult {
        for (i, p) in [0.0, 50.0, 100.0].iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ctx.progress(*p, Some(100.0), Some(&format!("Completed step {p} of 100")));
        }
        let token = match &ctx.progress_token {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "0".into(),
        };
        Ok(ToolOutput::text(token))
    }

    async fn mrtr_tool(&self, name: &str, ctx: &RequestContext) -> ToolResult {
        match name {
            "test_input_required_result_elicitation" => {
                let a = ctx
                    .input(
                        "user_name",
                        "elicitation/create",
                        elicit(
                            "What is your name?",
                            json!({ "name": { "type": "string" } }),
                            &["name"],
                        ),
                    )
                    .await?;
                Ok(ToolOutput::text(format!(
                    "Hello, {}!",
                    answer_text(&a, "name")
                )))
            }
            "test_input_required_result_sampling" => {
                let a = ctx
                    .input(
                        "sample_request",
                        "sampling/createMessage",
                        sampling("What is the capital of France?", 100),
                    )
                    .await?;
                let text = a
                    .pointer("/content/text")
                    .and_then(Value::as_str)
                    .unwrap_or("no response");
                Ok(ToolOutput::text(format!("Sampling result: {text}")))
            }
            "test_input_required_result_list_roots" => {
                let a = ctx.input("roots_request", "roots/list", json!({})).await?;
                let n = a.get("roots").and_then(Value::as_array).map_or(0, Vec::len);
                Ok(ToolOutput::text(format!("Found {n} root(s)")))
            }
            "test_input_required_result_request_state" => {
                modern_only(ctx)?;
                let a = ask_with_state(
                    ctx,
                    "request-state",
                    vec![(
                        "confirm",
                        "elicitation/create",
                        elicit(
                            "Please confirm",
                            json!({ "ok": { "type": "boolean" } }),
                            &["ok"],
                        ),
                    )],
                )?;
                if a[0].pointer("/content/ok") == Some(&json!(true)) {
                    Ok(ToolOutput::text("state-ok: requestState validated"))
                } else {
                    Ok(ToolOutput::error("confirmation was not given"))
                }
            }
            "test_input_required_result_multiple_inputs" => {
                let wanted = vec![
                    (
                        "user_name",
                        "elicitation/create",
                        elicit(
                            "What is your name?",
                            json!({ "name": { "type": "string" } }),
                            &["name"],
                        ),
                    ),
                    (
                        "greeting",
                        "sampling/createMessage",
                        sampling("Generate a greeting", 50),
                    ),
                    ("client_roots", "roots/list", json!({})),
                ];
                let a = if ctx.version.is_stateless() {
                    ask_with_state(ctx, "multiple-inputs", wanted)?
                } else {
                    ctx.inputs(
                        wanted
                            .into_iter()
                            .map(|(k, m, p)| (k.into(), m.into(), p))
                            .collect(),
                    )
                    .await?
                };
                let greeting = a[1]
                    .pointer("/content/text")
                    .and_then(Value::as_str)
                    .unwrap_or("Hello there!");
                let roots = a[2]
                    .get("roots")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                Ok(ToolOutput::text(format!(
                    "Name: {}; Greeting: {greeting}; Roots: {roots}",
                    answer_text(&a[0], "name")
                )))
            }
            "test_input_required_result_multi_round" => {
                modern_only(ctx)?;
                self.multi_round(ctx)
            }
            "test_input_required_result_tampered_state" => {
                modern_only(ctx)?;
                ask_with_state(
                    ctx,
                    "tamper-test",
                    vec![(
                        "confirm",
                        "elicitation/create",
                        elicit(
                            "Please confirm",
                            json!({ "ok": { "type": "boolean" } }),
                            &["ok"],
                        ),
                    )],
                )?;
                Ok(ToolOutput::text("integrity-ok: state verified"))
            }
            "test_input_required_result_capabilities" => self.capabilities(ctx).await,
            _ => Err(ToolError::Protocol(McpError::invalid_params(format!(
                "Unknown tool: {name}"
            )))),
        }
    }

    fn multi_round(&self, ctx: &RequestContext) -> ToolResult {
        let state = ctx.verified_state()?;
        let round = state
            .as_ref()
            .and_then(|s| s.get("round"))
            .and_then(Value::as_u64);
        let given = ctx.input_responses.as_ref();
        let step1 = || {
            let nonce: u64 = rand::random();
            Err(ToolError::InputRequired(InputRequired {
                requests: [("step1".to_owned(), json!({ "method": "elicitation/create", "params":
                    elicit("Step 1: What is your name?", json!({ "name": { "type": "string" } }), &["name"]) }))]
                    .into_iter().collect(),
                state: Some(ctx.sign_state(&json!({ "round": 1, "nonce": nonce }))),
            }))
        };
        match (round, given) {
            (Some(1), Some(g)) if g.contains_key("step1") => {
                let name = answer_text(&g["step1"], "name");
                let nonce: u64 = rand::random();
                Err(ToolError::InputRequired(InputRequired {
                    requests: [("step2".to_owned(), json!({ "method": "elicitation/create", "params":
                        elicit("Step 2: What is your favorite color?", json!({ "color": { "type": "string" } }), &["color"]) }))]
                        .into_iter().collect(),
                    state: Some(ctx.sign_state(&json!({ "round": 2, "name": name, "nonce": nonce }))),
                }))
            }
            (Some(2), Some(g)) if g.contains_key("step2") => {
                let name = state
                    .as_ref()
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("friend");
                Ok(ToolOutput::text(format!(
                    "Multi-round complete for {name} who likes {}",
                    answer_text(&g["step2"], "color")
                )))
            }
            _ => step1(),
        }
    }

    async fn capabilities(&self, ctx: &RequestContext) -> ToolResult {
        let mut wanted = Vec::new();
        if ctx.client.supports("elicitation") {
            wanted.push((
                "elicit_input".to_owned(),
                "elicitation/create".to_owned(),
                elicit(
                    "Elicitation input",
                    json!({ "value": { "type": "string" } }),
                    &["value"],
                ),
            ));
        }
        if ctx.client.supports("sampling") {
            wanted.push((
                "sample_input".to_owned(),
                "sampling/createMessage".to_owned(),
                sampling("Sample request", 50),
            ));
        }
        if wanted.is_empty() {
            return Ok(ToolOutput::text("No supported capabilities declared"));
        }
        let keys: Vec<String> = wanted.iter().map(|(k, _, _)| k.clone()).collect();
        ctx.inputs(wanted).await?;
        Ok(ToolOutput::text(format!(
            "capabilities-ok: received {}",
            keys.join(",")
        )))
    }
}

#[async_trait]
impl Toolset for Conformance {
    fn name(&self) -> &'static str {
        "conformance"
    }

    fn tools(&self) -> Vec<ToolDef> {
        let mut tools = vec![
            ToolDef::new(
                "test_simple_text",
                "Tests simple text content response",
                empty(),
            ),
            ToolDef::new(
                "test_image_content",
                "Tests image content response",
                empty(),
            ),
            ToolDef::new(
                "test_audio_content",
                "Tests audio content response",
                empty(),
            ),
            ToolDef::new(
                "test_embedded_resource",
                "Tests embedded resource content response",
                empty(),
            ),
            ToolDef::new(
                "test_multiple_content_types",
                "Tests response with multiple content types (text, image, resource)",
                empty(),
            ),
            ToolDef::new(
                "test_tool_with_logging",
                "Tests tool that emits log messages during execution",
                empty(),
            ),
            ToolDef::new(
                "test_tool_with_progress",
                "Tests tool that reports progress notifications",
                empty(),
            ),
            ToolDef::new(
                "test_error_handling",
                "Tests error response handling",
                empty(),
            ),
            ToolDef::new(
                "test_reconnection",
                "Tests SSE stream disconnection and client reconnection (SEP-1699). Server will close the stream mid-call and send the result after client reconnects.",
                empty(),
            ),
            ToolDef::new(
                "test_sampling",
                "Tests server-initiated sampling (LLM completion request)",
                one_string("prompt", "The prompt to send to the LLM"),
            ),
            ToolDef::new(
                "test_elicitation",
                "Tests server-initiated elicitation (user input request)",
                one_string("message", "The message to show the user"),
            ),
            ToolDef::new(
                "test_elicitation_sep1034_defaults",
                "Tests elicitation with default values per SEP-1034",
                empty(),
            ),
            ToolDef::new(
                "test_elicitation_sep1330_enums",
                "Tests elicitation with enum schema improvements per SEP-1330",
                empty(),
            ),
            ToolDef::new(
                "json_schema_2020_12_tool",
                "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
                json_schema_2020_12(),
            ),
            ToolDef::new(
                "test_missing_capability",
                "Test tool requiring sampling",
                empty(),
            ),
            ToolDef::new(
                "test_custom_header",
                "Echoes a region that HTTP clients also mirror into the Mcp-Param-Region header (SEP-2243)",
                json!({
                    "type": "object",
                    "properties": { "region": { "type": "string", "description": "A region name", "x-mcp-header": "Region" } },
                    "required": ["region"]
                }),
            ),
        ];
        for (name, description) in [
            (
                "test_input_required_result_elicitation",
                "MRTR: returns InputRequiredResult with elicitation request",
            ),
            (
                "test_input_required_result_sampling",
                "MRTR: returns InputRequiredResult with sampling request",
            ),
            (
                "test_input_required_result_list_roots",
                "MRTR: returns InputRequiredResult with roots/list request",
            ),
            (
                "test_input_required_result_request_state",
                "MRTR: returns InputRequiredResult with requestState",
            ),
            (
                "test_input_required_result_multiple_inputs",
                "MRTR: returns InputRequiredResult with multiple input requests",
            ),
            (
                "test_input_required_result_multi_round",
                "MRTR: multi-round InputRequiredResult workflow",
            ),
            (
                "test_input_required_result_tampered_state",
                "MRTR: HMAC-signed requestState integrity test",
            ),
            (
                "test_input_required_result_capabilities",
                "MRTR: respects client capabilities in inputRequests",
            ),
            (
                "test_streaming_elicitation",
                "Diagnostic tool validating response progress streams",
            ),
            ("test_logging_tool", "Diagnostic logging validator tool"),
            (
                "test_trigger_tool_change",
                "Announces a tools list change to listeners",
            ),
            (
                "test_trigger_prompt_change",
                "Announces a prompts list change to listeners",
            ),
        ] {
            tools.push(ToolDef::new(name, description, empty()));
        }
        tools
    }

    async fn call_tool(&self, name: &str, args: Value, ctx: &RequestContext) -> ToolResult {
        match name {
            "test_simple_text" => Ok(ToolOutput::text(
                "This is a simple text response for testing.",
            )),
            "test_image_content" => Ok(ToolOutput::content(vec![
                json!({ "type": "image", "data": IMAGE, "mimeType": "image/png" }),
            ])),
            "test_audio_content" => Ok(ToolOutput::content(vec![
                json!({ "type": "audio", "data": AUDIO, "mimeType": "audio/wav" }),
            ])),
            "test_embedded_resource" => Ok(ToolOutput::content(vec![json!({
                "type": "resource",
                "resource": { "uri": "test://embedded-resource", "mimeType": "text/plain",
                              "text": "This is an embedded resource content." }
            })])),
            "test_multiple_content_types" => Ok(ToolOutput::content(vec![
                json!({ "type": "text", "text": "Multiple content types test:" }),
                json!({ "type": "image", "data": IMAGE, "mimeType": "image/png" }),
                json!({ "type": "resource", "resource": { "uri": "test://mixed-content-resource",
                    "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}" } }),
            ])),
            "test_tool_with_logging" => self.with_logging(ctx).await,
            "test_tool_with_progress" => self.with_progress(ctx).await,
            "test_error_handling" => Err(ToolError::Failed(
                "This tool intentionally returns an error for testing".into(),
            )),
            "test_reconnection" => {
                ctx.close_connection(500);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(ToolOutput::text(
                    "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
                ))
            }
            "test_sampling" => {
                let prompt = args
                    .get("prompt")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match ctx
                    .input("sampling", "sampling/createMessage", sampling(prompt, 100))
                    .await
                {
                    Ok(a) => {
                        let text = a
                            .pointer("/content/text")
                            .and_then(Value::as_str)
                            .unwrap_or("No response");
                        Ok(ToolOutput::text(format!("LLM response: {text}")))
                    }
                    Err(ToolError::Failed(e)) => Ok(ToolOutput::text(format!(
                        "Sampling not supported or error: {e}"
                    ))),
                    Err(e) => Err(e),
                }
            }
            "test_elicitation" => {
                let message = args
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let params = elicit(
                    message,
                    json!({ "response": { "type": "string", "description": "User's response" } }),
                    &["response"],
                );
                match ctx.input("elicitation", "elicitation/create", params).await {
                    Ok(a) => Ok(ToolOutput::text(elicit_summary("User response", &a))),
                    Err(ToolError::Failed(e)) => Ok(ToolOutput::text(format!(
                        "Elicitation not supported or error: {e}"
                    ))),
                    Err(e) => Err(e),
                }
            }
            "test_elicitation_sep1034_defaults" => self.elicit_fixture(ctx, sep1034_schema()).await,
            "test_elicitation_sep1330_enums" => self.elicit_fixture(ctx, sep1330_schema()).await,
            "json_schema_2020_12_tool" => Ok(ToolOutput::text(format!(
                "JSON Schema 2020-12 tool called with: {args}"
            ))),
            "test_missing_capability" => {
                if !ctx.client.supports("sampling") {
                    return Err(ToolError::Protocol(McpError::missing_capability(
                        json!({ "sampling": {} }),
                    )));
                }
                Ok(ToolOutput::text("Success"))
            }
            "test_custom_header" => Ok(ToolOutput::text(format!(
                "region: {}",
                args.get("region")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ))),
            "test_streaming_elicitation" => {
                ctx.progress(50.0, Some(100.0), None);
                Ok(ToolOutput::text("Streaming complete"))
            }
            "test_logging_tool" => {
                ctx.log(
                    LogLevel::Info,
                    None,
                    json!("Diagnostic trace logging activated"),
                );
                Ok(ToolOutput::text("Logging evaluated"))
            }
            "test_trigger_tool_change" => {
                self.hub.publish(Change::ToolsListChanged);
                Ok(ToolOutput::text("Mutation triggered"))
            }
            "test_trigger_prompt_change" => {
                self.hub.publish(Change::PromptsListChanged);
                Ok(ToolOutput::text("Mutation triggered"))
            }
            other => self.mrtr_tool(other, ctx).await,
        }
    }

    async fn list_resources(
        &self,
        cursor: Option<&str>,
        _limit: usize,
    ) -> Result<Page<ResourceDef>, McpError> {
        if cursor.is_some() {
            return Ok(Page::default());
        }
        let r = |uri: &str, name: &str, title: &str, description: &str, mime: &str| ResourceDef {
            uri: uri.into(),
            name: name.into(),
            title: Some(title.into()),
            description: Some(description.into()),
            mime_type: Some(mime.into()),
            size: None,
        };
        Ok(Page {
            items: vec![
                r(
                    "test://static-text",
                    "static-text",
                    "Static Text Resource",
                    "A static text resource for testing",
                    "text/plain",
                ),
                r(
                    "test://static-binary",
                    "static-binary",
                    "Static Binary Resource",
                    "A static binary resource (image) for testing",
                    "image/png",
                ),
                r(
                    "test://watched-resource",
                    "watched-resource",
                    "Watched Resource",
                    "A resource that auto-updates every 3 seconds",
                    "text/plain",
                ),
                r(
                    "test://stateless-static-text",
                    "Stateless Static Text",
                    "Stateless Static Text",
                    "A static text resource served on the draft path",
                    "text/plain",
                ),
            ],
            next: None,
        })
    }

    fn resource_templates(&self) -> Vec<ResourceTemplateDef> {
        vec![ResourceTemplateDef {
            uri_template: "test://template/{id}/data".into(),
            name: "template".into(),
            title: Some("Resource Template".into()),
            description: Some("A resource template with parameter substitution".into()),
            mime_type: Some("application/json".into()),
        }]
    }

    fn owns_uri(&self, uri: &str) -> bool {
        uri.starts_with("test://")
    }

    async fn read_resource(
        &self,
        uri: &str,
        _ctx: &RequestContext,
    ) -> Result<Option<Vec<Value>>, ToolError> {
        let text = |t: &str| {
            Ok(Some(vec![
                json!({ "uri": uri, "mimeType": "text/plain", "text": t }),
            ]))
        };
        match uri {
            "test://static-text" => text("This is the content of the static text resource."),
            "test://watched-resource" => text("Watched resource content"),
            "test://stateless-static-text" => {
                text("Static text content from the stateless draft path.")
            }
            "test://static-binary" => Ok(Some(vec![
                json!({ "uri": uri, "mimeType": "image/png", "blob": IMAGE }),
            ])),
            _ => {
                let id = uri
                    .strip_prefix("test://template/")
                    .and_then(|r| r.strip_suffix("/data"))
                    .filter(|id| !id.is_empty() && !id.contains('/'));
                Ok(id.map(|id| {
                    let body = json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
                    vec![json!({ "uri": uri, "mimeType": "application/json", "text": body.to_string() })]
                }))
            }
        }
    }

    fn prompts(&self) -> Vec<PromptDef> {
        let arg = |name: &str, description: &str| PromptArgument {
            name: name.into(),
            description: Some(description.into()),
            required: true,
        };
        let p = |name: &str, title: &str, description: &str, arguments| PromptDef {
            name: name.into(),
            title: Some(title.into()),
            description: Some(description.into()),
            arguments,
        };
        vec![
            p(
                "test_simple_prompt",
                "Simple Test Prompt",
                "A simple prompt without arguments",
                vec![],
            ),
            p(
                "test_prompt_with_arguments",
                "Prompt With Arguments",
                "A prompt with required arguments",
                vec![
                    arg("arg1", "First test argument"),
                    arg("arg2", "Second test argument"),
                ],
            ),
            p(
                "test_prompt_with_embedded_resource",
                "Prompt With Embedded Resource",
                "A prompt that includes an embedded resource",
                vec![arg("resourceUri", "URI of the resource to embed")],
            ),
            p(
                "test_prompt_with_image",
                "Prompt With Image",
                "A prompt that includes image content",
                vec![],
            ),
            p(
                "test_input_required_result_prompt",
                "Prompt Requiring Input",
                "MRTR: prompt that requires elicitation input",
                vec![],
            ),
        ]
    }

    async fn get_prompt(
        &self,
        name: &str,
        args: &Map<String, Value>,
        ctx: &RequestContext,
    ) -> Result<Value, ToolError> {
        let user = |content: Value| json!({ "role": "user", "content": content });
        let text = |t: &str| json!({ "type": "text", "text": t });
        let arg = |k: &str| {
            args.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let messages = match name {
            "test_simple_prompt" => vec![user(text("This is a simple prompt for testing."))],
            "test_prompt_with_arguments" => vec![user(text(&format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg("arg1"),
                arg("arg2")
            )))],
            "test_prompt_with_embedded_resource" => vec![
                user(
                    json!({ "type": "resource", "resource": { "uri": arg("resourceUri"),
                    "mimeType": "text/plain", "text": "Embedded resource content for testing." } }),
                ),
                user(text("Please process the embedded resource above.")),
            ],
            "test_prompt_with_image" => vec![
                user(json!({ "type": "image", "data": IMAGE, "mimeType": "image/png" })),
                user(text("Please analyze the image above.")),
            ],
            "test_input_required_result_prompt" => {
                let a = ctx
                    .input(
                        "user_context",
                        "elicitation/create",
                        elicit(
                            "What context should the prompt use?",
                            json!({ "context": { "type": "string" } }),
                            &["context"],
                        ),
                    )
                    .await?;
                vec![user(text(&format!(
                    "Prompt with context: {}",
                    answer_text(&a, "context")
                )))]
            }
            _ => return Err(ToolError::Failed(format!("unknown prompt {name}"))),
        };
        Ok(json!({ "messages": messages }))
    }

    async fn complete(
        &self,
        _reference: &CompletionRef<'_>,
        _argument: &str,
        _value: &str,
        _context: Option<&Map<String, Value>>,
    ) -> Option<Vec<String>> {
        // The reference fixture answers every completion with no values.
        Some(Vec::new())
    }
}

impl Conformance {
    async fn elicit_fixture(&self, ctx: &RequestContext, params: Value) -> ToolResult {
        match ctx.input("elicitation", "elicitation/create", params).await {
            Ok(a) => Ok(ToolOutput::text(elicit_summary(
                "Elicitation completed",
                &a,
            ))),
            Err(ToolError::Failed(e)) => Ok(ToolOutput::text(format!(
                "Elicitation not supported or error: {e}"
            ))),
            Err(e) => Err(e),
        }
    }
}

fn sep1034_schema() -> Value {
    elicit(
        "Please review and update the form fields with defaults",
        json!({
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": { "type": "string", "description": "User status",
                        "enum": ["active", "inactive", "pending"], "default": "active" },
            "verified": { "type": "boolean", "description": "Verification status", "default": true }
        }),
        &[],
    )
}

fn sep1330_schema() -> Value {
    elicit(
        "Please select options from the enum fields",
        json!({
            "untitledSingle": { "type": "string", "description": "Select one option",
                                "enum": ["option1", "option2", "option3"] },
            "titledSingle": { "type": "string", "description": "Select one option with titles",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" }
                ] },
            "legacyEnum": { "type": "string", "description": "Select one option (legacy)",
                "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"] },
            "untitledMulti": { "type": "array", "description": "Select multiple options",
                "minItems": 1, "maxItems": 3,
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] } },
            "titledMulti": { "type": "array", "description": "Select multiple options with titles",
                "minItems": 1, "maxItems": 3,
                "items": { "anyOf": [
                    { "const": "value1", "title": "First Choice" },
                    { "const": "value2", "title": "Second Choice" },
                    { "const": "value3", "title": "Third Choice" }
                ] } }
        }),
        &[],
    )
}
