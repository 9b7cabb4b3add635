//! Every message erlmcp emits validates against the official JSON Schema of
//! the negotiated protocol version (tests/data/schema/<version>/schema.json,
//! copied verbatim from the modelcontextprotocol specification repository).
//! A broad sample of real exchanges over HTTP and stdio, in every version.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};

struct Schema {
    root: Value,
    defs_key: &'static str,
    validators: HashMap<String, jsonschema::Validator>,
    checked: usize,
    violations: Vec<String>,
}

impl Schema {
    /// `version` is a directory of tests/data/schema: a protocol revision,
    /// or `ext-tasks` (the tasks extension's own schema, from
    /// modelcontextprotocol/ext-tasks at e434597, for its messages on
    /// 2026-07-28).
    fn load(version: &str) -> Schema {
        let path = format!(
            "{}/tests/data/schema/{version}/schema.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let root: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let defs_key = if root.get("$defs").is_some() {
            "$defs"
        } else {
            "definitions"
        };
        Schema {
            root,
            defs_key,
            validators: HashMap::new(),
            checked: 0,
            violations: Vec::new(),
        }
    }

    fn has(&self, def: &str) -> bool {
        self.root[self.defs_key].get(def).is_some()
    }

    /// Validates `value` against `#/<defs>/<def>` of the official schema.
    fn check(&mut self, def: &str, value: &Value, context: &str) {
        assert!(self.has(def), "the schema has no definition {def}");
        if !self.validators.contains_key(def) {
            let mut doc = self.root.clone();
            doc["$ref"] = json!(format!("#/{}/{def}", self.defs_key));
            let v = jsonschema::validator_for(&doc).unwrap_or_else(|e| panic!("schema {def}: {e}"));
            self.validators.insert(def.to_owned(), v);
        }
        self.checked += 1;
        let errors: Vec<String> = self.validators[def]
            .iter_errors(value)
            .map(|e| e.to_string())
            .take(3)
            .collect();
        if !errors.is_empty() {
            self.violations.push(format!(
                "{context}: {def}: {} in {value}",
                errors.join("; ")
            ));
        }
    }

    /// Checks one emitted message; `method` is the request it answers.
    fn message(&mut self, msg: &Value, method: Option<&str>) {
        let ctx = method.unwrap_or("notification").to_owned();
        self.check("JSONRPCMessage", msg, &ctx);
        if let Some(result) = msg.get("result") {
            let def = result_def(method.unwrap_or(""));
            let modern = self.has("InputRequiredResult");
            if modern && result.get("resultType") == Some(&json!("input_required")) {
                self.check("InputRequiredResult", result, &ctx);
            } else if result.get("task").is_some() && self.has("CreateTaskResult") {
                self.check("CreateTaskResult", result, &ctx);
            } else {
                self.check(def, result, &ctx);
            }
        } else if msg.get("method").is_some() && msg.get("id").is_some() {
            self.check("ServerRequest", msg, &ctx);
        } else if msg.get("method").is_some() {
            self.check("ServerNotification", msg, &ctx);
        }
    }

    fn assert_clean(&self, label: &str) {
        self.assert_clean_after(label, 20);
    }

    fn assert_clean_after(&self, label: &str, at_least: usize) {
        assert!(
            self.checked > at_least,
            "{label}: too few messages checked ({})",
            self.checked
        );
        assert!(
            self.violations.is_empty(),
            "{label}: {} schema violations:\n{}",
            self.violations.len(),
            self.violations.join("\n")
        );
    }
}

fn result_def(method: &str) -> &'static str {
    match method {
        "initialize" => "InitializeResult",
        "server/discover" => "DiscoverResult",
        "tools/list" => "ListToolsResult",
        "tools/call" => "CallToolResult",
        "resources/list" => "ListResourcesResult",
        "resources/templates/list" => "ListResourceTemplatesResult",
        "resources/read" => "ReadResourceResult",
        "prompts/list" => "ListPromptsResult",
        "prompts/get" => "GetPromptResult",
        "completion/complete" => "CompleteResult",
        "tasks/get" => "GetTaskResult",
        "tasks/list" => "ListTasksResult",
        "tasks/cancel" => "CancelTaskResult",
        "tasks/result" => "GetTaskPayloadResult",
        _ => "EmptyResult",
    }
}

