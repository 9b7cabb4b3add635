//! Replication on the ops listener: the link to the peer (a WebSocket at
//! `/replication`, authenticated with the shared secret, carrying
//! [`Frame`]s), and `POST /replication/role`, what `erlmcp role` and
//! keepalived's notify hooks call. [`WsConnector`] is the other end: how
//! this node opens links to its peer.

use async_trait::async_trait;
use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Json, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::{ErrorBody, OpsState, json_response};
use crate::exit;
use crate::replication::ReplicationError;
use crate::replication::frame::Frame;
use crate::replication::peer::{Connector, Link, LinkError};

/// Frames queued per direction of a link.
const QUEUE: usize = 1024;
/// The largest frame accepted: a snapshot chunk or a big changeset.
const MAX_FRAME: usize = 64 << 20;

pub(super) fn routes() -> Router<Arc<OpsState>> {
    Router::new()
        .route("/replication", any(upgrade))
        .route("/replication/role", post(role))
}

/// The secret both nodes present; compared in constant time.
#[derive(Clone)]
pub(crate) struct Secret(Arc<Vec<u8>>);

impl Secret {
    /// Reads the credential file (trailing whitespace is not part of it).
    pub(crate) fn load(path: &Path) -> Result<Secret, String> {
        let raw = std::fs::read(path)
            .map_err(|e| format!("cannot read the replication secret {}: {e}", path.display()))?;
        let trimmed = raw.trim_ascii_end().to_vec();
        if trimmed.len() < 16 {
            return Err(format!(
                "the replication secret {} is shorter than 16 bytes",
                path.display()
            ));
        }
        Ok(Secret(Arc::new(trimmed)))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        // Equal-length digests: the comparison's time says nothing.
        let a = Sha256::digest(&self.0[..]);
        let b = Sha256::digest(presented);
        a.ct_eq(&b).into()
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", String::from_utf8_lossy(&self.0))
    }
}

pub(super) fn authorized(s: &OpsState, headers: &HeaderMap) -> bool {
    let Some(secret) = &s.secret else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|token| secret.matches(token))
}

fn refused(status: StatusCode, error: &str, code: u8) -> Response {
    json_response(
        status,
        &ErrorBody {
            error: error.to_owned(),
            exit_code: code,
        },
    )
}

async fn upgrade(
    State(s): State<Arc<OpsState>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(repl) = s.replication.clone() else {
        return refused(
            StatusCode::NOT_FOUND,
            "replication is not enabled here",
            exit::USAGE,
        );
    };
    if !authorized(&s, &headers) {
        tracing::warn!("a replication link was refused: wrong or missing secret");
        return refused(
            StatusCode::UNAUTHORIZED,
            "the replication secret is wrong or missing",
            exit::USAGE,
        );
    }
    ws.max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move { repl.accept(link(socket)).await })
        .into_response()
}

/// The body of `POST /replication/role`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RoleRequest {
    /// `primary` or `standby`.
    pub(crate) role: String,
    /// Promote even a standby that may lack acknowledged writes.
    #[serde(default)]
    pub(crate) force: bool,
}

/// What `POST /replication/role` answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RoleAnswer {
    pub(crate) role: String,
    pub(crate) epoch: u64,
}

async fn role(
    State(s): State<Arc<OpsState>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(req): Json<RoleRequest>,
) -> Response {
    let Some(repl) = s.replication.clone() else {
        return refused(
            StatusCode::NOT_FOUND,
            "replication is not enabled here",
            exit::USAGE,
        );
    };
    // The local keepalived and operator may change the role; from
    // elsewhere, only with the secret.
    if !from.ip().is_loopback() && !authorized(&s, &headers) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "changing the role from another host needs the replication secret",
            exit::USAGE,
        );
    }
    let out = match req.role.as_str() {
        "primary" => repl.promote(req.force).await,
        "standby" => repl.demote("asked to (erlmcp role standby)").await,
        other => {
            return refused(
                StatusCode::BAD_REQUEST,
                &format!("no role {other:?}: primary or standby"),
                exit::USAGE,
            );
        }
    };
    if let Ok(c) = &out {
        served_as(&s, c.role).await;
    }
    match out {
        Ok(c) => json_response(
            StatusCode::OK,
            &RoleAnswer {
                role: c.role.as_str().into(),
                epoch: c.epoch,
            },
        ),
        Err(e @ ReplicationError::NotInSync { .. }) => {
            refused(StatusCode::CONFLICT, &e.to_string(), exit::TEMP_FAIL)
        }
        Err(e) => refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
            exit::FAILURE,
        ),
    }
}

