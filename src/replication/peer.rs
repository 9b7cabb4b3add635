//! The connection to the other node: a duplex channel of [`Frame`]s. How
//! it is carried (a WebSocket on the ops listener, authenticated with the
//! shared secret) is the ops layer's business; it hands replication a
//! [`Connector`] for outgoing links and a [`Link`] per incoming one.

use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::mpsc;

use super::frame::{Control, Frame};

pub(crate) struct Link {
    pub(crate) tx: mpsc::Sender<Frame>,
    pub(crate) rx: mpsc::Receiver<Frame>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("the peer closed the link")]
    Closed,
    #[error("the peer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the peer sent {0} where {1} was expected")]
    Unexpected(String, &'static str),
    #[error("cannot reach the peer: {0}")]
    Connect(String),
}

impl Link {
    pub(crate) async fn send(&self, f: Frame) -> Result<(), LinkError> {
        self.tx.send(f).await.map_err(|_| LinkError::Closed)
    }

    pub(crate) async fn control(&self, c: Control) -> Result<(), LinkError> {
        self.send(Frame::Control(c)).await
    }

    /// The next frame, within `limit`.
    pub(crate) async fn recv(&mut self, limit: Duration) -> Result<Frame, LinkError> {
        match tokio::time::timeout(limit, self.rx.recv()).await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(LinkError::Closed),
            Err(_) => Err(LinkError::Timeout(limit)),
        }
    }

    /// The next frame, which must be a control message.
    pub(crate) async fn recv_control(&mut self, limit: Duration) -> Result<Control, LinkError> {
        match self.recv(limit).await? {
            Frame::Control(c) => Ok(c),
            other => Err(LinkError::Unexpected(
                format!("{other:?}").chars().take(40).collect(),
                "a control message",
            )),
        }
    }
}

/// Opens links to the peer.
#[async_trait]
pub(crate) trait Connector: Send + Sync {
    async fn connect(&self) -> Result<Link, LinkError>;
}