/// The requests of the sample, shared by every version and transport.
fn sample() -> Vec<(&'static str, Value)> {
    let progress = json!({ "progressToken": "p-1" });
    vec![
        ("tools/list", json!({})),
        (
            "tools/call",
            json!({ "name": "test_simple_text", "arguments": {} }),
        ),
        ("tools/call", json!({ "name": "test_image_content" })),
        ("tools/call", json!({ "name": "test_audio_content" })),
        ("tools/call", json!({ "name": "test_embedded_resource" })),
        (
            "tools/call",
            json!({ "name": "test_multiple_content_types" }),
        ),
        ("tools/call", json!({ "name": "test_tool_with_logging" })),
        (
            "tools/call",
            json!({ "name": "test_tool_with_progress", "_meta": progress }),
        ),
        ("tools/call", json!({ "name": "test_error_handling" })),
        (
            "tools/call",
            json!({ "name": "json_schema_2020_12_tool",
            "arguments": { "name": "n", "contactMethod": "email", "email": "e@x" } }),
        ),
        (
            "tools/call",
            json!({ "name": "json_schema_2020_12_tool", "arguments": { "name": 5 } }),
        ),
        ("tools/call", json!({ "name": "no_such_tool" })),
        (
            "tools/call",
            json!({ "name": "create_entities", "arguments": { "entities": [
            { "name": "Ada", "entityType": "person", "observations": ["wrote the first program"] },
            { "name": "Engine", "entityType": "machine", "observations": [] } ] } }),
        ),
        (
            "tools/call",
            json!({ "name": "create_relations", "arguments": { "relations": [
            { "from": "Ada", "to": "Engine", "relationType": "programs" } ] } }),
        ),
        (
            "tools/call",
            json!({ "name": "add_observations", "arguments": { "observations": [
            { "entityName": "Engine", "contents": ["analytical"] } ] } }),
        ),
        (
            "tools/call",
            json!({ "name": "search_nodes", "arguments": { "query": "program" } }),
        ),
        (
            "tools/call",
            json!({ "name": "read_graph", "arguments": {} }),
        ),
        (
            "tools/call",
            json!({ "name": "add_observations", "arguments": { "observations": [
            { "entityName": "Nobody", "contents": ["x"] } ] } }),
        ),
        ("resources/list", json!({})),
        ("resources/templates/list", json!({})),
        ("resources/read", json!({ "uri": "test://static-text" })),
        ("resources/read", json!({ "uri": "test://static-binary" })),
        (
            "resources/read",
            json!({ "uri": "test://template/42/data" }),
        ),
        (
            "resources/read",
            json!({ "uri": "memory://knowledge-graph" }),
        ),
        ("resources/read", json!({ "uri": "memory://entities/Ada" })),
        ("resources/read", json!({ "uri": "test://nothing-here" })),
        ("prompts/list", json!({})),
        ("prompts/get", json!({ "name": "test_simple_prompt" })),
        (
            "prompts/get",
            json!({ "name": "test_prompt_with_arguments", "arguments": { "arg1": "a", "arg2": "b" } }),
        ),
        (
            "prompts/get",
            json!({ "name": "test_prompt_with_embedded_resource", "arguments": { "resourceUri": "test://x" } }),
        ),
        ("prompts/get", json!({ "name": "test_prompt_with_image" })),
        (
            "prompts/get",
            json!({ "name": "test_prompt_with_arguments", "arguments": {} }),
        ),
        (
            "completion/complete",
            json!({ "ref": { "type": "ref/prompt", "name": "test_prompt_with_arguments" },
            "argument": { "name": "arg1", "value": "a" } }),
        ),
        ("tools/list", json!({ "cursor": "not-a-cursor" })),
        ("no/such/method", json!({})),
    ]
}

fn legacy_extras() -> Vec<(&'static str, Value)> {
    vec![
        ("ping", json!({})),
        ("logging/setLevel", json!({ "level": "debug" })),
        (
            "resources/subscribe",
            json!({ "uri": "test://watched-resource" }),
        ),
        (
            "resources/unsubscribe",
            json!({ "uri": "test://watched-resource" }),
        ),
        ("logging/setLevel", json!({ "level": "shouting" })),
    ]
}

