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
//!
//! Replication adds `changeset_apply` (applying a changeset received from
//! the primary to a scratch database): an entry point here, a target in
//! `fuzz/fuzz_targets/`, seeds in `fuzz/corpus/changeset_apply/`, and a
//! line in `fuzz/run`.

use serde_json::Value;
use serde_json::value::RawValue;
use std::net::{IpAddr, SocketAddr};

use crate::config::Config;
use crate::mcp::catalog::HeaderParam;
use crate::mcp::error::{INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION};
use crate::mcp::jsonrpc::{self, Incoming};
use crate::mcp::meta::RequestMeta;
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
            let ClientKey::Address(masked) = &key;
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

    /// Every seed of the fuzz corpus passes (and crashes the fuzzer found
    /// once, kept there, stay fixed).
    #[test]
    fn the_seed_corpus_passes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 4] = [
            ("jsonrpc_envelope", jsonrpc_envelope),
            ("http_headers", http_headers),
            ("request_meta", request_meta),
            ("config", config),
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
