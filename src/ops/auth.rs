//! Who may change state through the ops listener. Where the listener asks
//! for credentials (bound beyond loopback: any address outside 127.0.0.0/8
//! and ::1, the wildcard 0.0.0.0 included; or `ops.require_auth`), every
//! request but a GET needs `Authorization: Bearer` with a token of scope
//! `ops` or `*`; GETs too unless `ops.open_reads`. `/replication` is left
//! to its own shared secret.
//!
//! Two kinds of token are accepted: API tokens from the store
//! (`erlmcp token create --scope ops`), and the daemon's *local*
//! credential, a fresh random secret it writes at each start to
//! `<data_dir>/ops.token` (mode 0600). Whoever can read that file can read
//! the database anyway, so it proves as much as PostgreSQL's peer
//! authentication does: the command line on this host (keepalived's
//! `erlmcp role` hooks, `erlmcp backup`) keeps working with no token set up.
//!
//! Refusals and every authenticated state change are audited (kind `ops`).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use super::{ErrorBody, OpsState, json_response};
use crate::exit;
use crate::mcp::grant;
use crate::store::audit::AuditEntry;
use crate::store::tokens;
use crate::transport::http::auth::{self as bearer, Presented};

/// The local credential's file in the data directory.
pub(crate) const LOCAL_TOKEN_FILE: &str = "ops.token";
/// The principal the local credential stands for.
const LOCAL: &str = "local";

/// How the listener authenticates; fixed at start.
pub(crate) struct OpsAuth {
    /// Whether anything needs a token at all.
    pub(crate) required: bool,
    pub(crate) open_reads: bool,
    /// SHA-256 of the local credential.
    local: [u8; 32],
}

impl OpsAuth {
    /// Decides from the address the listener is actually bound to (a
    /// socket systemd passed may differ from `ops.listen`).
    pub(crate) fn new(bound: SocketAddr, require_auth: bool, open_reads: bool) -> OpsAuth {
        OpsAuth {
            required: require_auth || !bound.ip().is_loopback(),
            open_reads,
            local: [0; 32],
        }
    }

    /// Creates a fresh local credential and writes it (0600) for the
    /// command line; the previous one stops working.
    pub(crate) fn write_local(&mut self, data_dir: &Path) -> std::io::Result<PathBuf> {
        let secret = tokens::new_secret();
        let path = data_dir.join(LOCAL_TOKEN_FILE);
        let tmp = data_dir.join(format!(".{LOCAL_TOKEN_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(secret.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        self.local = tokens::digest(&secret);
        Ok(path)
    }

    fn is_local(&self, secret: &str) -> bool {
        self.local != [0; 32] && bool::from(tokens::digest(secret).ct_eq(&self.local))
    }
}

/// The middleware in front of every ops route.
pub(crate) async fn guard(
    State(state): State<Arc<OpsState>>,
    req: Request,
    next: Next,
) -> Response {
    let auth = &state.auth;
    let path = req.uri().path().to_owned();
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    // The peer's link carries the replication secret, checked there.
    if !auth.required || path == "/replication" || (read && auth.open_reads) {
        return next.run(req).await;
    }
    let what = format!("{} {path}", req.method());
    // A role change also accepts the replication secret, as it did
    // before tokens existed (ops::replication checks it again).
    let by_secret =
        path == "/replication/role" && super::replication::authorized(&state, req.headers());
    let principal = if by_secret {
        Ok("replication-secret".to_owned())
    } else {
        who(&state, req.headers()).await
    };
    let principal = match principal {
        Ok(p) => p,
        Err((status, challenge, message, principal)) => {
            audit(
                &state,
                &what,
                refusal_outcome(status),
                principal,
                Some(&message),
            );
            return refuse(status, &challenge, message);
        }
    };
    let r = next.run(req).await;
    if !read {
        let outcome = if r.status().is_success() {
            "ok".to_owned()
        } else {
            r.status().as_u16().to_string()
        };
        audit(&state, &what, &outcome, Some(principal), None);
    }
    r
}

type Refused = (StatusCode, String, String, Option<String>);

/// The principal a request's token stands for, with scope `ops`.
async fn who(state: &OpsState, headers: &axum::http::HeaderMap) -> Result<String, Refused> {
    let secret = match bearer::presented(headers) {
        Presented::Token(t) => t.to_owned(),
        Presented::Missing => {
            return Err((
                StatusCode::UNAUTHORIZED,
                "Bearer".into(),
                "this ops listener asks for a token with scope ops: pass --token-file or set ERLMCP_OPS_TOKEN".into(),
                None,
            ));
        }
        Presented::Malformed => {
            return Err((
                StatusCode::BAD_REQUEST,
                r#"Bearer error="invalid_request""#.into(),
                "malformed Authorization header".into(),
                None,
            ));
        }
    };
    if secret.len() <= tokens::MAX_SECRET_LEN && state.auth.is_local(&secret) {
        return Ok(LOCAL.to_owned());
    }
    let now = crate::clock::now_secs();
    let s = secret.clone();
    let found = state
        .server
        .store
        .read(move |c| {
            let verdict = tokens::verify(c, &s, now)?;
            let name = match &verdict {
                Err(tokens::Refusal::Expired | tokens::Refusal::Revoked) => tokens::name_of(c, &s)?,
                _ => None,
            };
            Ok((verdict, name))
        })
        .await;
    match found {
        Ok((Ok(t), _)) => {
            let g = grant::Grant::new(t.name, t.scopes);
            if g.has(grant::OPS) {
                Ok(g.principal)
            } else {
                Err((
                    StatusCode::FORBIDDEN,
                    r#"Bearer error="insufficient_scope", scope="ops""#.into(),
                    format!("token {} lacks scope ops", g.principal),
                    Some(g.principal),
                ))
            }
        }
        Ok((Err(why), name)) => Err((
            StatusCode::UNAUTHORIZED,
            format!(
                r#"Bearer error="invalid_token", error_description="{}""#,
                why.as_str()
            ),
            why.as_str().into(),
            name,
        )),
        Err(e) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            String::new(),
            format!("cannot check the token now: {e}"),
            None,
        )),
    }
}

