//! The toolset contract: what a family of tools, resources and prompts
//! implements ([`Toolset`]), the definitions it lists, and how a call ends
//! ([`ToolOutput`], [`ToolError`]). Implementations live in
//! `crate::toolsets`; the dispatcher only ever sees this trait.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::context::{InputRequired, RequestContext};
use super::error::McpError;
use super::version::ProtocolVersion;

/// Whether a tool may run as a task (`execution.taskSupport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskSupport {
    /// Always answered directly.
    #[default]
    Forbidden,
    /// As a task when the client can take one and the call runs long.
    Optional,
    /// Only as a task: a client that cannot take tasks is refused.
    Required,
}

impl TaskSupport {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskSupport::Forbidden => "forbidden",
            TaskSupport::Optional => "optional",
            TaskSupport::Required => "required",
        }
    }
}

/// A tool as listed by `tools/list`.
#[derive(Clone, Debug, Default)]
pub struct ToolDef {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
    pub annotations: Option<Value>,
    pub icons: Option<Value>,
    pub task_support: TaskSupport,
    /// Running it again after an interruption does no harm (it reads, or
    /// its writes are idempotent): a task of it that a crash cut short is
    /// run once more instead of failing. Not on the wire.
    pub rerun_safe: bool,
}

impl ToolDef {
    pub fn new(name: &str, description: &str, input_schema: Value) -> Self {
        ToolDef {
            name: name.into(),
            description: Some(description.into()),
            input_schema,
            ..Default::default()
        }
    }

    pub fn title(mut self, title: &str) -> Self {
        self.title = Some(title.into());
        self
    }

    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = Some(schema);
        self
    }

    pub fn annotations(mut self, annotations: Value) -> Self {
        self.annotations = Some(annotations);
        self
    }

    pub fn task_support(mut self, support: TaskSupport) -> Self {
        self.task_support = support;
        self
    }

    /// Marks the tool safe to run again after a crash (see [`ToolDef::rerun_safe`]).
    pub fn rerun_safe(mut self) -> Self {
        self.rerun_safe = true;
        self
    }

    /// The JSON a client of `version` sees; fields newer than its revision
    /// are left out.
    pub fn to_json(&self, version: ProtocolVersion) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if version.has_titles()
            && let Some(t) = &self.title
        {
            m.insert("title".into(), json!(t));
        }
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        m.insert("inputSchema".into(), self.input_schema.clone());
        if version.has_titles()
            && let Some(o) = &self.output_schema
        {
            m.insert("outputSchema".into(), o.clone());
        }
        if let Some(a) = &self.annotations {
            let mut a = a.clone();
            if !version.has_titles()
                && let Some(obj) = a.as_object_mut()
            {
                obj.remove("title");
            }
            m.insert("annotations".into(), a);
        }
        if version.has_icons()
            && let Some(i) = &self.icons
        {
            m.insert("icons".into(), i.clone());
        }
        // 2026-07-28 has no per-tool declaration: the server decides.
        if version.has_experimental_tasks() && self.task_support != TaskSupport::Forbidden {
            m.insert(
                "execution".into(),
                json!({ "taskSupport": self.task_support.as_str() }),
            );
        }
        Value::Object(m)
    }
}

/// What a tool returns when it ran (successfully or not).
#[derive(Clone, Debug, Default)]
pub struct ToolOutput {
    pub content: Vec<Value>,
    pub structured: Option<Value>,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn text(text: impl Into<String>) -> Self {
        ToolOutput {
            content: vec![json!({ "type": "text", "text": text.into() })],
            ..Default::default()
        }
    }

    pub fn content(content: Vec<Value>) -> Self {
        ToolOutput {
            content,
            ..Default::default()
        }
    }

