//! Entry points of the coverage-guided fuzz targets in `fuzz/` (cargo-fuzz;
//! see `fuzz/README.md`), and the property tests that run the same entry
//! points in nextest. Each takes arbitrary bytes, feeds them to a parser
//! the way the server does, and asserts what must hold for every input,
//! beyond not panicking. Compiled for tests and with the `fuzzing` feature
//! only: nothing else calls them.
//!
//! | target | what it parses |
//! |---|---|
//! | [`jsonrpc_envelope`] | one JSON-RPC message (`mcp::jsonrpc::parse`), and our answers to it |
//! | [`http_headers`] | the request-header checks: Host/Origin guard, Accept, the 2026-07-28 mirroring of `Mcp-Method`/`Mcp-Name`/`Mcp-Param-*`, `Last-Event-ID`, client keys |
//! | [`request_meta`] | a request's `_meta` (`mcp::meta`) |
//! | [`config`] | the configuration file and `ERLMCP_*` overrides |
//! | [`changeset_apply`] | a replication log entry as a standby reads it off the link, applied as the standby applies it |

use serde_json::Value;
use serde_json::value::RawValue;
use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::mcp::catalog::HeaderParam;
use crate::mcp::error::{INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION};
use crate::mcp::jsonrpc::{self, Incoming};
use crate::mcp::meta::RequestMeta;
use crate::replication::frame::Frame;
use crate::replication::log::{self as repl_log, Entry};
use crate::replication::standby::{self, ApplyError};
use crate::transport::http::guard::Guard;
use crate::transport::http::headers;
use crate::transport::http::limits::ClientKey;
use crate::transport::http::stream::EventId;

/// One incoming message: whatever `parse` decides, our answer to it is
/// one well-formed JSON-RPC response carrying the id it read.
pub fn jsonrpc_envelope(data: &[u8]) {
    match jsonrpc::parse(data) {
        Ok(msg) => {
            assert!(
                serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
                "accepted input that is not JSON"
            );
            let id = match &msg {
                Incoming::Request { id, .. } => Some(id.clone()),
                Incoming::Response { id, .. } => Some(id.clone()),
                Incoming::Notification { .. } => None,
            };
            if let Some(id) = id {
                let answer = jsonrpc::response(&id, &serde_json::json!({}));
                match jsonrpc::parse(&answer) {
                    Ok(Incoming::Response { id: back, outcome }) => {
                        assert!(back == id && outcome.is_ok(), "the id did not round-trip")
                    }
                    other => panic!("our response does not parse back: {other:?}"),
                }
            }
        }
        Err(rejected) => {
            assert!(
                [jsonrpc_codes::PARSE, jsonrpc_codes::INVALID].contains(&rejected.error.code),
                "unexpected code {}",
                rejected.error.code
            );
            let answer = jsonrpc::error_response(rejected.id.as_ref(), &rejected.error);
            let v: Value = serde_json::from_slice(&answer).expect("our error answer is JSON");
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["error"]["code"], rejected.error.code);
            match &rejected.id {
                Some(id) => assert_eq!(v["id"], id.to_value()),
                None => assert!(v["id"].is_null()),
            }
        }
    }
}

mod jsonrpc_codes {
    pub(super) const PARSE: i64 = crate::mcp::error::PARSE_ERROR;
    pub(super) const INVALID: i64 = crate::mcp::error::INVALID_REQUEST;
}

/// Splits fuzz input into a method line, header lines (`Name: value`) and
/// a body after the first empty line.
fn request_parts(data: &[u8]) -> (String, axum::http::HeaderMap, Vec<u8>) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue};
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], data[i + 2..].to_vec()),
        None => (data, Vec::new()),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let method = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut h = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    (method, h, body)
}