fn refusal_outcome(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "insufficient_scope",
        StatusCode::BAD_REQUEST => "invalid_request",
        _ => "error",
    }
}

fn refuse(status: StatusCode, challenge: &str, message: String) -> Response {
    let code = if status == StatusCode::SERVICE_UNAVAILABLE {
        exit::TEMP_FAIL
    } else {
        exit::NO_PERM
    };
    let mut r = json_response(
        status,
        &ErrorBody {
            error: message,
            exit_code: code,
        },
    );
    if !challenge.is_empty()
        && let Ok(v) = HeaderValue::from_str(challenge)
    {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn audit(
    state: &OpsState,
    what: &str,
    outcome: &str,
    principal: Option<String>,
    detail: Option<&str>,
) {
    let store = &state.server.store;
    // A standby's store takes no local writes: the log says it instead.
    if store.is_read_only() {
        tracing::info!(
            what,
            outcome,
            principal = principal.as_deref().unwrap_or("-"),
            "ops request"
        );
        return;
    }
    let entry = AuditEntry::event("ops", what, outcome, detail, principal);
    crate::store::audit::record_batched(store, entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_asks_for_tokens() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(!OpsAuth::new(at("127.0.0.1:1"), false, true).required);
        assert!(!OpsAuth::new(at("127.0.0.2:1"), false, true).required);
        assert!(!OpsAuth::new(at("[::1]:1"), false, true).required);
        assert!(OpsAuth::new(at("127.0.0.1:1"), true, true).required);
        assert!(OpsAuth::new(at("0.0.0.0:1"), false, true).required);
        assert!(OpsAuth::new(at("[::]:1"), false, true).required);
        assert!(OpsAuth::new(at("10.0.0.5:1"), false, true).required);
    }

    #[test]
    fn the_local_credential_is_written_private_and_matches_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = OpsAuth::new("0.0.0.0:1".parse().unwrap(), false, true);
        assert!(!a.is_local(""), "nothing matches before it is written");
        let path = a.write_local(dir.path()).unwrap();
        let secret = std::fs::read_to_string(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(a.is_local(&secret));
        assert!(!a.is_local(&tokens::new_secret()));
        a.write_local(dir.path()).unwrap();
        assert!(!a.is_local(&secret), "a restart makes a new one");
    }
}
