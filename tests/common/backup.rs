//! Helpers of the backup and restore tests: real database files made with
//! the crate's own migrations, the real `erlmcp` binary as a child process.

use rusqlite::Connection;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{BIN, get_raw, post_raw};

/// A data directory with a migrated WAL database holding `marker` in `kv`
/// and `rows` memory entities with `pad` bytes of observation each.
pub fn make_db(data_dir: &Path, marker: &str, rows: usize, pad: usize) -> PathBuf {
    std::fs::create_dir_all(data_dir).unwrap();
    let db = data_dir.join("erlmcp.db");
    let mut c = Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    erlmcp::store::migrations::to_latest(&mut c).unwrap();
    let tx = c.transaction().unwrap();
    set_marker_tx(&tx, marker);
    for i in 0..rows {
        tx.execute(
            "INSERT INTO memory_entities (name, entity_type) VALUES (?1, 'thing')",
            [format!("e{i}")],
        )
        .unwrap();
        let id = tx.last_insert_rowid();
        let text: String = (0..pad)
            .map(|j| char::from(b'a' + ((i * 7 + j * 13) % 26) as u8))
            .collect();
        tx.execute(
            "INSERT INTO memory_observations (entity_id, content) VALUES (?1, ?2)",
            rusqlite::params![id, text],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    db
}

fn set_marker_tx(tx: &rusqlite::Transaction<'_>, marker: &str) {
    tx.execute(
        "INSERT INTO kv (key, value) VALUES ('test_marker', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [marker.as_bytes()],
    )
    .unwrap();
}

pub fn set_marker(data_dir: &Path, marker: &str) {
    let mut c = Connection::open(data_dir.join("erlmcp.db")).unwrap();
    let tx = c.transaction().unwrap();
    set_marker_tx(&tx, marker);
    tx.commit().unwrap();
}

pub fn marker_of(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    let v: Vec<u8> = c
        .query_row("SELECT value FROM kv WHERE key = 'test_marker'", [], |r| {
            r.get(0)
        })
        .unwrap();
    String::from_utf8(v).unwrap()
}

pub fn integrity(db: &Path) -> String {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

pub fn audit_kinds(db: &Path) -> Vec<(String, String)> {
    let c = Connection::open(db).unwrap();
    let mut s = c
        .prepare("SELECT kind, outcome FROM audit_log ORDER BY id")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `erlmcp ARGS --data-dir DIR` with extra environment.
pub fn erlmcp(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(data_dir, args, env).output().unwrap()
}

pub fn command(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).arg("--data-dir").arg(data_dir);
    c.env_remove("RUST_LOG").env("ERLMCP_LOG__LEVEL", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

pub fn spawn(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    command(data_dir, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Spawns with stderr going to `log`, to be watched with [`log_says`].
pub fn spawn_logged(data_dir: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    command(data_dir, args, env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

pub fn log_says(log: &Path, text: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|s| s.contains(text))
}

/// Runs and parses `--json` output; asserts the exit code.
pub fn json(data_dir: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = erlmcp(data_dir, &all, env);
    assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn kill9(child: &mut Child) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Mounts a tmpfs of `size` (e.g. "2m") with `opts` at `dir`; false when
/// this machine does not allow it (not root, no mount).
pub fn mount_tmpfs(dir: &Path, size: &str, opts: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let o = if opts.is_empty() {
        format!("size={size}")
    } else {
        format!("size={size},{opts}")
    };
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &o, "tmpfs"])
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const MCP_HEADERS: [(&str, &str); 2] = [
    ("Accept", "application/json, text/event-stream"),
    ("MCP-Protocol-Version", "2025-06-18"),
];

/// A new legacy session on the MCP listener at `addr`; its id.
pub fn new_session(addr: &str) -> String {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let r = post_raw(&format!("http://{addr}/mcp"), &MCP_HEADERS, init.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    r.header("mcp-session-id")
        .unwrap_or_else(|| panic!("no session id: {r:?}"))
        .to_owned()
}

/// The HTTP status of a `ping` on `session`.
pub fn ping(addr: &str, session: &str) -> u16 {
    let mut h = MCP_HEADERS.to_vec();
    h.push(("Mcp-Session-Id", session));
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    post_raw(&format!("http://{addr}/mcp"), &h, body.as_bytes()).status
}

/// GET on the ops listener; the status and the body (0 when nothing
/// listens yet).
pub fn ops_get(addr: &str, path: &str) -> (u16, String) {
    if std::net::TcpStream::connect(addr).is_err() {
        return (0, String::new());
    }
    let r = get_raw(&format!("http://{addr}{path}"), &[]);
    (r.status, r.body)
}
