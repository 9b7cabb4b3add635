//! Tools that need the client's input: sampling, elicitation, roots. Each
//! uses [`RequestContext::input`], so the same code sends a server request
//! on a legacy session and returns an `InputRequiredResult` on a modern
//! request; the `test_input_required_result_*` tools exercise MRTR
//! (2026-07-28) itself, `requestState` included.

use serde_json::{Value, json};

use super::{Tool, empty};
use crate::mcp::context::{InputRequired, RequestContext};
use crate::mcp::error::McpError;
use crate::mcp::toolset::{ToolError, ToolOutput, ToolResult};

pub(super) const TOOLS: &[Tool] = &[
    Tool {
        name: "test_sampling",
        description: "Tests server-initiated sampling (LLM completion request)",
        schema: || one_string("prompt", "The prompt to send to the LLM"),
        call: |_, args, ctx| Box::pin(test_sampling(args, ctx)),
    },
    Tool {
        name: "test_elicitation",
        description: "Tests server-initiated elicitation (user input request)",
        schema: || one_string("message", "The message to show the user"),
        call: |_, args, ctx| Box::pin(test_elicitation(args, ctx)),
    },
    Tool {
        name: "test_elicitation_sep1034_defaults",
        description: "Tests elicitation with default values per SEP-1034",
        schema: empty,
        call: |_, _, ctx| Box::pin(elicit_form(ctx, sep1034_schema())),
    },
    Tool {
        name: "test_elicitation_sep1330_enums",
        description: "Tests elicitation with enum schema improvements per SEP-1330",
        schema: empty,
        call: |_, _, ctx| Box::pin(elicit_form(ctx, sep1330_schema())),
    },
    Tool {
        name: "test_missing_capability",
        description: "Test tool requiring sampling",
        schema: empty,
        call: |_, _, ctx| {
            let out = if ctx.client.supports("sampling") {
                Ok(ToolOutput::text("Success"))
            } else {
                Err(ToolError::Protocol(McpError::missing_capability(
                    json!({ "sampling": {} }),
                )))
            };
            super::done(out)
        },
    },
    Tool {
        name: "test_input_required_result_elicitation",
        description: "MRTR: returns InputRequiredResult with elicitation request",
        schema: empty,
        call: |_, _, ctx| Box::pin(mrtr_elicitation(ctx)),
    },
    Tool {
        name: "test_input_required_result_sampling",
        description: "MRTR: returns InputRequiredResult with sampling request",
        schema: empty,
        call: |_, _, ctx| Box::pin(mrtr_sampling(ctx)),
    },
    Tool {
        name: "test_input_required_result_list_roots",
        description: "MRTR: returns InputRequiredResult with roots/list request",
        schema: empty,
        call: |_, _, ctx| Box::pin(mrtr_roots(ctx)),
    },
    Tool {
        name: "test_input_required_result_request_state",
        description: "MRTR: returns InputRequiredResult with requestState",
        schema: empty,
        call: |_, _, ctx| super::done(mrtr_request_state(ctx)),
    },
    Tool {
        name: "test_input_required_result_multiple_inputs",
        description: "MRTR: returns InputRequiredResult with multiple input requests",
        schema: empty,
        call: |_, _, ctx| Box::pin(mrtr_multiple_inputs(ctx)),
    },
    Tool {
        name: "test_input_required_result_multi_round",
        description: "MRTR: multi-round InputRequiredResult workflow",
        schema: empty,
        call: |_, _, ctx| super::done(modern_only(ctx).and_then(|()| multi_round(ctx))),
    },
    Tool {
        name: "test_input_required_result_tampered_state",
        description: "MRTR: HMAC-signed requestState integrity test",
        schema: empty,
        call: |_, _, ctx| super::done(mrtr_tampered_state(ctx)),
    },
    Tool {
        name: "test_input_required_result_capabilities",
        description: "MRTR: respects client capabilities in inputRequests",
        schema: empty,
        call: |_, _, ctx| Box::pin(mrtr_capabilities(ctx)),
    },
];

fn one_string(name: &str, description: &str) -> Value {
    json!({
        "type": "object",
        "properties": { name: { "type": "string", "description": description } },
        "required": [name]
    })
}

