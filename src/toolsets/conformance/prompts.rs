//! The fixture's prompts, each name written once beside its definition and
//! its messages.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::IMAGE;
use super::input::{answer_text, elicit};
use crate::mcp::context::RequestContext;
use crate::mcp::toolset::{PromptArgument, PromptDef, ToolError};

type Messages<'a> = BoxFuture<'a, Result<Vec<Value>, ToolError>>;

struct Prompt {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    /// Required arguments: (name, description).
    arguments: &'static [(&'static str, &'static str)],
    messages: for<'a> fn(&'a Map<String, Value>, &'a RequestContext) -> Messages<'a>,
}

const PROMPTS: &[Prompt] = &[
    Prompt {
        name: "test_simple_prompt",
        title: "Simple Test Prompt",
        description: "A simple prompt without arguments",
        arguments: &[],
        messages: |_, _| ready(vec![user(text("This is a simple prompt for testing."))]),
    },
    Prompt {
        name: "test_prompt_with_arguments",
        title: "Prompt With Arguments",
        description: "A prompt with required arguments",
        arguments: &[
            ("arg1", "First test argument"),
            ("arg2", "Second test argument"),
        ],
        messages: |args, _| {
            ready(vec![user(text(&format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                arg(args, "arg1"),
                arg(args, "arg2")
            )))])
        },
    },
    Prompt {
        name: "test_prompt_with_embedded_resource",
        title: "Prompt With Embedded Resource",
        description: "A prompt that includes an embedded resource",
        arguments: &[("resourceUri", "URI of the resource to embed")],
        messages: |args, _| {
            ready(vec![
                user(
                    json!({ "type": "resource", "resource": { "uri": arg(args, "resourceUri"),
                    "mimeType": "text/plain", "text": "Embedded resource content for testing." } }),
                ),
                user(text("Please process the embedded resource above.")),
            ])
        },
    },
    Prompt {
        name: "test_prompt_with_image",
        title: "Prompt With Image",
        description: "A prompt that includes image content",
        arguments: &[],
        messages: |_, _| {
            ready(vec![
                user(json!({ "type": "image", "data": IMAGE, "mimeType": "image/png" })),
                user(text("Please analyze the image above.")),
            ])
        },
    },
    Prompt {
        name: "test_input_required_result_prompt",
        title: "Prompt Requiring Input",
        description: "MRTR: prompt that requires elicitation input",
        arguments: &[],
        messages: |_, ctx| Box::pin(with_context(ctx)),
    },
];

pub(super) fn list() -> Vec<PromptDef> {
    PROMPTS
        .iter()
        .map(|p| PromptDef {
            name: p.name.into(),
            title: Some(p.title.into()),
            description: Some(p.description.into()),
            arguments: p
                .arguments
                .iter()
                .map(|(name, description)| PromptArgument {
                    name: (*name).into(),
                    description: Some((*description).into()),
                    required: true,
                })
                .collect(),
        })
        .collect()
}

pub(super) async fn get(
    name: &str,
    args: &Map<String, Value>,
    ctx: &RequestContext,
) -> Result<Value, ToolError> {
    let Some(p) = PROMPTS.iter().find(|p| p.name == name) else {
        return Err(ToolError::Failed(format!("unknown prompt {name}")));
    };
    let messages = (p.messages)(args, ctx).await?;
    Ok(json!({ "messages": messages }))
}

fn ready<'a>(messages: Vec<Value>) -> Messages<'a> {
    Box::pin(std::future::ready(Ok(messages)))
}

fn user(content: Value) -> Value {
    json!({ "role": "user", "content": content })
}

fn text(t: &str) -> Value {
    json!({ "type": "text", "text": t })
}

fn arg(args: &Map<String, Value>, k: &str) -> String {
    args.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

async fn with_context(ctx: &RequestContext) -> Result<Vec<Value>, ToolError> {
    let params = elicit(
        "What context should the prompt use?",
        json!({ "context": { "type": "string" } }),
        &["context"],
    );
    let a = ctx
        .input("user_context", "elicitation/create", params)
        .await?;
    Ok(vec![user(text(&format!(
        "Prompt with context: {}",
        answer_text(&a, "context")
    )))])
}
