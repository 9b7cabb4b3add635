//! OpenTelemetry traces, end to end: a real `erlmcp serve` exports over
//! OTLP/HTTP (protobuf) to a receiver in this test, which decodes each
//! request with the official protobuf definitions (`opentelemetry-proto`)
//! and checks the span tree a client's `traceparent` started.

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::pair::{TestDir, pair, wait_in_sync};
use common::{Server, Session, post_raw, signal, wait_exit};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One exported span, flattened with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    kind: i32,
    attrs: Vec<(String, String)>,
    resource: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn resource(&self, k: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn pairs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// An OTLP/HTTP receiver on loopback: POST /v1/traces with
/// `application/x-protobuf`, decoded with the official messages.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<usize>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(0));
        let (s, p) = (spans.clone(), posts.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |h: HeaderMap, body: Bytes| {
                let (s, p) = (s.clone(), p.clone());
                async move { receive(&h, &body, &s, &p) }
            }),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            port,
            spans,
            posts,
            _rt: rt,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    fn posts(&self) -> usize {
        *self.posts.lock().unwrap()
    }
}

fn receive(
    h: &HeaderMap,
    body: &[u8],
    spans: &Mutex<Vec<Got>>,
    posts: &Mutex<usize>,
) -> (StatusCode, Vec<u8>) {
    *posts.lock().unwrap() += 1;
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert_eq!(ct, "application/x-protobuf", "OTLP/HTTP protobuf");
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| pairs(&r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for sp in ss.spans {
                out.push(Got {
                    name: sp.name.clone(),
                    trace_id: hex::encode(&sp.trace_id),
                    span_id: hex::encode(&sp.span_id),
                    parent: hex::encode(&sp.parent_span_id),
                    kind: sp.kind,
                    attrs: pairs(&sp.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")
}

/// A memory write, sent with the client's `traceparent`.
fn create_entity(s: &Session, name: &str) {
    let mut h = s.headers();
    let tp = traceparent();
    h.push(("traceparent", &tp));
    let body = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": "create_entities", "arguments": { "entities": [
            { "name": name, "entityType": "probe", "observations": ["traced"] }] } } });
    let r = post_raw(&s.url, &h, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.result().get("isError").is_none() || r.result()["isError"] == false,
        "{}",
        r.body
    );
}

/// SIGTERM, and the daemon's clean exit (it flushes its spans first).
fn stop(child: &mut std::process::Child) {
    signal(child, libc::SIGTERM);
    assert_eq!(
        wait_exit(child, Duration::from_secs(30)),
        Some(0),
        "a clean exit"
    );
}

/// The request span of our `traceparent`, and its store spans.
fn request_tree(spans: &[Got]) -> (Got, Got, Got) {
    let ours: Vec<&Got> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let request = ours
        .iter()
        .find(|s| s.attr("mcp.method.name") == Some("tools/call"))
        .unwrap_or_else(|| panic!("no tools/call span in the client's trace: {spans:#?}"));
    let write = ours
        .iter()
        .find(|s| s.name == "store.write" && s.parent == request.span_id)
        .unwrap_or_else(|| panic!("no store.write child of the request: {spans:#?}"));
    let commit = ours
        .iter()
        .find(|s| s.name == "store.commit" && s.parent == write.span_id)
        .unwrap_or_else(|| panic!("no store.commit child of the write: {spans:#?}"));
    ((*request).clone(), (*write).clone(), (*commit).clone())
}