/// The params of an `elicitation/create` request.
pub(super) fn elicit(message: &str, properties: Value, required: &[&str]) -> Value {
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
pub(super) fn answer_text(answer: &Value, field: &str) -> String {
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

/// A client that cannot answer is reported in the result, as the
/// reference fixture does, not as a failure.
fn or_unsupported(what: &str, out: Result<String, ToolError>) -> ToolResult {
    match out {
        Ok(text) => Ok(ToolOutput::text(text)),
        Err(ToolError::Failed(e)) => Ok(ToolOutput::text(format!(
            "{what} not supported or error: {e}"
        ))),
        Err(e) => Err(e),
    }
}

async fn test_sampling(args: Value, ctx: &RequestContext) -> ToolResult {
    let prompt = args
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let out = ctx
        .input("sampling", "sampling/createMessage", sampling(prompt, 100))
        .await
        .map(|a| {
            let text = a.pointer("/content/text").and_then(Value::as_str);
            format!("LLM response: {}", text.unwrap_or("No response"))
        });
    or_unsupported("Sampling", out)
}

async fn test_elicitation(args: Value, ctx: &RequestContext) -> ToolResult {
    let message = args
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = elicit(
        message,
        json!({ "response": { "type": "string", "description": "User's response" } }),
        &["response"],
    );
    let out = ctx
        .input("elicitation", "elicitation/create", params)
        .await
        .map(|a| elicit_summary("User response", &a));
    or_unsupported("Elicitation", out)
}

async fn elicit_form(ctx: &RequestContext, params: Value) -> ToolResult {
    let out = ctx
        .input("elicitation", "elicitation/create", params)
        .await
        .map(|a| elicit_summary("Elicitation completed", &a));
    or_unsupported("Elicitation", out)
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

fn ask_name() -> Value {
    elicit(
        "What is your name?",
        json!({ "name": { "type": "string" } }),
        &["name"],
    )
}

fn ask_confirm() -> Value {
    elicit(
        "Please confirm",
        json!({ "ok": { "type": "boolean" } }),
        &["ok"],
    )
}

async fn mrtr_elicitation(ctx: &RequestContext) -> ToolResult {
    let a = ctx
        .input("user_name", "elicitation/create", ask_name())
        .await?;
    Ok(ToolOutput::text(format!(
        "Hello, {}!",
        answer_text(&a, "name")
    )))
}

async fn mrtr_sampling(ctx: &RequestContext) -> ToolResult {
    let params = sampling("What is the capital of France?", 100);
    let a = ctx
        .input("sample_request", "sampling/createMessage", params)
        .await?;
    let text = a.pointer("/content/text").and_then(Value::as_str);
    Ok(ToolOutput::text(format!(
        "Sampling result: {}",
        text.unwrap_or("no response")
    )))
}

async fn mrtr_roots(ctx: &RequestContext) -> ToolResult {
    let a = ctx.input("roots_request", "roots/list", json!({})).await?;
    let n = a.get("roots").and_then(Value::as_array).map_or(0, Vec::len);
    Ok(ToolOutput::text(format!("Found {n} root(s)")))
}

fn mrtr_request_state(ctx: &RequestContext) -> ToolResult {
    modern_only(ctx)?;
    let wanted = vec![("confirm", "elicitation/create", ask_confirm())];
    let a = ask_with_state(ctx, "request-state", wanted)?;
    if a[0].pointer("/content/ok") == Some(&json!(true)) {
        Ok(ToolOutput::text("state-ok: requestState validated"))
    } else {
        Ok(ToolOutput::error("confirmation was not given"))
    }
}

fn mrtr_tampered_state(ctx: &RequestContext) -> ToolResult {
    modern_only(ctx)?;
    let wanted = vec![("confirm", "elicitation/create", ask_confirm())];
    ask_with_state(ctx, "tamper-test", wanted)?;
    Ok(ToolOutput::text("integrity-ok: state verified"))
}

async fn mrtr_multiple_inputs(ctx: &RequestContext) -> ToolResult {
    let wanted = vec![
        ("user_name", "elicitation/create", ask_name()),
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
        let wanted = wanted
            .into_iter()
            .map(|(k, m, p)| (k.into(), m.into(), p))
            .collect();
        ctx.inputs(wanted).await?
    };
    let greeting = a[1].pointer("/content/text").and_then(Value::as_str);
    let roots = a[2]
        .get("roots")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    Ok(ToolOutput::text(format!(
        "Name: {}; Greeting: {}; Roots: {roots}",
        answer_text(&a[0], "name"),
        greeting.unwrap_or("Hello there!")
    )))
}

async fn mrtr_capabilities(ctx: &RequestContext) -> ToolResult {
    let mut wanted = Vec::new();
    if ctx.client.supports("elicitation") {
        let params = elicit(
            "Elicitation input",
            json!({ "value": { "type": "string" } }),
            &["value"],
        );
        wanted.push((
            "elicit_input".to_owned(),
            "elicitation/create".to_owned(),
            params,
        ));
    }
    if ctx.client.supports("sampling") {
        let params = sampling("Sample request", 50);
        wanted.push((
            "sample_input".to_owned(),
            "sampling/createMessage".to_owned(),
            params,
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

fn modern_only(ctx: &RequestContext) -> Result<(), ToolError> {
    if ctx.version.is_stateless() {
        Ok(())
    } else {
        Err(ToolError::Failed(
            "this tool exercises requestState, which exists only in protocol 2026-07-28".into(),
        ))
    }
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

/// One question per round; the state carries the round and what was
/// answered before.
fn multi_round(ctx: &RequestContext) -> ToolResult {
    let state = ctx.verified_state()?;
    let field = |k: &str| state.as_ref().and_then(|s| s.get(k)).cloned();
    let round = field("round").and_then(|r| r.as_u64());
    let ask = |key: &str, params: Value, state: Value| {
        Err(ToolError::InputRequired(InputRequired {
            requests: [(
                key.to_owned(),
                json!({ "method": "elicitation/create", "params": params }),
            )]
            .into_iter()
            .collect(),
            state: Some(ctx.sign_state(&state)),
        }))
    };
    let nonce: u64 = rand::random();
    match (round, ctx.input_responses.as_ref()) {
        (Some(1), Some(g)) if g.contains_key("step1") => {
            let name = answer_text(&g["step1"], "name");
            let params = elicit(
                "Step 2: What is your favorite color?",
                json!({ "color": { "type": "string" } }),
                &["color"],
            );
            ask(
                "step2",
                params,
                json!({ "round": 2, "name": name, "nonce": nonce }),
            )
        }
        (Some(2), Some(g)) if g.contains_key("step2") => {
            let name = field("name");
            Ok(ToolOutput::text(format!(
                "Multi-round complete for {} who likes {}",
                name.as_ref().and_then(Value::as_str).unwrap_or("friend"),
                answer_text(&g["step2"], "color")
            )))
        }
        _ => {
            let params = elicit(
                "Step 1: What is your name?",
                json!({ "name": { "type": "string" } }),
                &["name"],
            );
            ask("step1", params, json!({ "round": 1, "nonce": nonce }))
        }
    }
}
