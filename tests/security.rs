//! Who may call what, against a real daemon: static API tokens on `/mcp`
//! (`auth.mode = "tokens"`), scopes per toolset and tool, revocation and
//! expiry while the daemon runs, malformed and oversize credentials, the
//! ops listener beyond loopback (an unauthenticated restore restores
//! nothing), and the audit rows that name who acted.

mod common;

use common::backup::{describe, erlmcp, make_db, marker_of, set_marker, wait_for};
use common::{ACCEPT_BOTH, BIN, Reply, free_port, get_raw, post_raw};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `erlmcp serve` on free ports, the ops listener bound to `ops_ip`.
struct Daemon {
    child: Child,
    mcp: u16,
    ops: u16,
}

impl Daemon {
    fn start(data: &Path, ops_ip: &str, env: &[(&str, &str)]) -> Daemon {
        for _ in 0..5 {
            let (mcp, ops) = (free_port(), free_port());
            let mut cmd = Command::new(BIN);
            cmd.arg("serve")
                .args(["--listen", &format!("127.0.0.1:{mcp}")])
                .args(["--ops-listen", &format!("{ops_ip}:{ops}")])
                .arg("--data-dir")
                .arg(data)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().unwrap();
            let mut up = false;
            for _ in 0..3000 {
                if let Some(s) = child.try_wait().unwrap() {
                    assert_eq!(s.code(), Some(69), "erlmcp exited at startup: {s}");
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", ops)).is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", mcp)).is_ok()
                {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                return Daemon { child, mcp, ops };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("erlmcp could not start on free ports five times");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.mcp)
    }

    fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `erlmcp token create`; the secret it prints.
fn create_token(data: &Path, name: &str, scopes: &[&str], extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    args.extend(extra);
    let out = erlmcp(data, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("emcp_"),
        "only the secret on stdout: {secret}"
    );
    secret
}

fn initialize_body() -> Vec<u8> {
    json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": { "name": "security-test", "version": "1" } } })
    .to_string()
    .into_bytes()
}

/// A legacy session opened with `token`; its id.
fn session(url: &str, token: &str) -> String {
    let bearer = format!("Bearer {token}");
    let r = post_raw(
        url,
        &[("Accept", ACCEPT_BOTH), ("Authorization", &bearer)],
        &initialize_body(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.header("mcp-session-id").unwrap().to_owned();
    let n = post_raw(
        url,
        &[
            ("Accept", ACCEPT_BOTH),
            ("Authorization", &bearer),
            ("Mcp-Session-Id", &sid),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(n.status, 202, "{}", n.body);
    sid
}

fn request(url: &str, token: &str, sid: &str, method: &str, params: Value) -> Reply {
    let bearer = format!("Bearer {token}");
    post_raw(
        url,
        &[
            ("Accept", "application/json"),
            ("Authorization", &bearer),
            ("Mcp-Session-Id", sid),
            ("MCP-Protocol-Version", "2025-06-18"),
        ],
        json!({ "jsonrpc": "2.0", "id": 7, "method": method, "params": params })
            .to_string()
            .as_bytes(),
    )
}

fn tool_names(r: &Reply) -> Vec<String> {
    let mut v: Vec<String> = r.result()["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {}", r.body))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn audit(data: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "--json"];
    all.extend(args);
    let out = erlmcp(data, &all, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn has_row(
    rows: &[Value],
    kind: &str,
    subject: &str,
    outcome: &str,
    principal: Option<&str>,
) -> bool {
    rows.iter().any(|r| {
        r["kind"] == kind
            && r["subject"] == subject
            && r["outcome"] == outcome
            && r["principal"].as_str() == principal
    })
}

#[test]
fn tokens_mode_lets_each_token_call_what_its_scopes_name_and_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = Daemon::start(&data, "127.0.0.1", &[("ERLMCP_AUTH__MODE", "tokens")]);
    let url = d.url();
    // Made while the daemon runs: a second process writes beside it.
    let reader = create_token(&data, "reader", &["memory:read"], &[]);
    let writer = create_token(&data, "writer", &["memory:write"], &[]);
    let one = create_token(&data, "one-tool", &["tool:read_graph"], &[]);

    // Without a credential, or with another scheme: the bare challenge.
    for headers in [vec![], vec![("Authorization", "Basic YTpi")]] {
        let mut h = headers.clone();
        h.push(("Accept", ACCEPT_BOTH));
        let r = post_raw(&url, &h, &initialize_body());
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // Malformed: 400 invalid_request.
    for bad in ["Bearer", "Bearer ", "Bearer a b", "Bearer a\"b"] {
        let r = post_raw(
            &url,
            &[("Accept", ACCEPT_BOTH), ("Authorization", bad)],
            &initialize_body(),
        );
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_request")
        );
    }
    // Wrong, or far too long: 401 invalid_token.
    let long = format!("Bearer emcp_{}", "a".repeat(16 * 1024));
    for bad in ["Bearer emcp_0000", "Bearer not-even-ours", long.as_str()] {
        let r = post_raw(
            &url,
            &[("Accept", ACCEPT_BOTH), ("Authorization", bad)],
            &initialize_body(),
        );
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .starts_with(r#"Bearer error="invalid_token""#),
            "{:?}",
            r.headers
        );
    }
    // GET and DELETE are authenticated too.
    assert_eq!(
        get_raw(&url, &[("Accept", "text/event-stream")]).status,
        401
    );

    // A read scope: the read-only tools, listed and callable.
    let sid = session(&url, &reader);
    let listed = request(&url, &reader, &sid, "tools/list", json!({}));
    assert_eq!(
        tool_names(&listed),
        vec!["open_nodes", "read_graph", "search_nodes"]
    );
    let ok = request(
        &url,
        &reader,
        &sid,
        "tools/call",
        json!({ "name": "read_graph", "arguments": {} }),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(
        ok.result().get("isError").is_none_or(|e| e == false),
        "{}",
        ok.body
    );
    let refused = request(
        &url,
        &reader,
        &sid,
        "tools/call",
        json!({ "name": "create_entities", "arguments": { "entities": [] } }),
    );
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        refused.header("www-authenticate").unwrap(),
        r#"Bearer error="insufficient_scope", scope="memory:write", error_description="calling create_entities needs scope memory:write""#
    );
    assert_eq!(refused.error_code(), -32001);
    // The same for a modern (sessionless) request.
    let modern = |token: &str, method: &str, params: Value| {
        let mut params = params;
        params["_meta"] = common::modern_meta(json!({}));
        let bearer = format!("Bearer {token}");
        let mut h = vec![
            ("Accept", "application/json"),
            ("Authorization", bearer.as_str()),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", method),
        ];
        let name = params
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        if let Some(n) = &name {
            h.push(("Mcp-Name", n.as_str()));
        }
        post_raw(
            &url,
            &h,
            json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
                .to_string()
                .as_bytes(),
        )
    };
    let l = modern(&reader, "tools/list", json!({}));
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(
        tool_names(&l),
        vec!["open_nodes", "read_graph", "search_nodes"]
    );
    let c = modern(
        &reader,
        "tools/call",
        json!({ "name": "delete_entities", "arguments": { "entityNames": [] } }),
    );
    assert_eq!(c.status, 403, "{}", c.body);

    // A write scope covers the toolset; a tool scope, its one tool.
    let wsid = session(&url, &writer);
    assert_eq!(
        tool_names(&request(&url, &writer, &wsid, "tools/list", json!({}))).len(),
        9
    );
    let made = request(
        &url,
        &writer,
        &wsid,
        "tools/call",
        json!({ "name": "create_entities", "arguments": { "entities": [
            { "name": "alice", "entityType": "person", "observations": [] } ] } }),
    );
    assert_eq!(made.status, 200, "{}", made.body);
    let osid = session(&url, &one);
    assert_eq!(
        tool_names(&request(&url, &one, &osid, "tools/list", json!({}))),
        vec!["read_graph"]
    );

    // Revoked while the daemon runs: refused from the next request on.
    let out = erlmcp(&data, &["token", "revoke", "writer"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let gone = request(&url, &writer, &wsid, "tools/list", json!({}));
    assert_eq!(gone.status, 401, "{}", gone.body);
    assert!(
        gone.header("www-authenticate")
            .unwrap()
            .contains("token revoked")
    );
    // Expired: refused once its time is up.
    let brief = create_token(&data, "brief", &["*"], &["--expires", "1s"]);
    let bsid = session(&url, &brief);
    std::thread::sleep(Duration::from_millis(2100));
    let late = request(&url, &brief, &bsid, "tools/list", json!({}));
    assert_eq!(late.status, 401, "{}", late.body);
    assert!(
        late.header("www-authenticate")
            .unwrap()
            .contains("token expired")
    );
    // The reader still works: nothing else broke.
    assert_eq!(
        request(&url, &reader, &sid, "tools/list", json!({})).status,
        200
    );

    // The list never shows a secret.
    let out = erlmcp(&data, &["token", "list", "--json"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("emcp_") && !text.contains("hash"), "{text}");
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    let states: Vec<(&str, &str)> = list
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                if t["revoked_at"].is_null() {
                    ""
                } else {
                    "revoked"
                },
            )
        })
        .collect();
    assert!(states.contains(&("writer", "revoked")), "{states:?}");
    // Bad names and scopes are refused before anything is written.
    for args in [
        vec!["token", "create", "--name", "x y", "--scope", "*"],
        vec!["token", "create", "--name", "x", "--scope", "memory:admin"],
        vec!["token", "create", "--name", "reader", "--scope", "*"],
    ] {
        let out = erlmcp(&data, &args, &[]);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {}", describe(&out));
    }

    // The audit log names who did what, refusals included.
    let mut rows = Vec::new();
    wait_for("the audit rows", Duration::from_secs(5), || {
        rows = audit(&data, &[]);
        has_row(&rows, "tool", "create_entities", "ok", Some("writer"))
            && has_row(
                &rows,
                "tool",
                "create_entities",
                "insufficient_scope",
                Some("reader"),
            )
            && has_row(
                &rows,
                "tool",
                "delete_entities",
                "insufficient_scope",
                Some("reader"),
            )
            && has_row(&rows, "auth", "POST /mcp", "invalid_token", Some("writer"))
            && has_row(&rows, "auth", "POST /mcp", "invalid_token", Some("brief"))
            && has_row(&rows, "auth", "POST /mcp", "unauthenticated", None)
            && has_row(&rows, "auth", "POST /mcp", "invalid_request", None)
    });
    // Each allowed call names the scope that allowed it.
    let scope_of = |subject: &str, principal: &str| {
        rows.iter()
            .find(|r| {
                r["subject"] == subject && r["outcome"] == "ok" && r["principal"] == principal
            })
            .map(|r| r["scope"].clone())
    };
    assert_eq!(
        scope_of("create_entities", "writer"),
        Some(json!("memory:write"))
    );
    assert_eq!(scope_of("read_graph", "reader"), Some(json!("memory:read")));
    let mine = audit(&data, &["--principal", "reader"]);
    assert!(!mine.is_empty() && mine.iter().all(|r| r["principal"] == "reader"));
    assert!(audit(&data, &["--since", "1h"]).len() >= mine.len());
    let human = erlmcp(&data, &["audit", "--principal", "writer"], &[]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("create_entities"));
}

/// Prompts, resources and completions are scoped like tools: a toolset's
/// read scope reaches them, a tool scope does not, lists show only what
/// the caller reaches, and every route refuses the same way (403 naming
/// the scope, audited).
#[test]
fn prompts_resources_and_completions_follow_the_toolset_scopes() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = Daemon::start(
        &data,
        "127.0.0.1",
        &[
            ("ERLMCP_AUTH__MODE", "tokens"),
            ("ERLMCP_TOOLSETS__CONFORMANCE__ENABLED", "true"),
        ],
    );
    let url = d.url();
    let memory = create_token(&data, "mem", &["memory:read"], &[]);
    let tool = create_token(&data, "tool", &["tool:read_graph"], &[]);
    let conf = create_token(&data, "conf", &["conformance:read"], &[]);
    let sid = session(&url, &memory);
    let call = |token: &str, sid: &str, method: &str, params: Value| {
        request(&url, token, sid, method, params)
    };
    let uris = |r: &Reply, key: &str, field: &str| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.body);
        r.result()[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {}", r.body))
            .iter()
            .map(|x| x[field].as_str().unwrap().to_owned())
            .collect()
    };

    // The lists: memory's resources and template only, no prompt.
    let res = uris(
        &call(&memory, &sid, "resources/list", json!({})),
        "resources",
        "uri",
    );
    assert!(
        !res.is_empty() && res.iter().all(|u| u.starts_with("memory://")),
        "{res:?}"
    );
    let tpl = uris(
        &call(&memory, &sid, "resources/templates/list", json!({})),
        "resourceTemplates",
        "uriTemplate",
    );
    assert!(
        !tpl.is_empty() && tpl.iter().all(|u| u.starts_with("memory://")),
        "{tpl:?}"
    );
    assert!(
        uris(
            &call(&memory, &sid, "prompts/list", json!({})),
            "prompts",
            "name"
        )
        .is_empty()
    );

    // What it reaches works; what it does not is 403 naming the scope.
    let graph = json!({ "uri": "memory://knowledge-graph" });
    assert_eq!(
        call(&memory, &sid, "resources/read", graph.clone()).status,
        200
    );
    let entity = json!({ "ref": { "type": "ref/resource", "uri": "memory://entities/{name}" },
        "argument": { "name": "name", "value": "" } });
    assert_eq!(
        call(&memory, &sid, "completion/complete", entity.clone()).status,
        200
    );
    let refusals = [
        (
            "prompts/get",
            json!({ "name": "test_simple_prompt" }),
            "reading test_simple_prompt",
        ),
        (
            "resources/read",
            json!({ "uri": "test://static-text" }),
            "reading test://static-text",
        ),
        (
            "completion/complete",
            json!({ "ref": { "type": "ref/prompt", "name": "test_prompt_with_arguments" },
                "argument": { "name": "arg1", "value": "" } }),
            "reading test_prompt_with_arguments",
        ),
    ];
    for (method, params, what) in &refusals {
        let r = call(&memory, &sid, method, params.clone());
        assert_eq!(r.status, 403, "{method}: {}", r.body);
        assert_eq!(r.error_code(), -32001, "{}", r.body);
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            format!(
                r#"Bearer error="insufficient_scope", scope="conformance:read", error_description="{what} needs scope conformance:read""#
            )
        );
    }
    // A tool scope reaches its tool and nothing else.
    let tsid = session(&url, &tool);
    assert!(
        uris(
            &call(&tool, &tsid, "resources/list", json!({})),
            "resources",
            "uri"
        )
        .is_empty()
    );
    let r = call(&tool, &tsid, "resources/read", graph);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.response()["error"]["data"]["scope"], "memory:read");
    assert_eq!(
        call(&tool, &tsid, "completion/complete", entity).status,
        403
    );
    // The other toolset's read scope: its prompts, not memory's tools.
    let csid = session(&url, &conf);
    assert_eq!(
        call(
            &conf,
            &csid,
            "prompts/get",
            json!({ "name": "test_simple_prompt" })
        )
        .status,
        200
    );
    assert!(
        !uris(
            &call(&conf, &csid, "prompts/list", json!({})),
            "prompts",
            "name"
        )
        .is_empty()
    );
    assert_eq!(
        call(
            &conf,
            &csid,
            "tools/call",
            json!({ "name": "read_graph", "arguments": {} })
        )
        .status,
        403
    );

    // Audited with who and what.
    wait_for("the refusals' audit rows", Duration::from_secs(5), || {
        let rows = audit(&data, &[]);
        has_row(
            &rows,
            "prompt",
            "test_simple_prompt",
            "insufficient_scope",
            Some("mem"),
        ) && has_row(
            &rows,
            "resource",
            "test://static-text",
            "insufficient_scope",
            Some("mem"),
        ) && has_row(
            &rows,
            "completion",
            "test_prompt_with_arguments",
            "insufficient_scope",
            Some("mem"),
        ) && has_row(
            &rows,
            "resource",
            "memory://knowledge-graph",
            "insufficient_scope",
            Some("tool"),
        )
    });
}

/// A session belongs to the principal that opened it: another token
/// holding its id gets 404 on every method (as for an unknown session),
/// the opener goes on, and the binding survives a restart.
#[test]
fn a_session_is_bound_to_the_token_that_opened_it() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let env = [("ERLMCP_AUTH__MODE", "tokens")];
    let mut d = Daemon::start(&data, "127.0.0.1", &env);
    let alice = create_token(&data, "alice", &["memory:write"], &[]);
    let mallory = create_token(&data, "mallory", &["*"], &[]);
    let sid = session(&d.url(), &alice);
    let ping =
        |d: &Daemon, token: &str| request(&d.url(), token, &sid, "tools/list", json!({})).status;
    assert_eq!(ping(&d, &alice), 200);
    assert_eq!(
        ping(&d, &mallory),
        404,
        "another token, even an unrestricted one"
    );
    let bearer = format!("Bearer {mallory}");
    let get = get_raw(
        &d.url(),
        &[
            ("Accept", "text/event-stream"),
            ("Authorization", &bearer),
            ("Mcp-Session-Id", &sid),
        ],
    );
    assert_eq!(get.status, 404, "{}", get.body);
    let del = common::delete_raw(
        &d.url(),
        &[("Authorization", &bearer), ("Mcp-Session-Id", &sid)],
    );
    assert_eq!(del.status, 404, "{}", del.body);
    assert_eq!(ping(&d, &alice), 200, "the refused DELETE ended nothing");

    // Across a restart the session and its binding come back from SQLite.
    drop(d);
    d = Daemon::start(&data, "127.0.0.1", &env);
    assert_eq!(ping(&d, &mallory), 404);
    assert_eq!(ping(&d, &alice), 200);
    wait_for("the audit row", Duration::from_secs(5), || {
        has_row(
            &audit(&data, &[]),
            "auth",
            "session",
            "foreign_session",
            Some("mallory"),
        )
    });
}

/// A restore never brings a revoked token back: revoked after the backup,
/// it stays revoked in the restored database, online and offline; a token
/// made after the backup is gone with that time's data.
#[test]
fn a_restore_keeps_the_revocations_made_since_the_backup() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let env = [("ERLMCP_AUTH__MODE", "tokens")];
    let d = Daemon::start(&data, "127.0.0.1", &env);
    let early = create_token(&data, "early", &["*"], &[]);
    let keep = create_token(&data, "keep", &["*"], &[]);
    let out = erlmcp(&data, &["backup", "create"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let late = create_token(&data, "late", &["*"], &[]);
    let out = erlmcp(&data, &["token", "revoke", "early"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let status = |d: &Daemon, token: &str| {
        post_raw(
            &d.url(),
            &[
                ("Accept", ACCEPT_BOTH),
                ("Authorization", &format!("Bearer {token}")),
            ],
            &initialize_body(),
        )
        .status
    };
    assert_eq!(status(&d, &early), 401);

    // Online, through the daemon.
    let ops = format!("127.0.0.1:{}", d.ops);
    let out = erlmcp(&data, &["restore", "latest", "--ops", &ops], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("1 token(s) revoked since the backup stay revoked"),
        "{}",
        describe(&out)
    );
    assert_eq!(status(&d, &early), 401, "the revoked token stays revoked");
    assert_eq!(status(&d, &keep), 200);
    assert_eq!(status(&d, &late), 401, "made after the backup: gone");

    // Offline, with the daemon stopped: the same.
    let keep2 = keep.clone();
    let out = erlmcp(&data, &["token", "revoke", "keep"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    drop(d);
    let out = erlmcp(&data, &["restore", "latest", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["revocations_kept"], 2, "{r}");
    let d = Daemon::start(&data, "127.0.0.1", &env);
    assert_eq!(status(&d, &early), 401);
    assert_eq!(status(&d, &keep2), 401);
}

#[test]
fn auth_off_is_the_default_and_asks_for_nothing() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = Daemon::start(&data, "127.0.0.1", &[]);
    let r = post_raw(&d.url(), &[("Accept", ACCEPT_BOTH)], &initialize_body());
    assert_eq!(r.status, 200, "{}", r.body);
    // On loopback the ops listener changes state without a token.
    let r = post_raw(&d.ops_url("/backup"), &[], b"{}");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_ops_listener_beyond_loopback_restores_only_for_a_token_with_scope_ops() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 10, 10);
    let out = erlmcp(&data, &["backup", "create"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    set_marker(&data, "B");
    // 0.0.0.0 is beyond loopback; the test reaches it on 127.0.0.1.
    let d = Daemon::start(&data, "0.0.0.0", &[]);
    let ops = create_token(&data, "operator", &["ops"], &[]);
    let tools = create_token(&data, "tools-only", &["memory:write"], &[]);
    let restore = |auth: Option<&str>| {
        let mut h = vec![];
        let bearer;
        if let Some(a) = auth {
            bearer = a.to_owned();
            h.push(("Authorization", bearer.as_str()));
        }
        post_raw(&d.ops_url("/restore"), &h, br#"{"id":"latest"}"#)
    };

    let r = restore(None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["exit_code"], 77);
    assert_eq!(marker_of(&db), "B", "nothing was restored");
    let r = restore(Some("Bearer emcp_wrong"));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = restore(Some("Bearer"));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = restore(Some(&format!("Bearer {tools}")));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope", scope="ops""#)
    );
    assert_eq!(marker_of(&db), "B", "nothing was restored");
    // Every other state change is refused the same way; reads stay open.
    for path in [
        "/backup",
        "/backup/prune",
        "/backups/verify",
        "/replication/role",
    ] {
        assert_eq!(post_raw(&d.ops_url(path), &[], b"{}").status, 401, "{path}");
    }
    for path in ["/healthz", "/readyz", "/status", "/metrics", "/backups"] {
        assert_eq!(get_raw(&d.ops_url(path), &[]).status, 200, "{path}");
    }

    let r = restore(Some(&format!("Bearer {ops}")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(marker_of(&db), "A", "restored");

    // The command line: a wrong token is refused (exit 77); the daemon's
    // local credential, or a token file, works.
    let addr = format!("127.0.0.1:{}", d.ops);
    let out = erlmcp(
        &data,
        &["backup", "create", "--ops", &addr],
        &[("ERLMCP_OPS_TOKEN", "emcp_wrong")],
    );
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let out = erlmcp(&data, &["backup", "create", "--ops", &addr], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "local credential: {}",
        describe(&out)
    );
    // The restore brought back the tokens of the backup, which predates
    // "operator": that token is unknown now (security.md says so).
    let r = post_raw(
        &d.ops_url("/backup"),
        &[("Authorization", &format!("Bearer {ops}"))],
        b"{}",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let ops = create_token(&data, "operator2", &["ops"], &[]);
    let file = t.path().join("ops.secret");
    std::fs::write(&file, format!("{ops}\n")).unwrap();
    std::fs::remove_file(data.join("ops.token")).unwrap();
    let out = erlmcp(&data, &["backup", "create", "--ops", &addr], &[]);
    assert_eq!(
        out.status.code(),
        Some(77),
        "no token at all: {}",
        describe(&out)
    );
    let out = erlmcp(
        &data,
        &[
            "backup",
            "create",
            "--ops",
            &addr,
            "--token-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "token file: {}", describe(&out));

    let mut rows = Vec::new();
    wait_for("the ops audit rows", Duration::from_secs(5), || {
        rows = audit(&data, &[]);
        has_row(&rows, "ops", "POST /backup", "ok", Some("operator2"))
            && has_row(&rows, "ops", "POST /backup", "ok", Some("local"))
            && has_row(&rows, "ops", "POST /backup", "unauthenticated", None)
    });
    // The refusals before the restore went with the database it replaced;
    // the restore's own row is in the restored one.
    assert!(
        has_row(&rows, "ops", "POST /restore", "ok", Some("operator")),
        "{rows:#?}"
    );
}

#[test]
fn ops_require_auth_asks_for_a_token_on_loopback_too_and_can_close_reads() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = Daemon::start(
        &data,
        "127.0.0.1",
        &[
            ("ERLMCP_OPS__REQUIRE_AUTH", "true"),
            ("ERLMCP_OPS__OPEN_READS", "false"),
        ],
    );
    assert_eq!(post_raw(&d.ops_url("/backup"), &[], b"{}").status, 401);
    assert_eq!(get_raw(&d.ops_url("/status"), &[]).status, 401);
    let local = std::fs::read_to_string(data.join("ops.token")).unwrap();
    let bearer = format!("Bearer {local}");
    assert_eq!(
        get_raw(&d.ops_url("/status"), &[("Authorization", &bearer)]).status,
        200
    );
    // `erlmcp status` presents the local credential by itself.
    let addr = format!("127.0.0.1:{}", d.ops);
    let out = Command::new(BIN)
        .args(["status", "--ops", &addr, "--json"])
        .env("ERLMCP_DATA_DIR", &data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}
