//! Shared helpers of the integration tests: a real `erlmcp` child process
//! on a free loopback port with its own data directory, and small HTTP and
//! stdio clients that keep every message the server emits.
#![allow(dead_code)]

pub mod backup;
pub mod next;
pub mod pair;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_erlmcp");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An `erlmcp serve` child. Killed (SIGKILL) on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data: PathBuf,
    pub args: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Server::start_env(extra, &[])
    }

    /// Like [`Server::start`], with environment variables (config overrides).
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let mut s = Server::launch(&data, extra, env);
        s._tmp = Some(tmp);
        s
    }

    pub fn start_in(data: &Path, extra: &[&str]) -> Server {
        Server::launch(data, extra, &[])
    }

    /// Starts on a free port; another test may take that port between the
    /// probe and erlmcp's bind, so a failed bind (exit 69) retries.
    fn launch(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..5 {
            let port = free_port();
            let child = spawn_serve(data, port, &args, env);
            let mut s = Server {
                child,
                port,
                data: data.to_owned(),
                args: args.clone(),
                _tmp: None,
            };
            if s.wait_ready() {
                return s;
            }
        }
        panic!("erlmcp could not start on a free port five times");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Waits until the server listens: true, or false if it exited because
    /// its port was taken (exit 69). Panics on any other failure.
    pub fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                assert_eq!(
                    status.code(),
                    Some(69),
                    "erlmcp exited at startup: {status}"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("erlmcp did not listen on {} within 60 s", self.port);
    }

    /// SIGKILL, then start again on the same port and data directory.
    pub fn crash_and_restart(&mut self) {
        self.crash();
        self.restart();
    }

    /// SIGKILL; the data directory stays as the crash left it.
    pub fn crash(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.child = spawn_serve(&self.data, self.port, &self.args, &[]);
        assert!(
            self.wait_ready(),
            "port {} was taken during the restart",
            self.port
        );
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn spawn_serve(data: &Path, port: u16, extra: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        // Tests run in parallel: each ops listener takes any free port.
        .arg("--ops-listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn erlmcp serve")
}

/// One HTTP response, with the JSON-RPC messages it carried (the JSON body,
/// or every SSE `data:` event).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub messages: Vec<Value>,
    pub event_ids: Vec<String>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response message (the one with an id and result or error).
    pub fn response(&self) -> &Value {
        self.messages
            .iter()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no response in {self:?}"))
    }

    pub fn result(&self) -> &Value {
        let r = self.response();
        r.get("result")
            .unwrap_or_else(|| panic!("error instead of result: {r}"))
    }

    /// The body as JSON (ops endpoints).
    pub fn result_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn error_code(&self) -> i64 {
        self.response()["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error in {}", self.response()))
    }
}

/// Parses an SSE body into (event ids, JSON messages).
pub fn parse_sse(body: &str) -> (Vec<String>, Vec<Value>) {
    let mut ids = Vec::new();
    let mut msgs = Vec::new();
    for block in body.split("\n\n") {
        let mut data = String::new();
        for line in block.lines() {
            if let Some(id) = line.strip_prefix("id: ") {
                ids.push(id.to_owned());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d);
            }
        }
        if !data.trim().is_empty() {
            msgs.push(
                serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("bad SSE data {data:?}: {e}")),
            );
        }
    }
    (ids, msgs)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends raw bytes with the given headers and reads the whole reply.
pub fn post_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut req = agent().post(url);
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(*k, *v);
    }
    if !has_ct {
        req = req.header("Content-Type", "application/json");
    }
    let resp = req.send(body).expect("POST");
    into_reply(resp)
}

pub fn get_raw(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    into_reply(req.call().expect("GET"))
}

