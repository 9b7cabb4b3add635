//! Helpers of the replication tests: two real `erlmcp serve` processes on
//! loopback, each the other's peer, a shared secret, an MCP writer that
//! records what was acknowledged, and table hashes to compare databases.

use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, free_port};

pub struct Node {
    /// The erlmcp binary it runs (this build by default).
    pub bin: PathBuf,
    /// More environment for its process (test hooks).
    pub env: Vec<(String, String)>,
    pub name: String,
    pub dir: PathBuf,
    pub mcp: u16,
    pub ops: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

/// A directory for a test's nodes; kept (its path printed) when the test
/// fails, so the nodes' logs can be read.
pub struct TestDir(pub Option<tempfile::TempDir>);

impl TestDir {
    pub fn new() -> TestDir {
        TestDir(Some(tempfile::tempdir().unwrap()))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.0.take()
        {
            eprintln!("the nodes' files are kept in {}", d.keep().display());
        }
    }
}

/// Two nodes that name each other as peer; `a` starts as the primary.
/// `extra` is added to both configurations' `[replication]` table.
pub fn pair(root: &Path, extra: &str) -> (Node, Node) {
    let secret = root.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let make = |name: &str, mcp: u16, ops: u16, peer: u16, role: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = root.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "node_name = \"{name}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{mcp}\"\n\
                 [ops]\nlisten = \"127.0.0.1:{ops}\"\n[replication]\nenabled = true\n\
                 peer = \"127.0.0.1:{peer}\"\ninitial_role = \"{role}\"\nsecret_file = \"{}\"\n\
                 peer_check_ms = 200\n{extra}\n",
                dir.display(),
                secret.display()
            ),
        )
        .unwrap();
        Node {
            bin: PathBuf::from(BIN),
            env: Vec::new(),
            name: name.into(),
            log: root.join(format!("{name}.log")),
            dir,
            mcp,
            ops,
            config,
            child: None,
        }
    };
    (
        make("a", ports[0], ports[1], ports[3], "primary"),
        make("b", ports[2], ports[3], ports[1], "standby"),
    )
}

