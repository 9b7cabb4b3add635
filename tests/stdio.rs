//! The stdio transport against a real `erlmcp stdio` child: only JSON on
//! stdout, bad lines answered and survived, cancellation, both eras.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;

#[test]
fn bad_lines_are_answered_and_the_connection_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = StdioClient::start(&tmp.path().join("d"), &[]);
    c.send_raw(b"{oops");
    let e = c.recv();
    assert_eq!(
        (e["error"]["code"].clone(), e["id"].clone()),
        (json!(-32700), Value::Null)
    );
    c.send_raw(b"\xff\xfe\xfd");
    assert_eq!(c.recv()["error"]["code"], -32700, "invalid UTF-8");
    c.send_raw(br#"{"jsonrpc":"2.0","id":1}"#);
    assert_eq!(c.recv()["error"]["code"], -32600);
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"ping","params":{{"a":{}1{}}}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    c.send_raw(deep.as_bytes());
    assert_eq!(c.recv()["error"]["code"], -32700);
    let r = c.request(3, "tools/list", json!({}));
    assert_eq!(
        r["error"]["code"], -32600,
        "requests before initialize are refused"
    );
    let r = c.request(4, "ping", json!({}));
    assert_eq!(r["result"], json!({}), "ping is allowed before initialize");
    c.initialize("2025-11-25");
    assert_eq!(
        c.request(5, "nope/nope", json!({}))["error"]["code"],
        -32601
    );
    assert_eq!(
        c.request(6, "tools/call", json!({ "name": 1 }))["error"]["code"],
        -32602
    );
    assert!(c.request(7, "tools/list", json!({}))["result"]["tools"].is_array());
    assert_eq!(
        c.request(8, "initialize", json!({ "protocolVersion": "2025-11-25" }))["error"]["code"],
        -32600
    );
}

#[test]
fn oversize_lines_are_refused_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = StdioClient::start(&tmp.path().join("d"), &[]);
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"p":"{}"}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    c.send_raw(huge.as_bytes());
    assert_eq!(c.recv()["error"]["code"], -32600);
    assert_eq!(c.request(2, "ping", json!({}))["result"], json!({}));
}

#[test]
fn notifications_cancelled_stops_the_handler() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = StdioClient::start(&tmp.path().join("d"), &["--fixture", "conformance"]);
    c.initialize("2025-11-25");
    c.send(&json!({ "jsonrpc": "2.0", "id": 10, "method": "tools/call",
        "params": { "name": "test_elicitation", "arguments": { "message": "?" } } }));
    let ask = c.recv();
    assert_eq!(ask["method"], "elicitation/create");
    c.send(&json!({ "jsonrpc": "2.0", "method": "notifications/cancelled", "params": { "requestId": 10 } }));
    // The next answer must be for the next request: request 10 got none.
    let r = c.request(11, "ping", json!({}));
    assert_eq!(r["id"], 11);
    assert!(
        !c.seen
            .iter()
            .any(|m| m.get("id") == Some(&json!(10)) && m.get("method").is_none())
    );
}

#[test]
fn server_requests_round_trip_over_stdio() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = StdioClient::start(&tmp.path().join("d"), &["--fixture", "conformance"]);
    c.initialize("2025-11-25");
    c.send(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "test_sampling", "arguments": { "prompt": "capital?" } } }));
    let ask = c.recv();
    assert_eq!(ask["method"], "sampling/createMessage");
    c.send(&json!({ "jsonrpc": "2.0", "id": ask["id"], "result": {
        "role": "assistant", "model": "m", "content": { "type": "text", "text": "Paris" } } }));
    let r = c.until_response(&json!(1));
    assert_eq!(r["result"]["content"][0]["text"], "LLM response: Paris");
}

#[test]
fn modern_requests_work_without_initialize() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = StdioClient::start(&tmp.path().join("d"), &[]);
    let d = c.request(
        1,
        "server/discover",
        json!({ "_meta": modern_meta(json!({})) }),
    );
    assert!(
        d["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    assert_eq!(d["result"]["resultType"], "complete");
    let r = c.request(
        2,
        "tools/list",
        json!({ "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } }),
    );
    assert_eq!(r["error"]["code"], -32602, "clientCapabilities is required");
}

#[test]
fn end_of_input_exits_cleanly_and_data_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let mut c = StdioClient::start(&data, &[]);
    c.initialize("2025-11-25");
    c.request(
        1,
        "tools/call",
        json!({ "name": "create_entities", "arguments": { "entities": [
        { "name": "Stdio", "entityType": "t", "observations": [] } ] } }),
    );
    let mut child = std::mem::replace(
        &mut c.child,
        std::process::Command::new("true").spawn().unwrap(),
    );
    drop(c);
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status, Some(0));
    let mut again = StdioClient::start(&data, &[]);
    again.initialize("2025-11-25");
    let r = again.request(
        1,
        "tools/call",
        json!({ "name": "open_nodes", "arguments": { "names": ["Stdio"] } }),
    );
    assert_eq!(
        r["result"]["structuredContent"]["entities"][0]["name"],
        "Stdio"
    );
}

fn wait_with_timeout(child: &mut std::process::Child, d: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + d;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn a_request_right_behind_initialize_waits_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = StdioClient::start(&tmp.path().join("d"), &[]);
    c.send(&json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "1" } } }));
    c.send(&json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }));
    let r = c.until_response(&json!(2));
    assert!(r["result"]["tools"].is_array(), "{r}");
}

#[test]
fn a_stdio_client_and_the_daemon_share_a_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let server = Server::start_in(&data, &[]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    s.call(
        "create_entities",
        json!({ "entities": [{ "name": "from-http", "entityType": "t", "observations": [] }] }),
    );
    let mut c = StdioClient::start(&data, &[]);
    c.initialize("2025-11-25");
    let r = c.request(
        1,
        "tools/call",
        json!({ "name": "create_entities", "arguments": { "entities": [
        { "name": "from-stdio", "entityType": "t", "observations": [] } ] } }),
    );
    assert!(r["result"].is_object(), "{r}");
    let g = s.call("read_graph", json!({}));
    let mut names: Vec<&str> = g.result()["structuredContent"]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["from-http", "from-stdio"]);
}