/// Waits (a few seconds at most) until the node serves MCP as `role`
/// says — a primary takes requests, a standby refuses them — so that
/// `erlmcp role` returns once the change is in effect, not merely decided.
async fn served_as(s: &OpsState, role: crate::replication::frame::Role) {
    use crate::replication::frame::Role;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let serving = s.server.refusal().is_none();
        if serving == (role == Role::Primary) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::warn!(
        role = role.as_str(),
        "the role changed but the node does not serve as such yet"
    );
}

/// Opens links to the peer's ops listener.
pub(crate) struct WsConnector {
    url: String,
    secret: Secret,
}

impl WsConnector {
    pub(crate) fn new(peer: &str, secret: Secret) -> WsConnector {
        WsConnector {
            url: format!("ws://{peer}/replication"),
            secret,
        }
    }
}

#[async_trait]
impl Connector for WsConnector {
    async fn connect(&self) -> Result<Link, LinkError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        let auth = self
            .secret
            .bearer()
            .parse()
            .map_err(|_| LinkError::Connect("the secret is not a valid header value".into()))?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        // No Nagle: a sync write waits for this link's round trip.
        let connecting = tokio_tungstenite::connect_async_with_config(req, Some(config), true);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(3), connecting)
            .await
            .map_err(|_| LinkError::Timeout(Duration::from_secs(3)))?
            .map_err(|e| LinkError::Connect(e.to_string()))?;
        Ok(link(ws))
    }
}

/// What a WebSocket message is to the link.
enum Seen {
    Frame(Frame),
    Skip,
    Close,
}

/// The two WebSocket libraries' message types, as the link needs them.
trait WsMessage: Sized + Send + 'static {
    fn of(f: Frame) -> Option<Self>;
    fn seen(self) -> Seen;
}

fn decoded(f: Result<Frame, crate::replication::frame::FrameError>) -> Seen {
    match f {
        Ok(f) => Seen::Frame(f),
        Err(e) => {
            tracing::warn!(error = %e, "closing a replication link");
            Seen::Close
        }
    }
}

impl WsMessage for Message {
    fn of(f: Frame) -> Option<Self> {
        match (f.encode_binary(), f.encode_text()) {
            (Some(b), _) => Some(Message::Binary(b.into())),
            (None, Some(t)) => Some(Message::Text(t.into())),
            (None, None) => None,
        }
    }

    fn seen(self) -> Seen {
        match self {
            Message::Binary(b) => decoded(Frame::decode_binary(&b)),
            Message::Text(t) => decoded(Frame::decode_text(t.as_str())),
            Message::Close(_) => Seen::Close,
            _ => Seen::Skip,
        }
    }
}

impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn of(f: Frame) -> Option<Self> {
        use tokio_tungstenite::tungstenite::Message as M;
        match (f.encode_binary(), f.encode_text()) {
            (Some(b), _) => Some(M::Binary(b.into())),
            (None, Some(t)) => Some(M::Text(t.into())),
            (None, None) => None,
        }
    }

    fn seen(self) -> Seen {
        use tokio_tungstenite::tungstenite::Message as M;
        match self {
            M::Binary(b) => decoded(Frame::decode_binary(&b)),
            M::Text(t) => decoded(Frame::decode_text(t.as_str())),
            M::Close(_) => Seen::Close,
            _ => Seen::Skip,
        }
    }
}

/// Turns a WebSocket into a link: two pumps, one per direction; either
/// side closing ends both.
fn link<S, M, E>(ws: S) -> Link
where
    S: futures::Stream<Item = Result<M, E>> + futures::Sink<M> + Send + 'static,
    M: WsMessage,
    E: Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(QUEUE);
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m.seen() {
                Seen::Frame(f) => {
                    if in_tx.send(f).await.is_err() {
                        break;
                    }
                }
                Seen::Skip => {}
                Seen::Close => break,
            }
        }
    });
    tokio::spawn(async move {
        while let Some(f) = out_rx.recv().await {
            let Some(m) = M::of(f) else { continue };
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    Link {
        tx: out_tx,
        rx: in_rx,
    }
}