impl Node {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("CI_ERLMCP_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn erlmcp serve");
        self.child = Some(child);
        wait_for(
            &format!("{} to answer", self.name),
            Duration::from_secs(20),
            || self.status().is_some(),
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.mcp)
    }

    pub fn db(&self) -> PathBuf {
        self.dir.join("erlmcp.db")
    }

    /// `/status`, or `None` while nothing answers.
    pub fn status(&self) -> Option<Value> {
        let r = agent()
            .get(&format!("http://127.0.0.1:{}/status", self.ops))
            .call()
            .ok()?;
        serde_json::from_str(&r.into_body().read_to_string().ok()?).ok()
    }

    pub fn replication(&self) -> Value {
        self.status()
            .map(|s| s["replication"].clone())
            .unwrap_or(Value::Null)
    }

    /// `erlmcp role ROLE` through this node's ops listener; the exit code.
    pub fn role(&self, role: &str, force: bool) -> (i32, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(["role", role, "--ops", &format!("127.0.0.1:{}", self.ops)]);
        if force {
            cmd.arg("--force");
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    pub fn metric(&self, name: &str) -> f64 {
        let Ok(r) = agent()
            .get(&format!("http://127.0.0.1:{}/metrics", self.ops))
            .call()
        else {
            return f64::NAN;
        };
        let text = r.into_body().read_to_string().unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `standby` follows `primary` with nothing missing.
pub fn wait_in_sync(primary: &Node, standby: &Node, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (p, s) = (primary.replication(), standby.replication());
        if p["role"] == "primary"
            && s["role"] == "standby"
            && s["in_sync"] == true
            && p["standby"]["acked_seq"].as_u64().is_some()
            && p["standby"]["acked_seq"] == p["last_seq"]
            && s["last_seq"] == p["last_seq"]
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {} to follow {} in sync; {}: {p}; {}: {s}",
            standby.name,
            primary.name,
            primary.name,
            standby.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both databases hold the same rows, table by table, once the last
/// writes (audit rows are batched: they trail the answers by up to 20 ms)
/// have reached the standby.
pub fn assert_same_tables(primary: &Node, standby: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        wait_in_sync(primary, standby, Duration::from_secs(20));
        let (p, s) = (table_hashes(&primary.db()), table_hashes(&standby.db()));
        if p == s {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the databases differ:\n{p:?}\n{s:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a write came to.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Acked,
    /// An error that says nothing was written (a standby, a refusal).
    Refused,
    /// No answer, or one that cannot say (a dead connection, not replicated).
    Unknown,
    /// The session is unknown to the server.
    NoSession,
}

/// An MCP client of the legacy protocol, one session, any node.
pub struct Writer {
    pub session: Option<String>,
    agent: ureq::Agent,
    next: u64,
}

impl Writer {
    pub fn new() -> Writer {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Writer {
            session: None,
            agent,
            next: 1,
        }
    }

    fn post(&self, url: &str, body: &Value) -> Option<(u16, Option<String>, Value)> {
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2025-11-25");
        if let Some(s) = &self.session {
            req = req.header("Mcp-Session-Id", s);
        }
        let r = req.send(body.to_string().as_bytes()).ok()?;
        let status = r.status().as_u16();
        let sid = r
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r.into_body().read_to_string().ok()?;
        let json = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .find(|m| m.get("id").is_some())
            .or_else(|| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        Some((status, sid, json))
    }

    /// Opens a session on `url`; false when the node did not take it.
    pub fn open(&mut self, url: &str) -> bool {
        self.session = None;
        let init = json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": { "name": "nemesis", "version": "1" } } });
        let Some((200, Some(sid), reply)) = self.post(url, &init) else {
            return false;
        };
        if reply.get("result").is_none() {
            return false;
        }
        self.session = Some(sid);
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        matches!(self.post(url, &note), Some((202, _, _)))
    }

    /// True when `open_nodes` finds entity `name` (a read).
    pub fn open_nodes(&mut self, url: &str, name: &str) -> bool {
        self.next += 1;
        let call = json!({ "jsonrpc": "2.0", "id": self.next, "method": "tools/call", "params": {
            "name": "open_nodes", "arguments": { "names": [name] } } });
        match self.post(url, &call) {
            Some((200, _, m)) => m["result"]["structuredContent"]["entities"]
                .as_array()
                .is_some_and(|e| !e.is_empty()),
            _ => false,
        }
    }

    /// Creates entity `name` with one observation.
    pub fn create(&mut self, url: &str, name: &str) -> Outcome {
        self.next += 1;
        let call = json!({ "jsonrpc": "2.0", "id": self.next, "method": "tools/call", "params": {
            "name": "create_entities", "arguments": { "entities": [
                { "name": name, "entityType": "probe", "observations": [format!("written as {name}")] }] } } });
        match self.post(url, &call) {
            None => Outcome::Unknown,
            Some((404, _, _)) => Outcome::NoSession,
            Some((503, _, _)) => Outcome::Refused,
            Some((200, _, m)) if m["result"]["isError"] != true && m.get("result").is_some() => {
                Outcome::Acked
            }
            Some((_, _, m)) if m["error"]["code"] == -32060 => {
                if std::env::var_os("CI_ERLMCP_TRACE_WRITES").is_some() {
                    eprintln!("refused: {m}");
                }
                Outcome::Refused
            }
            Some(_) => Outcome::Unknown,
        }
    }
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

/// The names of the memory entities in `db`.
pub fn entity_names(db: &Path) -> std::collections::HashSet<String> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = c.prepare("SELECT name FROM memory_entities").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// A SHA-256 of each table's rows in a total order; the full-text index by
/// what it finds (its storage differs with how changes were batched).
/// Left out: `schema_downs` (each node records when it ran its own
/// migrations) and `repl_log` (each node prunes its own; the hash chain,
/// checked at every apply, already says the entries both hold are equal).
pub fn table_hashes(db: &Path) -> BTreeMap<String, String> {
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'memory_search_%' AND name NOT IN ('schema_downs', 'repl_log')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for t in tables {
        let sql = if t == "memory_search" {
            "SELECT rowid, entity_id, text FROM memory_search ORDER BY rowid".to_owned()
        } else {
            let n: i64 = c
                .query_row(
                    &format!("SELECT count(*) FROM pragma_table_info('{t}')"),
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
            format!("SELECT * FROM \"{t}\" ORDER BY {}", order.join(", "))
        };
        let mut stmt = c.prepare(&sql).unwrap();
        let cols = stmt.column_count();
        let mut h = Sha256::new();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..cols {
                let v: rusqlite::types::Value = row.get(i).unwrap();
                h.update(format!("{v:?}|").as_bytes());
            }
            h.update(b"\n");
        }
        out.insert(t, hex::encode(h.finalize()));
    }
    out
}