/// The header checks of a request: the guard, Accept, the modern mirroring
/// rules, `Last-Event-ID`, and the key a client address is charged to.
pub fn http_headers(data: &[u8]) {
    let (method, h, body) = request_parts(data);
    let listen: SocketAddr = "127.0.0.1:8080".parse().expect("a socket address");
    for guard in [
        Guard::new(listen, &[], &[]),
        Guard::new(
            listen,
            &["server".into(), "[::1]".into()],
            &["https://app.example".into()],
        ),
        Guard::new(listen, &["*".into()], &["*".into()]),
    ] {
        let _ = guard.check(&h);
    }
    let (json, sse) = headers::accepts(&h);
    if headers::get(&h, "accept").is_some_and(|a| a.split(',').any(|p| p.trim() == "*/*")) {
        assert!(json && sse, "*/* accepts both");
    }
    let params = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| RawValue::from_string(b.to_owned()).ok());
    for version in ["2026-07-28", "2025-11-25"] {
        if headers::check_modern(&h, &method, params.as_deref(), version).is_ok() {
            assert_eq!(headers::get(&h, "mcp-method"), Some(method.as_str()));
            assert_eq!(headers::get(&h, "mcp-protocol-version"), Some(version));
        }
    }
    let args = params
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p.get()).ok())
        .and_then(|v| v.get("arguments").cloned())
        .unwrap_or(Value::Null);
    let header_params: Vec<HeaderParam> = args
        .as_object()
        .map(|m| {
            m.keys()
                .take(8)
                .map(|k| HeaderParam {
                    path: vec![k.clone()],
                    header: k.clone(),
                    kind: "string".into(),
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = headers::check_params(&h, &header_params, &args);
    if let Some(last) = headers::get(&h, "last-event-id")
        && let Some(id) = EventId::parse(last)
    {
        let again = EventId::format(id.kind, id.stream, id.seq);
        assert_eq!(EventId::parse(&again), Some(id), "{last:?} -> {again:?}");
    }
    for value in h.get_all("x-client-address") {
        if let Some(ip) = value.to_str().ok().and_then(|v| v.parse::<IpAddr>().ok()) {
            let key = ClientKey::of_address(ip);
            let ClientKey::Address(masked) = &key else {
                panic!("an address made {key:?}");
            };
            assert_eq!(ClientKey::of_address(*masked), key, "keys are stable");
            assert!(!key.owner().is_empty());
        }
    }
}

/// A request's params and their `_meta`: a modern request is accepted with
/// a stateless version or refused with the spec's codes.
pub fn request_meta(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = RawValue::from_string(text.to_owned()) else {
        return;
    };
    let meta = RequestMeta::read(Some(&params));
    if !text.contains("_meta") && !text.contains("\\u") {
        // The shortcut for params without `_meta` must be right.
        assert!(!meta.is_modern() && meta.progress_token.is_none());
    }
    if let Some(t) = &meta.progress_token {
        assert!(t.is_string() || t.is_i64() || t.is_u64());
    }
    if meta.is_modern() {
        match meta.modern() {
            Ok(m) => assert!(m.version.is_stateless()),
            Err(e) => assert!(
                [INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION].contains(&e.code),
                "unexpected code {}",
                e.code
            ),
        }
    }
}

/// A configuration file, then `ERLMCP_*` overrides (the lines after a line
/// `---`, as `KEY=VALUE`): a configuration accepted once is valid, and the
/// effective settings `check-config` prints read back as the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, env) = text.split_once("\n---\n").unwrap_or((text, ""));
    let Ok(table) = toml::from_str::<toml::Table>(file) else {
        return;
    };
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("ERLMCP_{k}"), v.to_owned()))
        .collect();
    let Ok(c) = Config::from_table(table, env.into_iter(), "fuzz") else {
        return;
    };
    c.validate().expect("an accepted configuration is valid");
    let printed = toml::to_string(&c).expect("a configuration prints as TOML");
    let table: toml::Table = toml::from_str(&printed).expect("printed TOML parses");
    let again = Config::from_table(table, std::iter::empty(), "printed")
        .unwrap_or_else(|e| panic!("printed configuration refused: {e}\n{printed}"));
    assert_eq!(again, c, "printed configuration reads back differently");
}

/// Rows in every table a primary records, so that a changeset's updates
/// and deletes find something: the standby's database as
/// [`changeset_fixture`] makes it. Fixed ids and times: the seeds in
/// `fuzz/corpus/changeset_apply/` were recorded against exactly these.
const FIXTURE_ROWS: &str = r#"
INSERT INTO kv (key, value) VALUES ('fixture', x'01');
INSERT INTO sessions (id, protocol_version, client_info, capabilities, created_at, last_seen_at,
                      principal)
    VALUES ('s1', '2025-11-25', '{"name":"a"}', '{}', 1, 1, 'reader'),
           ('s2', '2025-06-18', '{"name":"b"}', '{}', 2, 2, NULL);
INSERT INTO sse_events (session_id, stream_id, seq, data, created_at)
    VALUES ('s1', 1, 1, '{"jsonrpc":"2.0"}', 1), ('s1', 1, 2, '{}', 2);