pub fn delete_raw(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = agent().delete(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    into_reply(req.call().expect("DELETE"))
}

fn into_reply(resp: ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let is_sse = headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
    let mut body = String::new();
    resp.into_body()
        .into_reader()
        .read_to_string(&mut body)
        .unwrap();
    let (event_ids, messages) = if is_sse {
        parse_sse(&body)
    } else if body.trim().is_empty() {
        (vec![], vec![])
    } else {
        (
            vec![],
            serde_json::from_str(&body)
                .map(|v| vec![v])
                .unwrap_or_default(),
        )
    };
    Reply {
        status,
        headers,
        body,
        messages,
        event_ids,
    }
}

/// A legacy (session) client over HTTP.
pub struct Session {
    pub url: String,
    pub id: String,
    pub version: String,
    next: u64,
}

pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

impl Session {
    pub fn open(url: &str, version: &str) -> (Session, Reply) {
        let caps = json!({ "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } });
        let body = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": caps,
            "clientInfo": { "name": "erlmcp-tests", "version": "1" } } });
        let r = post_raw(url, &[("Accept", ACCEPT_BOTH)], body.to_string().as_bytes());
        assert_eq!(r.status, 200, "initialize: {}", r.body);
        let id = r.header("mcp-session-id").expect("session id").to_owned();
        let negotiated = r.result()["protocolVersion"].as_str().unwrap().to_owned();
        let s = Session {
            url: url.to_owned(),
            id,
            version: negotiated,
            next: 1,
        };
        let n = s.post(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        assert_eq!(n.status, 202);
        (s, r)
    }

    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("Accept", ACCEPT_BOTH),
            ("Mcp-Session-Id", &self.id),
            ("MCP-Protocol-Version", &self.version),
        ]
    }

    pub fn post(&self, msg: &Value) -> Reply {
        post_raw(&self.url, &self.headers(), msg.to_string().as_bytes())
    }

    pub fn request(&mut self, method: &str, params: Value) -> Reply {
        self.next += 1;
        self.post(&json!({ "jsonrpc": "2.0", "id": self.next, "method": method, "params": params }))
    }

    /// The HTTP status of a `ping` on this session.
    pub fn request_raw_ping(&self) -> u16 {
        self.post(&json!({ "jsonrpc": "2.0", "id": "ping", "method": "ping" }))
            .status
    }

    pub fn call(&mut self, tool: &str, args: Value) -> Reply {
        self.request("tools/call", json!({ "name": tool, "arguments": args }))
    }
}

impl Session {
    /// Posts a request and answers the server's requests as they arrive on
    /// its SSE stream (`answer(method, params)` gives each result), until
    /// the response to `id`. Returns everything the server sent.
    pub fn request_answering(
        &self,
        id: u64,
        method: &str,
        params: Value,
        answer: impl Fn(&str, &Value) -> Value,
    ) -> Vec<Value> {
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut req = agent()
            .post(&self.url)
            .header("Content-Type", "application/json");
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        let resp = req.send(body.to_string().as_bytes()).expect("POST");
        let reader = BufReader::new(resp.into_body().into_reader());
        let mut seen = Vec::new();
        let mut data = String::new();
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
                continue;
            }
            if !line.is_empty() || data.trim().is_empty() {
                continue;
            }
            let msg: Value = serde_json::from_str(&data).unwrap();
            data.clear();
            seen.push(msg.clone());
            if let (Some(rid), Some(m)) = (msg.get("id"), msg.get("method").and_then(Value::as_str))
            {
                let result = answer(m, &msg["params"]);
                let r = self.post(&json!({ "jsonrpc": "2.0", "id": rid, "result": result }));
                assert_eq!(r.status, 202, "answering {m}: {}", r.body);
            }
            if msg.get("id") == Some(&json!(id)) && msg.get("method").is_none() {
                break;
            }
        }
        seen
    }
}

/// Posts `body` and delivers each message of the SSE reply as it arrives,
/// from a thread, until the stream ends (for long-lived streams such as
/// `subscriptions/listen`).
pub fn stream_messages(
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut req = agent().post(url).header("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.to_string();
    std::thread::spawn(move || {
        let Ok(resp) = req.send(body.as_bytes()) else {
            return;
        };
        let sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut reader = BufReader::new(resp.into_body().into_reader());
        if !sse {
            let mut text = String::new();
            let _ = reader.read_to_string(&mut text);
            if let Ok(msg) = serde_json::from_str(&text) {
                let _ = tx.send(msg);
            }
            return;
        }
        let mut data = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            } else if line.is_empty() && !data.trim().is_empty() {
                let msg = serde_json::from_str(&data).unwrap();
                data.clear();
                if tx.send(msg).is_err() {
                    return;
                }
            }
        }
        if !data.trim().is_empty() {
            let _ = tx.send(serde_json::from_str(&data).unwrap());
        }
    });
    rx
}

