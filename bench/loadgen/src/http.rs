//! Streamable HTTP client: one HTTP/1.1 keep-alive connection per simulated
//! session (hyper's low-level `client::conn`, TCP_NODELAY), the MCP handshake,
//! and a minimal SSE reader.
//!
//! A request's latency ends when its response body has been read to the end
//! (for SSE, when the server closes the POST's stream after the response
//! event): that is when a sequential client can send its next request on the
//! connection.

use std::{net::SocketAddr, sync::Arc};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode, Uri,
    client::conn::http1::{self, SendRequest},
    header::{ACCEPT, CONTENT_TYPE, HOST, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::rpc::{self, Class};

static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Where to send: resolved once, shared by every session.
pub struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    path: Uri,
}

impl Target {
    pub fn parse(url: &str) -> Result<Arc<Self>, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad --url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// URLs (plain HTTP/1.1 on loopback)".into());
        }
        let auth = uri.authority().ok_or("URL without host")?.clone();
        let port = auth.port_u16().unwrap_or(80);
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let ip = if host == "localhost" {
            "127.0.0.1".parse().unwrap()
        } else {
            host.parse()
                .map_err(|_| format!("host {host} must be an IP address"))?
        };
        if !std::net::IpAddr::is_loopback(&ip) {
            return Err(format!("refusing non-loopback target {ip}"));
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap();
        Ok(Arc::new(Self {
            addr: SocketAddr::new(ip, port),
            host: HeaderValue::from_str(auth.as_str()).map_err(|e| e.to_string())?,
            path,
        }))
    }
}

#[derive(Debug)]
pub enum Error {
    /// Connection-level failure: the caller reconnects.
    Transport(String),
    /// A non-2xx status.
    Status(StatusCode),
    /// 2xx, but no JSON-RPC response with our id in the body.
    NoResponse,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Transport(e) => write!(f, "transport: {e}"),
            Error::Status(s) => write!(f, "HTTP {s}"),
            Error::NoResponse => write!(f, "no JSON-RPC response with our id in the body"),
        }
    }
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

/// One keep-alive connection.
pub struct Conn {
    target: Arc<Target>,
    sender: SendRequest<Full<Bytes>>,
    buf: BytesMut,
    scratch: Vec<u8>,
    version: HeaderValue,
    send_version: bool,
    pub last_was_sse: bool,
    /// Whether the server answered `initialize` with an SSE stream.
    pub init_sse: bool,
}

/// What a POST of a request got back.
pub struct Reply {
    pub ok: bool,
    pub session_id: Option<HeaderValue>,
}

impl Conn {
    pub async fn connect(target: Arc<Target>) -> Result<Self, Error> {
        let sender = Self::dial(&target).await?;
        Ok(Self {
            target,
            sender,
            buf: BytesMut::with_capacity(4096),
            scratch: Vec::with_capacity(1024),
            version: HeaderValue::from_static(rpc::PROTOCOL_VERSION),
            send_version: false,
            last_was_sse: false,
            init_sse: false,
        })
    }