INSERT INTO audit_log (id, at_ms, session_id, kind, subject, outcome, duration_us, detail,
                       principal, scope)
    VALUES (1, 1, 's1', 'tool', 'read_graph', 'ok', 10, NULL, 'reader', 'memory:read');
INSERT INTO tokens (name, hash, scopes, created_at)
    VALUES ('reader', x'0123456789abcdef0123456789abcdef', 'memory:read', 1);
INSERT INTO memory_entities (id, name, entity_type)
    VALUES (1, 'alice', 'person'), (2, 'erlmcp', 'project');
INSERT INTO memory_observations (id, entity_id, content)
    VALUES (1, 1, 'writes Rust'), (2, 2, 'an MCP server');
INSERT INTO memory_relations (id, from_name, to_name, relation_type)
    VALUES (1, 'alice', 'erlmcp', 'maintains');
INSERT INTO tasks (id, owner, session_id, runner, protocol_version, method, request, client,
                   status, created_at_ms, updated_at_ms, ttl_ms, expires_at_ms, poll_interval_ms)
    VALUES ('t1', 's1', 's1', 'r1', '2025-11-25', 'tools/call', '{}', '{}', 'working',
            1, 1, 60000, 60001, 1000);
"#;

/// A standby's database: the current schema, [`FIXTURE_ROWS`], and a log
/// of one entry; foreign keys off, as on a standby (changesets carry their
/// cascades).
pub fn changeset_fixture() -> rusqlite::Connection {
    let mut c = rusqlite::Connection::open_in_memory().expect("an in-memory database");
    crate::store::migrations::to_latest(&mut c).expect("the schema");
    c.execute_batch(FIXTURE_ROWS).expect("the fixture's rows");
    let first = Entry {
        seq: 1,
        epoch: 1,
        hash: repl_log::chain(&repl_log::Position::GENESIS.hash, 1, 1, &[]),
        at_ms: 0,
        changeset: Vec::new(),
    };
    repl_log::insert(&c, &first).expect("the log's first entry");
    c.pragma_update(None, "foreign_keys", false)
        .expect("foreign keys off");
    c
}

thread_local! {
    /// One fixture per thread, and the digest of its rows: every input is
    /// applied in a transaction that is rolled back, so the fixture is the
    /// same for the next.
    static STANDBY: std::cell::RefCell<(rusqlite::Connection, [u8; 32])> =
        std::cell::RefCell::new({
            let c = changeset_fixture();
            let digest = contents(&c);
            (c, digest)
        });
}

/// A binary frame of the replication link, as a standby reads it: one that
/// decodes re-encodes to the same bytes. An entry is applied twice to the
/// [`changeset_fixture`], the way the standby applies a batch
/// (`replication::standby::apply_in`): as sent (its hash rarely chains, so
/// this is mostly the refusal of an entry that does not follow), and with
/// its changeset chained after the log's end (so the changeset itself is
/// applied). Each either applies and is logged, or is refused with an
/// error leaving every row as it was; `PRAGMA integrity_check` (the
/// full-text index included) passes either way.
pub fn changeset_apply(data: &[u8]) {
    let Ok(frame) = Frame::decode_binary(data) else {
        return;
    };
    assert_eq!(
        frame.encode_binary().as_deref(),
        Some(data),
        "a frame re-encodes to its own bytes"
    );
    let Frame::Entry(sent) = frame else {
        return;
    };
    STANDBY.with_borrow_mut(|(c, fixture)| {
        let at = repl_log::last(c).expect("the log's end");
        let seq = at.seq + 1;
        let chained = Entry {
            seq,
            hash: repl_log::chain(&at.hash, seq, sent.epoch, &sent.changeset),
            ..sent.clone()
        };
        apply_checked(c, fixture, sent);
        apply_checked(c, fixture, chained);
    });
}