#[test]
fn a_tools_call_is_a_span_of_the_clients_trace_with_its_store_write() {
    let rx = Receiver::start();
    let endpoint = rx.endpoint();
    let mut server = Server::start_env(
        &[],
        &[
            ("ERLMCP_TRACING__OTLP_ENDPOINT", endpoint.as_str()),
            ("ERLMCP_TRACING__SERVICE_NAME", "erlmcp-under-test"),
        ],
    );
    let (s, _) = Session::open(&server.url(), "2025-11-25");
    create_entity(&s, "traced-entity");
    // A request without a traceparent starts a trace of its own.
    let r = post_raw(
        &s.url,
        &s.headers(),
        json!({ "jsonrpc": "2.0", "id": 8, "method": "tools/list" })
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    stop(&mut server.child);

    let spans = rx.spans();
    let (request, write, commit) = request_tree(&spans);
    assert_eq!(
        request.parent, CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(request.name, "tools/call create_entities");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.attr("gen_ai.tool.name"), Some("create_entities"));
    assert_eq!(request.attr("mcp.session.id"), Some(s.id.as_str()));
    assert_eq!(request.attr("jsonrpc.request.id"), Some("7"));
    assert_eq!(request.attr("mcp.outcome"), Some("ok"));
    assert_eq!(request.resource("service.name"), Some("erlmcp-under-test"));
    assert!(request.resource("service.version").is_some());
    assert!(
        write
            .attr("store.queue_wait_us")
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{write:?}"
    );
    assert!(commit.attr("store.group_jobs").is_some(), "{commit:?}");

    // Writes outside a request (the session's, at initialize) start no
    // trace of their own.
    for s in spans.iter().filter(|s| s.name.starts_with("store.")) {
        assert_ne!(s.parent, "", "a store span outside any request: {s:?}");
    }

    let list = spans
        .iter()
        .find(|s| s.attr("mcp.method.name") == Some("tools/list"))
        .expect("the tools/list span");
    assert_ne!(list.trace_id, TRACE_ID);
    assert_eq!(list.parent, "", "a root span");
}

#[test]
fn a_failed_request_is_an_error_span() {
    let rx = Receiver::start();
    let endpoint = rx.endpoint();
    let mut server =
        Server::start_env(&[], &[("ERLMCP_TRACING__OTLP_ENDPOINT", endpoint.as_str())]);
    let (s, _) = Session::open(&server.url(), "2025-11-25");
    let mut h = s.headers();
    let tp = traceparent();
    h.push(("traceparent", &tp));
    let body = json!({ "jsonrpc": "2.0", "id": 9, "method": "no/such/method" });
    let r = post_raw(&s.url, &h, body.to_string().as_bytes());
    assert_eq!(r.error_code(), -32601, "{}", r.body);
    stop(&mut server.child);
    let spans = rx.spans();
    let span = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(span.attr("mcp.outcome"), Some("error"));
    assert_eq!(span.attr("rpc.jsonrpc.error_code"), Some("-32601"));
}

#[test]
fn with_tracing_off_nothing_is_exported() {
    let rx = Receiver::start();
    let endpoint = rx.endpoint();
    // The OpenTelemetry SDK's own variable would point an exporter at the
    // receiver, were one built.
    let mut server = Server::start_env(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let (s, _) = Session::open(&server.url(), "2025-11-25");
    create_entity(&s, "untraced");
    stop(&mut server.child);
    assert_eq!(rx.posts(), 0, "nothing was exported: {:?}", rx.spans());
}

#[test]
fn a_sync_write_shows_the_wait_for_the_standby() {
    let rx = Receiver::start();
    let tmp = TestDir::new();
    let extra = format!(
        "mode = \"sync\"\n[tracing]\notlp_endpoint = \"{}\"\n",
        rx.endpoint()
    );
    let (mut a, mut b) = pair(tmp.path(), &extra);
    a.start();
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(30));
    let (s, _) = Session::open(&a.url(), "2025-11-25");
    create_entity(&s, "replicated");
    stop(a.child.as_mut().unwrap());
    let spans = rx.spans();
    let (request, _, commit) = request_tree(&spans);
    assert_eq!(request.resource("service.instance.id"), Some("a"));
    let wait = spans
        .iter()
        .find(|s| s.name == "replication.wait" && s.parent == commit.span_id)
        .unwrap_or_else(|| panic!("no replication.wait child of the commit: {spans:#?}"));
    assert_eq!(wait.trace_id, TRACE_ID);
    assert_eq!(wait.attr("replication.mode"), Some("sync"));
}

#[test]
fn an_endpoint_the_exporter_cannot_use_stops_the_start_with_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("ERLMCP_TRACING__OTLP_ENDPOINT", "http://bad host:4318")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "the configuration exit code");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracing.otlp_endpoint"), "{err}");
}