/// Posts a tool call and answers the server's requests (elicitation,
/// sampling) on the fly, collecting everything the server sent.
fn call_answering(s: &Session, id: u64, tool: &str, args: Value) -> Vec<Value> {
    let body = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": { "name": tool, "arguments": args } });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(&s.url)
        .header("Content-Type", "application/json");
    for (k, v) in s.headers() {
        req = req.header(k, v);
    }
    let resp = req.send(body.to_string().as_bytes()).unwrap();
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut seen = Vec::new();
    let mut data = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
            continue;
        }
        if !line.is_empty() || data.trim().is_empty() {
            continue;
        }
        let msg: Value = serde_json::from_str(&data).unwrap();
        data.clear();
        seen.push(msg.clone());
        if let (Some(rid), Some(method)) =
            (msg.get("id"), msg.get("method").and_then(Value::as_str))
        {
            let result = match method {
                "elicitation/create" => {
                    json!({ "action": "accept", "content": { "response": "yes", "name": "Ada" } })
                }
                "sampling/createMessage" => json!({ "role": "assistant", "model": "test",
                    "content": { "type": "text", "text": "Paris" } }),
                "roots/list" => json!({ "roots": [{ "uri": "file:///tmp", "name": "tmp" }] }),
                other => panic!("unexpected server request {other}"),
            };
            let r = s.post(&json!({ "jsonrpc": "2.0", "id": rid, "result": result }));
            assert_eq!(r.status, 202);
        }
        if msg.get("id") == Some(&json!(id)) && msg.get("method").is_none() {
            break;
        }
    }
    seen
}

/// The response among messages (the one with an id and no method).
fn response_of(msgs: &[Value]) -> Value {
    msgs.iter()
        .find(|m| m.get("id").is_some() && m.get("method").is_none())
        .cloned()
        .unwrap_or_else(|| panic!("no response in {msgs:?}"))
}

