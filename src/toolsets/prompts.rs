//! The `prompts` toolset: prompts declared in the configuration file, each
//! a template with `{{argument}}` placeholders.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::config::PromptConfig;
use crate::mcp::context::RequestContext;
use crate::mcp::toolset::{CompletionRef, PromptArgument, PromptDef, ToolError, Toolset};

pub struct Prompts {
    prompts: Vec<PromptConfig>,
}

impl Prompts {
    pub fn new(prompts: Vec<PromptConfig>) -> Self {
        Prompts { prompts }
    }
}

/// Replaces each `{{name}}` with its argument; unknown placeholders stay.
pub fn render(template: &str, args: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let key = after[..end].trim();
                match args.get(key).and_then(Value::as_str) {
                    Some(v) => out.push_str(v),
                    None if args.contains_key(key) => {}
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[async_trait]
impl Toolset for Prompts {
    fn name(&self) -> &'static str {
        "prompts"
    }

    fn prompts(&self) -> Vec<PromptDef> {
        self.prompts
            .iter()
            .map(|p| PromptDef {
                name: p.name.clone(),
                title: p.title.clone(),
                description: p.description.clone(),
                arguments: p
                    .arguments
                    .iter()
                    .map(|a| PromptArgument {
                        name: a.name.clone(),
                        description: a.description.clone(),
                        required: a.required,
                    })
                    .collect(),
            })
            .collect()
    }

    async fn get_prompt(
        &self,
        name: &str,
        args: &Map<String, Value>,
        _ctx: &RequestContext,
    ) -> Result<Value, ToolError> {
        let Some(p) = self.prompts.iter().find(|p| p.name == name) else {
            return Err(ToolError::Failed(format!("unknown prompt {name}")));
        };
        let mut result = Map::new();
        if let Some(d) = &p.description {
            result.insert("description".into(), json!(d));
        }
        result.insert(
            "messages".into(),
            json!([{ "role": "user", "content": { "type": "text", "text": render(&p.template, args) } }]),
        );
        Ok(Value::Object(result))
    }

    async fn complete(
        &self,
        reference: &CompletionRef<'_>,
        argument: &str,
        value: &str,
        _context: Option<&Map<String, Value>>,
    ) -> Option<Vec<String>> {
        let CompletionRef::Prompt(name) = reference else {
            return None;
        };
        let p = self.prompts.iter().find(|p| p.name == *name)?;
        let a = p.arguments.iter().find(|a| a.name == argument)?;
        Some(
            a.values
                .iter()
                .filter(|v| v.starts_with(value))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_placeholders() {
        let mut a = Map::new();
        a.insert("lang".into(), json!("Rust"));
        a.insert("empty".into(), json!(""));
        assert_eq!(render("Review {{ lang }} code", &a), "Review Rust code");
        assert_eq!(
            render("{{missing}} and {{empty}}.", &a),
            "{{missing}} and ."
        );
        assert_eq!(render("unclosed {{lang", &a), "unclosed {{lang");
    }
}