    /// Structured output, with its JSON text as the content for clients
    /// that do not read `structuredContent`.
    pub fn structured(value: Value) -> Self {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        ToolOutput {
            content: vec![json!({ "type": "text", "text": text })],
            structured: Some(value),
            is_error: false,
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        ToolOutput {
            is_error: true,
            ..Self::text(text)
        }
    }

    pub fn to_json(&self, version: ProtocolVersion) -> Value {
        let mut m = Map::new();
        m.insert("content".into(), Value::Array(self.content.clone()));
        if version.has_titles()
            && let Some(s) = &self.structured
        {
            m.insert("structuredContent".into(), s.clone());
        }
        if self.is_error {
            m.insert("isError".into(), Value::Bool(true));
        }
        Value::Object(m)
    }
}

/// Why a tool (or prompt, or resource read) did not produce its result.
#[derive(Debug)]
pub enum ToolError {
    /// The tool ran and failed: reported as an `isError: true` result.
    Failed(String),
    /// The client must supply input first (MRTR, 2026-07-28).
    InputRequired(InputRequired),
    /// A protocol failure: reported as a JSON-RPC error.
    Protocol(McpError),
    /// The request was cancelled.
    Cancelled,
}

impl ToolError {
    pub fn failed(msg: impl std::fmt::Display) -> Self {
        ToolError::Failed(msg.to_string())
    }
}

impl From<McpError> for ToolError {
    fn from(e: McpError) -> Self {
        ToolError::Protocol(e)
    }
}

impl From<crate::store::StoreError> for ToolError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            // Not the tool's failure: the write cannot be taken here (a
            // standby) or was not replicated. A JSON-RPC error the client
            // may retry, not a result the model should read.
            StoreError::ReadOnly(m) => ToolError::Protocol(McpError::not_writable(m)),
            StoreError::Refused(m) => ToolError::Protocol(McpError::not_replicated(m)),
            e => ToolError::Failed(format!("storage error: {e}")),
        }
    }
}

pub type ToolResult = Result<ToolOutput, ToolError>;

/// A concrete resource as listed by `resources/list`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDef {
    pub uri: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl ResourceDef {
    pub fn to_json(&self, version: ProtocolVersion) -> Value {
        for_version(self, version)
    }
}

/// A parameterized resource as listed by `resources/templates/list`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTemplateDef {
    pub uri_template: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl ResourceTemplateDef {
    pub fn to_json(&self, version: ProtocolVersion) -> Value {
        for_version(self, version)
    }
}

/// A prompt as listed by `prompts/list`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PromptDef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<PromptArgument>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PromptArgument {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
}

impl PromptDef {
    pub fn to_json(&self, version: ProtocolVersion) -> Value {
        for_version(self, version)
    }
}

/// A definition's JSON for a client of `version`: `title` arrived in
/// 2025-06-18 and is left out before.
fn for_version(def: &impl Serialize, version: ProtocolVersion) -> Value {
    let mut v = serde_json::to_value(def).unwrap_or(Value::Null);
    if !version.has_titles()
        && let Some(o) = v.as_object_mut()
    {
        o.remove("title");
    }
    v
}

/// A page of a list and the cursor of the next one.
#[derive(Debug, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// What `completion/complete` asks about.
#[derive(Debug)]
pub enum CompletionRef<'a> {
    Prompt(&'a str),
    Resource(&'a str),
}

/// A toolset: one family of tools, resources and prompts. Every method has
/// a default that offers nothing, so a toolset implements only what it has.
#[async_trait]
pub trait Toolset: Send + Sync {
    /// The name used in configuration and logs.
    fn name(&self) -> &'static str;

    fn tools(&self) -> Vec<ToolDef> {
        Vec::new()
    }

    /// Runs a tool this toolset listed; `args` already passed its inputSchema.
    async fn call_tool(&self, name: &str, _args: Value, _ctx: &RequestContext) -> ToolResult {
        Err(ToolError::Protocol(McpError::invalid_params(format!(
            "unknown tool: {name}"
        ))))
    }

    /// One page of this toolset's concrete resources.
    async fn list_resources(
        &self,
        _cursor: Option<&str>,
        _limit: usize,
    ) -> Result<Page<ResourceDef>, McpError> {
        Ok(Page::default())
    }

    fn resource_templates(&self) -> Vec<ResourceTemplateDef> {
        Vec::new()
    }

    /// True if `uri` belongs to this toolset (it answers reads for it).
    fn owns_uri(&self, _uri: &str) -> bool {
        false
    }

    /// The `contents` array of `resources/read`; `Ok(None)` if no such resource.
    async fn read_resource(
        &self,
        _uri: &str,
        _ctx: &RequestContext,
    ) -> Result<Option<Vec<Value>>, ToolError> {
        Ok(None)
    }

    fn prompts(&self) -> Vec<PromptDef> {
        Vec::new()
    }

    /// The result of `prompts/get` (description and messages).
    async fn get_prompt(
        &self,
        name: &str,
        _args: &Map<String, Value>,
        _ctx: &RequestContext,
    ) -> Result<Value, ToolError> {
        Err(ToolError::Protocol(McpError::invalid_params(format!(
            "unknown prompt: {name}"
        ))))
    }

    /// Suggestions for an argument; `None` if this toolset has nothing to say.
    async fn complete(
        &self,
        _reference: &CompletionRef<'_>,
        _argument: &str,
        _value: &str,
        _context: Option<&Map<String, Value>>,
    ) -> Option<Vec<String>> {
        None
    }
}