/// Applies `e` in a transaction it rolls back, checking what must hold;
/// `before` is the digest of the rows before.
fn apply_checked(c: &mut rusqlite::Connection, before: &[u8; 32], e: Entry) {
    let tx = c.transaction().expect("a transaction");
    let at = repl_log::last(&tx).expect("the log's end");
    match standby::apply_in(&tx, vec![e.clone()]) {
        Ok(pos) if e.seq <= at.seq => {
            // Already here: a resend after a reconnect.
            assert_eq!(pos, at);
            assert!(contents(&tx) == *before, "a resent entry changed rows");
        }
        Ok(pos) => {
            assert_eq!(pos, e.position());
            assert_eq!(repl_log::last(&tx).expect("the log's end"), pos);
        }
        Err(ApplyError::Promoted) => unreachable!("apply_in never decides a promotion"),
        Err(err) => assert!(
            contents(&tx) == *before,
            "a refused entry changed rows: {err}"
        ),
    }
    let problems: Vec<String> = tx
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .expect("integrity_check runs");
    assert_eq!(problems, ["ok"], "integrity_check after entry {}", e.seq);
}

/// A digest of every row of every table.
fn contents(c: &rusqlite::Connection) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (table, digest) in table_digests(c) {
        h.update(table.as_bytes());
        h.update(digest);
    }
    h.finalize().into()
}

