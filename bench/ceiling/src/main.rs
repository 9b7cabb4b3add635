//! The load generator's ceiling: a bare hyper HTTP/1.1 server (and a bare
//! stdio loop) that answers every JSON-RPC request with a canned response.
//!
//! It speaks just enough MCP for the load generator's handshake: `initialize`
//! gets a canned result and an `Mcp-Session-Id`, notifications get `202`,
//! every other request gets the `test_simple_text` result with the request's
//! id echoed. No parsing beyond finding `"id":` and the method name, no
//! session table, no allocation beyond hyper's own and the response buffer.
//! Whatever rate the load generator reaches against this is the most it can
//! measure on this machine.
//!
//! ```text
//! ceiling http --listen 127.0.0.1:PORT [--sse] [--threads N]
//! ceiling stdio
//! ```

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode,
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

const INIT_RESULT: &str = r#""result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"ceiling","version":"0.1.0"}}}"#;
const CALL_RESULT: &str = r#""result":{"content":[{"type":"text","text":"This is a simple text response for testing."}]}}"#;
const LIST_RESULT: &str = r#""result":{"tools":[{"name":"test_simple_text","description":"Tests simple text content response","inputSchema":{"type":"object","properties":{}}}]}}"#;

/// The raw text of the request's `"id":` value, if any (a notification has none).
fn find_id(body: &[u8]) -> Option<&[u8]> {
    let at = memchr::memmem::find(body, b"\"id\":")? + 5;
    let rest = &body[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[start..];
    let end = if rest.first() == Some(&b'"') {
        1 + memchr::memchr(b'"', &rest[1..])? + 1
    } else {
        rest.iter()
            .position(|b| matches!(b, b',' | b'}' | b' ' | b'\n'))
            .unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

/// The canned response to one request line or body, `None` for a notification.
fn answer(body: &[u8]) -> Option<(BytesMut, bool)> {
    let id = find_id(body)?;
    let is_init = memchr::memmem::find(body, b"\"initialize\"").is_some();
    let result = if is_init {
        INIT_RESULT
    } else if memchr::memmem::find(body, b"\"tools/list\"").is_some() {
        LIST_RESULT
    } else {
        CALL_RESULT
    };
    let mut out = BytesMut::with_capacity(64 + result.len());
    out.put_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.put_slice(id);
    out.put_u8(b',');
    out.put_slice(result.as_bytes());
    Some((out, is_init))
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    sse: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let Some((json, is_init)) = answer(&body) else {
        return Ok(status(StatusCode::ACCEPTED));
    };
    let mut resp = if sse {
        let mut framed = BytesMut::with_capacity(json.len() + 24);
        framed.put_slice(b"event: message\ndata: ");
        framed.put_slice(&json);
        framed.put_slice(b"\n\n");
        let mut r = Response::new(Full::new(framed.freeze()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r
    } else {
        let mut r = Response::new(Full::new(json.freeze()));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    if is_init {
        resp.headers_mut().insert(
            "mcp-session-id",
            HeaderValue::from_static("ceiling-session"),
        );
    }
    Ok(resp)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

async fn serve_http(listen: String, sse: bool) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "ceiling listening on http://{}/mcp sse={sse}",
        listener.local_addr()?
    );
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service_fn(move |r| handle(r, sse)))
                .await;
        });
    }
}

async fn serve_stdio() -> std::io::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = BufWriter::new(tokio::io::stdout());
    loop {
        // Flush only when no further input is already buffered: pipelined
        // requests are answered in batches, as a real server would.
        let line = match lines.next_line().await? {
            Some(l) => l,
            None => break,
        };
        if let Some((json, _)) = answer(line.as_bytes()) {
            out.write_all(&json).await?;
            out.write_all(b"\n").await?;
        }
        if lines.get_ref().buffer().is_empty() {
            out.flush().await?;
        }
    }
    out.flush().await
}

fn usage() -> ! {
    eprintln!("usage: ceiling http --listen ADDR [--sse] [--threads N] | ceiling stdio");
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut listen = "127.0.0.1:8000".to_string();
    let (mut sse, mut threads) = (false, 1usize);
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--listen" => listen = it.next().cloned().unwrap_or_else(|| usage()),
            "--sse" => sse = true,
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    match args.first().map(String::as_str) {
        Some("http") => rt.block_on(serve_http(listen, sse)),
        Some("stdio") => rt.block_on(serve_stdio()),
        _ => usage(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_numeric_and_string_ids() {
        assert_eq!(find_id(br#"{"jsonrpc":"2.0","id":42,"method":"x"}"#), Some(&b"42"[..]));
        assert_eq!(find_id(br#"{"id": "a-1"}"#), Some(&br#""a-1""#[..]));
        assert_eq!(find_id(br#"{"method":"notifications/initialized"}"#), None);
    }
}