/// A task's life on a 2025-11-25 session, every message checked:
/// creation, get, result, list, cancel (ended and running), the refusals.
fn legacy_task_flow(schema: &mut Schema, request: &mut dyn FnMut(&str, Value) -> Vec<Value>) {
    let mut send = |schema: &mut Schema, method: &str, params: Value| {
        let msgs = request(method, params);
        for m in &msgs {
            schema.message(m, Some(method));
        }
        response_of(&msgs)
    };
    let created = send(
        schema,
        "tools/call",
        json!({ "name": "slow_compute", "arguments": { "seconds": 0 }, "task": { "ttl": 60000 } }),
    );
    let id = created["result"]["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    send(schema, "tasks/get", json!({ "taskId": id }));
    let payload = send(schema, "tasks/result", json!({ "taskId": id }));
    schema.check("CallToolResult", &payload["result"], "tasks/result");
    send(schema, "tasks/list", json!({}));
    let refused = send(schema, "tasks/cancel", json!({ "taskId": id }));
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let running = send(
        schema,
        "tools/call",
        json!({ "name": "slow_compute", "arguments": { "seconds": 600 }, "task": {} }),
    );
    let rid = running["result"]["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = send(schema, "tasks/cancel", json!({ "taskId": rid }));
    assert_eq!(cancelled["result"]["status"], "cancelled");
    send(schema, "tasks/result", json!({ "taskId": rid }));
    send(schema, "tasks/get", json!({ "taskId": "no-such-task" }));
    let forbidden = json!({ "name": "greet", "arguments": { "name": "x" }, "task": {} });
    assert_eq!(
        send(schema, "tools/call", forbidden)["error"]["code"],
        -32601
    );
    let required = json!({ "name": "failing_job", "arguments": {} });
    assert_eq!(
        send(schema, "tools/call", required)["error"]["code"],
        -32601
    );
}

#[test]
fn legacy_http_messages_validate_in_every_version() {
    let server = Server::start(&["--fixture", "conformance"]);
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let mut schema = Schema::load(version);
        let (mut s, init) = Session::open(&server.url(), version);
        assert_eq!(s.version, version);
        for m in &init.messages {
            schema.message(m, Some("initialize"));
        }
        for (method, params) in sample().into_iter().chain(legacy_extras()) {
            let r = s.request(method, params);
            assert!(
                !r.messages.is_empty(),
                "{version} {method}: empty reply {}",
                r.body
            );
            for m in &r.messages {
                schema.message(m, Some(method));
            }
        }
        for (i, (tool, args)) in [
            ("test_elicitation", json!({ "message": "ok?" })),
            ("test_sampling", json!({ "prompt": "capital of France?" })),
            ("test_elicitation_sep1034_defaults", json!({})),
            ("test_input_required_result_multiple_inputs", json!({})),
        ]
        .into_iter()
        .enumerate()
        {
            let seen = call_answering(&s, 1000 + i as u64, tool, args);
            // Elicitation does not exist before 2025-06-18: no request then.
            let min = if version == "2025-03-26" && tool != "test_sampling" {
                1
            } else {
                2
            };
            assert!(seen.len() >= min, "{version} {tool}: got {seen:?}");
            for m in &seen {
                schema.message(m, Some("tools/call"));
            }
        }
        if version == "2025-11-25" {
            let list = s.request("tools/list", json!({}));
            let tools = list.result()["tools"].as_array().unwrap();
            let slow = tools.iter().find(|t| t["name"] == "slow_compute").unwrap();
            assert_eq!(slow["execution"]["taskSupport"], "optional");
            legacy_task_flow(&mut schema, &mut |m, p| s.request(m, p).messages);
        }
        schema.assert_clean(version);
    }
}

#[test]
fn modern_http_messages_validate() {
    let server = Server::start(&["--fixture", "conformance"]);
    let mut schema = Schema::load("2026-07-28");
    let url = server.url();
    let mut id = 0;
    let mut send = |schema: &mut Schema, method: &'static str, params: Value| {
        id += 1;
        let r = modern(&url, id, method, params);
        assert!(!r.messages.is_empty(), "{method}: {}", r.body);
        for m in &r.messages {
            schema.message(m, Some(method));
        }
        r
    };
    send(&mut schema, "server/discover", json!({}));
    for (method, params) in sample() {
        send(&mut schema, method, params);
    }
    let round1 = send(
        &mut schema,
        "tools/call",
        json!({ "name": "test_input_required_result_elicitation" }),
    );
    assert_eq!(round1.result()["resultType"], "input_required");
    send(
        &mut schema,
        "tools/call",
        json!({ "name": "test_input_required_result_elicitation",
        "inputResponses": { "user_name": { "action": "accept", "content": { "name": "Ada" } } } }),
    );
    let state = send(
        &mut schema,
        "tools/call",
        json!({ "name": "test_input_required_result_multi_round" }),
    );
    send(
        &mut schema,
        "tools/call",
        json!({ "name": "test_input_required_result_multi_round",
        "requestState": state.result()["requestState"],
        "inputResponses": { "step1": { "action": "accept", "content": { "name": "Ada" } } } }),
    );
    send(
        &mut schema,
        "prompts/get",
        json!({ "name": "test_input_required_result_prompt" }),
    );
    let mut logged = json!({ "name": "test_logging_tool" });
    logged["_meta"] = json!({ "io.modelcontextprotocol/logLevel": "debug" });
    send(&mut schema, "tools/call", logged);
    schema.assert_clean("2026-07-28");
    modern_tasks_validate(&url);
}