/// Modern (2026-07-28) request metadata.
pub fn modern_meta(caps: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": { "name": "erlmcp-tests", "version": "1" },
        "io.modelcontextprotocol/clientCapabilities": caps,
    })
}

/// Sends a modern request with the standard headers filled in from the body.
pub fn modern(url: &str, id: u64, method: &str, params: Value) -> Reply {
    let caps = json!({ "sampling": {}, "elicitation": {}, "roots": {} });
    modern_with(url, id, method, params, caps, &[])
}

/// Client capabilities of a modern client that takes tasks.
pub fn tasks_caps() -> Value {
    json!({ "elicitation": {}, "extensions": { "io.modelcontextprotocol/tasks": {} } })
}

/// A modern request with these client capabilities and extra headers.
pub fn modern_with(
    url: &str,
    id: u64,
    method: &str,
    mut params: Value,
    caps: Value,
    extra: &[(&str, &str)],
) -> Reply {
    params["_meta"] = modern_meta(caps);
    // Mcp-Name mirrors the name, uri or task id the method carries.
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .or_else(|| params.get("taskId"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
    let mut h = vec![
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    if let Some(n) = &name {
        h.push(("Mcp-Name", n));
    }
    h.extend_from_slice(extra);
    post_raw(url, &h, body.to_string().as_bytes())
}

/// An `erlmcp stdio` child speaking newline-delimited JSON-RPC.
pub struct StdioClient {
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub seen: Vec<Value>,
}

impl StdioClient {
    pub fn start(data: &Path, extra: &[&str]) -> StdioClient {
        let mut child = Command::new(BIN)
            .arg("stdio")
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn erlmcp stdio");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        StdioClient {
            child,
            stdin,
            stdout,
            seen: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    pub fn send(&mut self, msg: &Value) {
        self.send_raw(msg.to_string().as_bytes());
    }

    /// Reads one line; every line must be JSON.
    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "stdout closed");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carried a non-JSON line {line:?}: {e}"));
        self.seen.push(v.clone());
        v
    }

    /// Reads until the response to `id`, keeping what came before.
    pub fn until_response(&mut self, id: &Value) -> Value {
        loop {
            let m = self.recv();
            if m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some()) {
                return m;
            }
        }
    }

    pub fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        self.until_response(&json!(id))
    }

    pub fn initialize(&mut self, version: &str) -> Value {
        let r = self.request(
            0,
            "initialize",
            json!({
            "protocolVersion": version,
            "capabilities": { "sampling": {}, "elicitation": {}, "roots": {} },
            "clientInfo": { "name": "erlmcp-tests", "version": "1" } }),
        );
        self.send(&json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        r
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays systemd's part: a NOTIFY_SOCKET that records every datagram.
pub struct Notify {
    pub path: PathBuf,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    _dir: tempfile::TempDir,
}

impl Notify {
    pub fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                g.lock().unwrap().push((Instant::now(), msg));
            }
        });
        Notify {
            path,
            got,
            _dir: dir,
        }
    }

    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a datagram contains `needle`; returns when it arrived.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((t, _)) = self
                .messages()
                .into_iter()
                .find(|(_, m)| m.contains(needle))
            {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}; got {:?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.messages()
            .iter()
            .filter(|(_, m)| m.contains(needle))
            .count()
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

/// Waits for a child to exit and returns its code.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `erlmcp serve` with an ops listener and extra environment; the caller
/// owns the child.
pub fn spawn_daemon(
    data: &Path,
    mcp: u16,
    ops: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{mcp}"))
        .arg("--ops-listen")
        .arg(format!("127.0.0.1:{ops}"))
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn erlmcp serve")
}

pub fn ops_get(port: u16, path: &str) -> Reply {
    get_raw(&format!("http://127.0.0.1:{port}{path}"), &[])
}

pub fn ops_post(port: u16, path: &str) -> Reply {
    post_raw(&format!("http://127.0.0.1:{port}{path}"), &[], b"{}")
}