/// Each table's rows, digested in the order SQLite reads them (the same
/// for the same contents of the same file).
fn table_digests(c: &rusqlite::Connection) -> std::collections::BTreeMap<String, [u8; 32]> {
    use sha2::{Digest, Sha256};
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .expect("the tables");
    tables
        .into_iter()
        .map(|t| {
            let mut h = Sha256::new();
            let mut s = c
                .prepare(&format!("SELECT * FROM \"{}\"", t.replace('"', "\"\"")))
                .expect("a table reads");
            let n = s.column_count();
            let mut rows = s.query([]).expect("a table reads");
            while let Some(row) = rows.next().expect("a row reads") {
                for i in 0..n {
                    h.update(format!("{:?}\u{0}", row.get_ref(i).expect("a column")).as_bytes());
                }
            }
            (t, h.finalize().into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The same entry points on generated inputs: random bytes, and
    //! near-valid messages, headers and files built from the shapes the
    //! parsers expect.

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_/\\\\\"é0-9 ]{0,10}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-z_]{0,6}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn id() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z0-9\"\\\\]{0,8}".prop_map(Value::String),
            json_value(),
        ]
    }

    /// A message from the parts a JSON-RPC message has, some missing, some
    /// of the wrong type, possibly cut short.
    fn envelope() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::option::of(prop_oneof![Just(json!("2.0")), json_value()]),
            prop::option::of(id()),
            prop::option::of(prop_oneof![
                "[a-z/]{0,16}".prop_map(Value::String),
                json_value()
            ]),
            prop::option::of(json_value()),
            prop::option::of(json_value()),
            prop::option::of(prop_oneof![
                (any::<i64>(), "[a-z ]{0,8}").prop_map(|(c, m)| json!({"code": c, "message": m})),
                json_value(),
            ]),
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(v, id, method, params, result, error, cut, truncate)| {
                let mut m = serde_json::Map::new();
                for (k, val) in [
                    ("jsonrpc", v),
                    ("id", id),
                    ("method", method),
                    ("params", params),
                    ("result", result),
                    ("error", error),
                ] {
                    if let Some(val) = val {
                        m.insert(k.into(), val);
                    }
                }
                let mut bytes = serde_json::to_vec(&Value::Object(m)).unwrap();
                if truncate {
                    bytes.truncate(cut.index(bytes.len() + 1));
                }
                bytes
            })
    }

    fn header_lines() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("Host"),
            Just("Origin"),
            Just("Accept"),
            Just("MCP-Protocol-Version"),
            Just("Mcp-Method"),
            Just("Mcp-Name"),
            Just("Mcp-Param-Region"),
            Just("Mcp-Param-N"),
            Just("Last-Event-ID"),
            Just("X-Client-Address"),
        ];
        let value = prop_oneof![
            Just("2026-07-28".to_owned()),
            Just("tools/call".to_owned()),
            Just("localhost:8080".to_owned()),
            Just("http://evil.example".to_owned()),
            Just("*/*".to_owned()),
            Just("2001:db8::1".to_owned()),
            Just("::ffff:10.0.0.1".to_owned()),
            "=\\?base64\\?[A-Za-z0-9+/=]{0,8}\\?=",
            "[rg][0-9]{1,20}_[0-9]{1,20}",
            "[ -~]{0,16}",
        ];
        (
            prop_oneof![
                Just("tools/call"),
                Just("prompts/get"),
                Just("resources/read"),
                Just("ping")
            ],
            prop::collection::vec((name, value), 0..8),
            json_value(),
        )
            .prop_map(|(method, headers, body)| {
                let mut out = format!("{method}\n");
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\n"));
                }
                out.push('\n');
                out.push_str(&body.to_string());
                out.into_bytes()
            })
    }

    fn meta_params() -> impl Strategy<Value = Vec<u8>> {
        let key = prop_oneof![
            Just("io.modelcontextprotocol/protocolVersion"),
            Just("io.modelcontextprotocol/clientInfo"),
            Just("io.modelcontextprotocol/clientCapabilities"),
            Just("io.modelcontextprotocol/logLevel"),
            Just("progressToken"),
        ];
        let value = prop_oneof![
            Just(json!("2026-07-28")),
            Just(json!("2025-11-25")),
            Just(json!("debug")),
            Just(json!({})),
            json_value(),
        ];
        (prop::collection::vec((key, value), 0..6), json_value()).prop_map(|(meta, other)| {
            let meta: serde_json::Map<String, Value> =
                meta.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            serde_json::to_vec(&json!({ "_meta": meta, "other": other })).unwrap()
        })
    }

    fn config_text() -> impl Strategy<Value = Vec<u8>> {
        let key = prop_oneof![
            Just("http.listen"),
            Just("http.max_body_bytes"),
            Just("http.handshake_timeout_secs"),
            Just("http.allowed_hosts"),
            Just("limits.requests_per_sec"),
            Just("limits.request_burst"),
            Just("limits.max_connections"),
            Just("limits.session_cache"),
            Just("retention.audit_max_rows"),
            Just("retention.events_max_bytes"),
            Just("backup.schedule"),
            Just("store.synchronous"),
            Just("mcp.instructions"),
            Just("node_name"),
        ];
        let value = prop_oneof![
            any::<u32>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("\"127.0.0.1:0\"".to_owned()),
            Just("\"normal\"".to_owned()),
            Just("\"daily 03:30\"".to_owned()),
            Just("[\"a\", \"*\"]".to_owned()),
            Just("true".to_owned()),
            "\"[ -~]{0,12}\"",
        ];
        (
            prop::collection::vec((key.clone(), value.clone()), 0..6),
            prop::collection::vec((key, value), 0..3),
        )
            .prop_map(|(file, env)| {
                let mut out = String::new();
                let mut tables = std::collections::BTreeMap::<String, Vec<String>>::new();
                for (k, v) in file {
                    let (section, name) = k.rsplit_once('.').unwrap_or(("", k));
                    tables
                        .entry(section.to_owned())
                        .or_default()
                        .push(format!("{name} = {v}"));
                }
                for (section, lines) in tables {
                    if !section.is_empty() {
                        out.push_str(&format!("[{section}]\n"));
                    }
                    for l in lines {
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
                out.push_str("\n---\n");
                for (k, v) in env {
                    out.push_str(&format!("{}={v}\n", k.replace('.', "__").to_uppercase()));
                }
                out.into_bytes()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn envelopes(bytes in envelope()) {
            jsonrpc_envelope(&bytes);
        }

        #[test]
        fn envelope_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            jsonrpc_envelope(&bytes);
        }

        #[test]
        fn headers(bytes in header_lines()) {
            http_headers(&bytes);
        }

        #[test]
        fn meta(bytes in meta_params()) {
            request_meta(&bytes);
        }

        #[test]
        fn configs(bytes in config_text()) {
            config(&bytes);
        }
    }

    proptest! {
        // Each case applies twice and checks the whole database: fewer.
        #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

        #[test]
        fn changesets(bytes in mangled_frame()) {
            changeset_apply(&bytes);
        }

        #[test]
        fn frame_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            changeset_apply(&bytes);
        }
    }

    /// The changeset a primary records (the session extension over the
    /// tables the log records, foreign keys on) for `writes` run on the
    /// fixture; `every_table`: over every table, as no primary does.
    fn recorded(writes: &str, every_table: bool) -> (Vec<u8>, rusqlite::Connection) {
        let c = changeset_fixture();
        c.pragma_update(None, "foreign_keys", true).unwrap();
        let unrecorded = crate::replication::tables::unrecorded(&c).unwrap();
        let mut out = Vec::new();
        {
            let mut s = rusqlite::session::Session::new(&c).unwrap();
            if !every_table {
                s.table_filter(Some(move |t: &str| !unrecorded.contains(t)));
            }
            s.attach::<&str>(None).unwrap();
            c.execute_batch(writes).unwrap();
            s.changeset_strm(&mut out).unwrap();
        }
        (out, c)
    }

    /// What a primary writes, by the tables it touches.
    const HONEST: &[(&str, &str)] = &[
        (
            "memory_create",
            "INSERT INTO memory_entities (id, name, entity_type) VALUES (3, 'bob', 'person');
             INSERT INTO memory_observations (id, entity_id, content) VALUES (3, 3, 'reviews');
             INSERT INTO memory_relations (id, from_name, to_name, relation_type)
                 VALUES (2, 'bob', 'erlmcp', 'reviews');",
        ),
        (
            "memory_delete_cascades",
            "DELETE FROM memory_entities WHERE id = 2;
             DELETE FROM memory_relations WHERE to_name = 'erlmcp';
             DELETE FROM memory_observations WHERE id = 1;",
        ),
        (
            "session_open_and_initialize",
            "INSERT INTO sessions (id, protocol_version, client_info, capabilities, created_at,
                                   last_seen_at, principal)
                 VALUES ('s3', '2025-11-25', '{}', '{}', 3, 3, 'writer');
             UPDATE sessions SET initialized = 1, last_seen_at = 4, log_level = 'debug'
                 WHERE id = 's1';",
        ),
        (
            "session_end_cascades",
            "DELETE FROM sessions WHERE id = 's1';",
        ),
        (
            "sse_events_and_audit",
            "INSERT INTO sse_events (session_id, stream_id, seq, data, created_at)
                 VALUES ('s2', 0, 1, '{\"method\":\"notifications/tools/list_changed\"}', 5);
             DELETE FROM sse_events WHERE session_id = 's1' AND seq = 1;
             INSERT INTO audit_log (id, at_ms, session_id, kind, subject, outcome, duration_us,
                                    detail, principal, scope) VALUES (2, 5, 's2', 'tool',
                                    'create_entities', 'error', 7, 'input: missing entities',
                                    'writer', 'memory:write');
             DELETE FROM audit_log WHERE id = 1;",
        ),
        (
            "task_finishes",
            "UPDATE tasks SET status = 'completed', result = '{\"content\":[]}',
                 updated_at_ms = 2 WHERE id = 't1';
             INSERT INTO tasks (id, owner, session_id, runner, protocol_version, method, request,
                 client, status, created_at_ms, updated_at_ms, ttl_ms, expires_at_ms,
                 poll_interval_ms) VALUES ('t2', 's2', NULL, 'r1', '2025-11-25', 'tools/call',
                 '{}', '{}', 'working', 2, 2, 1000, 1002, 500);",
        ),
        (
            "kv",
            "UPDATE kv SET value = x'02' WHERE key = 'fixture';
             INSERT INTO kv (key, value) VALUES ('other', x'');",
        ),
        (
            "tokens",
            "INSERT INTO tokens (name, hash, scopes, created_at, expires_at)
                 VALUES ('writer', x'fedcba9876543210fedcba9876543210', 'memory:write', 2, 99);
             UPDATE tokens SET revoked_at = 3 WHERE name = 'reader';",
        ),
    ];

    /// Changes to tables the log never records: the log itself, the
    /// full-text index's storage, the table of entity types that triggers
    /// keep, the schema's down steps.
    const FORGED: &[(&str, &str)] = &[
        (
            "forged_log_entry",
            "INSERT INTO repl_log (seq, epoch, hash, at_ms, changeset)
                 VALUES (2, 1, x'00000000000000000000000000000000', 0, x'');",
        ),
        (
            "forged_fulltext_storage",
            "UPDATE memory_search_data SET block = x'00'
                 WHERE id = (SELECT max(id) FROM memory_search_data);",
        ),
        (
            "forged_entity_types",
            "UPDATE memory_types SET entities = 99;",
        ),
        ("forged_schema_downs", "DELETE FROM schema_downs;"),
    ];

    /// The seeds of `fuzz/corpus/changeset_apply/`: each changeset in an
    /// entry frame that chains after the fixture's log.
    fn changeset_seeds() -> Vec<(String, Vec<u8>)> {
        let at = repl_log::last(&changeset_fixture()).unwrap();
        HONEST
            .iter()
            .map(|(n, w)| (*n, w, false))
            .chain(FORGED.iter().map(|(n, w)| (*n, w, true)))
            .map(|(name, writes, every)| {
                let (changeset, _) = recorded(writes, every);
                let e = Entry {
                    seq: at.seq + 1,
                    epoch: 1,
                    hash: repl_log::chain(&at.hash, at.seq + 1, 1, &changeset),
                    at_ms: 1_700_000_000_000,
                    changeset,
                };
                (name.to_owned(), Frame::Entry(e).encode_binary().unwrap())
            })
            .collect()
    }

    fn applied(frame: &[u8]) -> (Result<(), String>, rusqlite::Connection) {
        let Ok(Frame::Entry(e)) = Frame::decode_binary(frame) else {
            panic!("not an entry frame");
        };
        let mut c = changeset_fixture();
        let tx = c.transaction().unwrap();
        let out = standby::apply_in(&tx, vec![e])
            .map(|_| ())
            .map_err(|e| e.to_string());
        tx.commit().unwrap();
        (out, c)
    }

    /// What a primary records applies on a standby and leaves the same
    /// rows (the full-text index by what it holds: its storage depends on
    /// the order changes arrive in; each node keeps its own log and record
    /// of its migrations).
    #[test]
    fn a_primarys_changesets_apply_on_a_standby() {
        let seeds = changeset_seeds();
        for (name, writes) in HONEST {
            let (changeset, primary) = recorded(writes, false);
            assert!(!changeset.is_empty(), "{name}");
            let frame = &seeds.iter().find(|(n, _)| n == name).unwrap().1;
            let (out, standby) = applied(frame);
            assert_eq!(out, Ok(()), "{name}");
            let (mut p, mut s) = (table_digests(&primary), table_digests(&standby));
            for t in [
                "repl_log",
                "schema_downs",
                "memory_search_data",
                "memory_search_idx",
            ] {
                p.remove(t);
                s.remove(t);
            }
            assert_eq!(p, s, "{name}: the standby's rows differ");
            changeset_apply(frame);
        }
    }

    /// A changeset naming a table the log does not record is refused as a
    /// whole, before anything of it is applied.
    #[test]
    fn changes_to_tables_the_log_does_not_record_are_refused() {
        let seeds = changeset_seeds();
        for (name, _) in FORGED {
            let frame = &seeds.iter().find(|(n, _)| n == name).unwrap().1;
            let before = table_digests(&changeset_fixture());
            let (out, standby) = applied(frame);
            let err = out.expect_err(name);
            assert!(err.contains("not recorded"), "{name}: {err}");
            assert_eq!(table_digests(&standby), before, "{name}");
            changeset_apply(frame);
        }
    }

    /// Writes the seeds of `fuzz/corpus/changeset_apply/` (after a change
    /// of the fixture or the schema): `cargo nextest run --run-ignored only
    /// write_the_changeset_seeds`.
    #[test]
    #[ignore = "writes into the repository: run by hand"]
    fn write_the_changeset_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/changeset_apply");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, frame) in changeset_seeds() {
            std::fs::write(dir.join(name), frame).unwrap();
        }
    }

    /// A seed's entry frame, some bytes overwritten, cut short or followed
    /// by another seed's changeset.
    fn mangled_frame() -> impl Strategy<Value = Vec<u8>> {
        let seeds = changeset_seeds();
        let n = seeds.len();
        (
            0..n,
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            prop::option::of(any::<prop::sample::Index>()),
            prop::option::of(0..n),
        )
            .prop_map(move |(i, flips, cut, append)| {
                let mut f = seeds[i].1.clone();
                if let Some(j) = append {
                    // The other frame's changeset, after its 41-byte header.
                    f.extend_from_slice(&seeds[j].1[41..]);
                }
                for (at, b) in flips {
                    let k = at.index(f.len());
                    f[k] = b;
                }
                if let Some(cut) = cut {
                    f.truncate(cut.index(f.len() + 1));
                }
                f
            })
    }

    /// Every seed of the fuzz corpus passes (and crashes the fuzzer found
    /// once, kept there, stay fixed).
    #[test]
    fn the_seed_corpus_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 5] = [
            ("jsonrpc_envelope", jsonrpc_envelope),
            ("http_headers", http_headers),
            ("request_meta", request_meta),
            ("config", config),
            ("changeset_apply", changeset_apply),
        ];
        for (name, target) in targets {
            let dir = root.join(name);
            let mut seen = 0;
            for entry in
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                seen += 1;
            }
            assert!(seen > 0, "no seeds in {}", dir.display());
        }
    }
}