/// The tasks extension on 2026-07-28: every message's envelope against
/// the core schema, every task result against the extension's schema.
fn modern_tasks_validate(url: &str) {
    let mut core = Schema::load("2026-07-28");
    let mut ext = Schema::load("ext-tasks");
    let mut id = 100;
    let mut send =
        |core: &mut Schema, ext: &mut Schema, method: &str, params: Value, def: Option<&str>| {
            id += 1;
            let r = modern_with(url, id, method, params, tasks_caps(), &[]);
            let resp = response_of(&r.messages);
            for m in &r.messages {
                core.check("JSONRPCMessage", m, method);
            }
            match (def, resp.get("result")) {
                (Some(def), Some(result)) => ext.check(def, result, method),
                _ => core.message(&resp, Some(method)),
            }
            resp
        };
    let created = send(
        &mut core,
        &mut ext,
        "tools/call",
        json!({ "name": "slow_compute", "arguments": { "seconds": 600 } }),
        Some("CreateTaskResult"),
    );
    let slow = created["result"]["taskId"].as_str().unwrap().to_owned();
    send(
        &mut core,
        &mut ext,
        "tasks/get",
        json!({ "taskId": slow }),
        Some("GetTaskResult"),
    );
    send(
        &mut core,
        &mut ext,
        "tasks/cancel",
        json!({ "taskId": slow }),
        Some("CancelTaskResult"),
    );
    send(
        &mut core,
        &mut ext,
        "tasks/get",
        json!({ "taskId": slow }),
        Some("GetTaskResult"),
    );
    let asked = send(
        &mut core,
        &mut ext,
        "tools/call",
        json!({ "name": "confirm_delete", "arguments": { "filename": "f" } }),
        Some("CreateTaskResult"),
    );
    let confirm = asked["result"]["taskId"].as_str().unwrap().to_owned();
    let listen = json!({ "jsonrpc": "2.0", "id": "l", "method": "subscriptions/listen",
        "params": { "notifications": { "taskIds": [confirm] }, "_meta": modern_meta(tasks_caps()) } });
    let heard = stream_messages(
        url,
        &[
            ("Accept", ACCEPT_BOTH),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "subscriptions/listen"),
        ],
        &listen,
    );
    // Acknowledged (and watching) before the task moves on.
    let ack = heard
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap();
    core.message(&ack, None);
    let waiting = loop {
        let got = send(
            &mut core,
            &mut ext,
            "tasks/get",
            json!({ "taskId": confirm }),
            Some("GetTaskResult"),
        );
        if got["result"]["status"] == "input_required" {
            break got;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let key = waiting["result"]["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let answer = json!({ key: { "action": "accept", "content": { "confirm": true } } });
    send(
        &mut core,
        &mut ext,
        "tasks/update",
        json!({ "taskId": confirm, "inputResponses": answer }),
        Some("UpdateTaskResult"),
    );
    loop {
        let got = send(
            &mut core,
            &mut ext,
            "tasks/get",
            json!({ "taskId": confirm }),
            Some("GetTaskResult"),
        );
        if got["result"]["status"] == "completed" {
            core.check("CallToolResult", &got["result"]["result"], "inlined result");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    loop {
        let n = heard
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap();
        core.check("JSONRPCMessage", &n, "notifications/tasks");
        ext.check("TaskStatusNotification", &n, "notifications/tasks");
        if n["params"]["status"] == "completed" {
            break;
        }
    }
    let failing = send(
        &mut core,
        &mut ext,
        "tools/call",
        json!({ "name": "protocol_error_job" }),
        Some("CreateTaskResult"),
    );
    let failing = failing["result"]["taskId"].as_str().unwrap().to_owned();
    loop {
        let got = send(
            &mut core,
            &mut ext,
            "tasks/get",
            json!({ "taskId": failing }),
            Some("GetTaskResult"),
        );
        if got["result"]["status"] == "failed" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    send(
        &mut core,
        &mut ext,
        "tasks/get",
        json!({ "taskId": "no-such-task" }),
        None,
    );
    let r = modern(url, 999, "tools/call", json!({ "name": "failing_job" }));
    assert_eq!(r.error_code(), -32021);
    core.message(r.response(), Some("tools/call"));
    core.assert_clean_after("2026-07-28 tasks", 10);
    ext.assert_clean_after("ext-tasks", 8);
}

#[test]
fn stdio_messages_validate() {
    let tmp = tempfile::tempdir().unwrap();
    for version in ["2025-06-18", "2025-11-25"] {
        let mut schema = Schema::load(version);
        let mut c = StdioClient::start(&tmp.path().join("d"), &["--fixture", "conformance"]);
        let init = c.initialize(version);
        schema.message(&init, Some("initialize"));
        for (i, (method, params)) in sample().into_iter().chain(legacy_extras()).enumerate() {
            let start = c.seen.len();
            c.request(100 + i as u64, method, params);
            for m in &c.seen[start..] {
                schema.message(m, Some(method));
            }
        }
        if version == "2025-11-25" {
            // Status notifications come on stdout with everything else.
            let mut next = 500;
            legacy_task_flow(&mut schema, &mut |m, p| {
                next += 1;
                let start = c.seen.len();
                c.request(next, m, p);
                c.seen[start..].to_vec()
            });
            let status = |m: &Value| m["method"] == "notifications/tasks/status";
            assert!(c.seen.iter().any(status), "no task status notification");
        }
        schema.assert_clean(version);
    }
    let mut schema = Schema::load("2026-07-28");
    let mut c = StdioClient::start(&tmp.path().join("d"), &["--fixture", "conformance"]);
    for (i, (method, mut params)) in sample().into_iter().enumerate() {
        params["_meta"] = modern_meta(json!({}));
        let start = c.seen.len();
        c.request(i as u64, method, params);
        for m in &c.seen[start..] {
            schema.message(m, Some(method));
        }
    }
    schema.assert_clean("2026-07-28 stdio");
}
