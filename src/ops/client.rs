//! The command line's side of a daemon's ops listener: one HTTP request,
//! a JSON answer read into the type the endpoint serializes, or the
//! endpoint's [`ErrorBody`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use thiserror::Error;

use super::ErrorBody;
use crate::exit;

/// How long the command line waits to reach the listener before deciding
/// there is no daemon.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub(crate) enum ClientError {
    #[error("cannot reach the daemon's ops listener at {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    /// The daemon refused or failed, and said why.
    #[error("{}", .body.error)]
    Refused { body: ErrorBody },
    #[error("the daemon at {addr} answered {status}: {body}")]
    Unexpected {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
}

impl ClientError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => exit::TEMP_FAIL,
            ClientError::Refused { body } => body.exit_code,
            ClientError::Unexpected { .. } => exit::FAILURE,
        }
    }
}

/// A client of the ops listener at one address.
pub(crate) struct OpsClient {
    addr: SocketAddr,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer` on every call.
    token: Option<String>,
}

impl OpsClient {
    /// `timeout` bounds a whole call; `None` for calls that may take
    /// minutes (a backup of a large database).
    pub(crate) fn new(addr: SocketAddr, timeout: Option<Duration>) -> OpsClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(timeout)
            .build()
            .into();
        OpsClient {
            addr,
            agent,
            token: None,
        }
    }

    /// Presents `token` (a listener beyond loopback asks for one with
    /// scope `ops` before any change; see `ops::auth`).
    pub(crate) fn with_token(mut self, token: Option<String>) -> OpsClient {
        self.token = token;
        self
    }

    /// True when something accepts connections at the address.
    pub(crate) fn answers(&self) -> bool {
        TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).is_ok()
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.agent.get(&self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    /// A 2xx answer's body as text (`/metrics`), kept as it came.
    pub(crate) fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let addr = self.addr;
        let unreachable = |e: ureq::Error| ClientError::Unreachable {
            addr,
            reason: e.to_string(),
        };
        let resp = self
            .agent
            .get(&self.url(path))
            .call()
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().map_err(unreachable)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(ClientError::Unexpected {
                addr,
                status,
                body: text,
            })
        }
    }

    pub(crate) fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("request bodies are plain data");
        let mut req = self
            .agent
            .post(&self.url(path))
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.send(&body[..]))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let addr = self.addr;
        let unreachable = |e: ureq::Error| ClientError::Unreachable {
            addr,
            reason: e.to_string(),
        };
        let resp = r.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().map_err(unreachable)?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| ClientError::Unexpected {
                addr,
                status,
                body: format!("not the expected answer ({e}): {text}"),
            });
        }
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Refused { body }),
            Err(_) => Err(ClientError::Unexpected {
                addr,
                status,
                body: text,
            }),
        }
    }
}
