//! Talking to a running daemon's ops listener (`erlmcp status`, and the
//! backup commands when a daemon runs).

use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no erlmcp daemon answers on {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the daemon on {addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: u16,
        body: String,
    },
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn finish(
    addr: SocketAddr,
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<serde_json::Value, ClientError> {
    let resp = r.map_err(|e| ClientError::Unreachable {
        addr,
        reason: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .read_to_string()
        .map_err(|e| ClientError::Unreachable {
            addr,
            reason: e.to_string(),
        })?;
    if !(200..300).contains(&status) {
        return Err(ClientError::Status { addr, status, body });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::Status {
        addr,
        status,
        body: format!("not JSON ({e}): {body}"),
    })
}

pub fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    finish(
        addr,
        agent(timeout).get(&format!("http://{addr}{path}")).call(),
    )
}

pub fn post(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    finish(
        addr,
        agent(timeout)
            .post(&format!("http://{addr}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes()),
    )
}