    async fn dial(target: &Target) -> Result<SendRequest<Full<Bytes>>, Error> {
        let tcp = TcpStream::connect(target.addr).await.map_err(transport)?;
        tcp.set_nodelay(true).map_err(transport)?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(transport)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    pub async fn reconnect(&mut self) -> Result<(), Error> {
        self.sender = Self::dial(&self.target).await?;
        Ok(())
    }

    /// POSTs `body`. With `want = Some(id)`, reads the body (JSON or SSE) and
    /// returns whether it held a successful response to `id`; with `None`
    /// (a notification) any 2xx is success and the body is discarded.
    pub async fn post(
        &mut self,
        body: Bytes,
        session: Option<&HeaderValue>,
        want: Option<u64>,
    ) -> Result<Reply, Error> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.target.path.clone();
        let h = req.headers_mut();
        h.insert(HOST, self.target.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        if let Some(s) = session {
            h.insert(MCP_SESSION_ID.clone(), s.clone());
        }
        if self.send_version {
            h.insert(MCP_PROTOCOL_VERSION.clone(), self.version.clone());
        }
        self.sender.ready().await.map_err(transport)?;
        let resp = self.sender.send_request(req).await.map_err(transport)?;
        let status = resp.status();
        let session_id = resp.headers().get(&MCP_SESSION_ID).cloned();
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let mut body = resp.into_body();
        self.buf.clear();
        let mut found: Option<bool> = None;
        let mut consumed = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(transport)?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
                if is_sse && want.is_some() {
                    consumed += sse_events(&self.buf[consumed..], &mut self.scratch, |data| {
                        if let Class::Response { id, ok } = rpc::classify(data) {
                            if Some(id) == want && found.is_none() {
                                found = Some(ok);
                            }
                        }
                    });
                }
            }
        }
        if !status.is_success() {
            return Err(Error::Status(status));
        }
        self.last_was_sse = is_sse;
        let Some(want) = want else {
            return Ok(Reply {
                ok: true,
                session_id,
            });
        };
        if !is_sse {
            found = match rpc::classify(&self.buf) {
                Class::Response { id, ok } if id == want => Some(ok),
                _ => None,
            };
        }
        match found {
            Some(ok) => Ok(Reply { ok, session_id }),
            None => Err(Error::NoResponse),
        }
    }

    /// `GET` the endpoint without a session: any HTTP status will do.
    pub async fn probe(&mut self) -> Result<StatusCode, Error> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = self.target.path.clone();
        req.headers_mut().insert(HOST, self.target.host.clone());
        req.headers_mut()
            .insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        self.sender.ready().await.map_err(transport)?;
        let resp = self.sender.send_request(req).await.map_err(transport)?;
        Ok(resp.status())
    }

    /// The body of the last reply: the JSON, or the SSE stream's raw text.
    pub fn last_body(&self) -> &[u8] {
        &self.buf
    }

    /// Opens a new MCP session on this connection: `initialize`, then
    /// `notifications/initialized`. Returns the session id (None for a
    /// stateless server).
    pub async fn handshake(&mut self) -> Result<Option<HeaderValue>, Error> {
        self.send_version = false;
        let reply = self.post(rpc::initialize_body(1), None, Some(1)).await?;
        if !reply.ok {
            return Err(Error::NoResponse);
        }
        self.init_sse = self.last_was_sse;
        let init_json = if self.last_was_sse {
            let mut json = Vec::new();
            let buf = self.buf.clone();
            sse_events(&buf, &mut self.scratch, |d| {
                if matches!(rpc::classify(d), Class::Response { id: 1, .. }) {
                    json = d.to_vec();
                }
            });
            json
        } else {
            self.buf.to_vec()
        };
        if let Some(v) = rpc::negotiated_version(&init_json) {
            if let Ok(h) = HeaderValue::from_str(&v) {
                self.version = h;
            }
        }
        // From here on every request carries MCP-Protocol-Version.
        self.send_version = true;
        let sid = reply.session_id;
        self.post(Bytes::from_static(rpc::INITIALIZED), sid.as_ref(), None)
            .await?;
        Ok(sid)
    }
}

/// Parses the complete SSE events at the front of `buf`, calling `on_data`
/// with each event's data (multi-line data joined by `\n`); returns how many
/// bytes were consumed. Events without data (priming, keep-alive comments)
/// are skipped.
pub fn sse_events(buf: &[u8], scratch: &mut Vec<u8>, mut on_data: impl FnMut(&[u8])) -> usize {
    let mut consumed = 0;
    let mut line_start = 0;
    let mut has_data = false;
    scratch.clear();
    while let Some(nl) = memchr::memchr(b'\n', &buf[line_start..]) {
        let line_end = line_start + nl;
        let mut line = &buf[line_start..line_end];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        line_start = line_end + 1;
        if line.is_empty() {
            if has_data && !scratch.is_empty() {
                on_data(scratch);
            }
            scratch.clear();
            has_data = false;
            consumed = line_start;
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if has_data {
                scratch.push(b'\n');
            }
            scratch.extend_from_slice(rest);
            has_data = true;
        }
    }
    consumed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_reader_handles_priming_multiline_and_partial_events() {
        let stream = b"id: 0\nretry: 3000\ndata:\n\n: comment\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: {\"partial\"";
        let mut seen = Vec::new();
        let mut scratch = Vec::new();
        let used = sse_events(stream, &mut scratch, |d| seen.push(d.to_vec()));
        assert_eq!(seen, vec![b"{\"a\":\n1}".to_vec()]);
        assert_eq!(&stream[used..], b"data: {\"partial\"");
    }

    #[test]
    fn target_refuses_non_loopback() {
        assert!(Target::parse("http://127.0.0.1:9/mcp").is_ok());
        assert!(Target::parse("http://localhost:9/mcp").is_ok());
        assert!(Target::parse("http://10.0.0.1:9/mcp").is_err());
    }
}
