//! Who is calling `/mcp` when `auth.mode = "tokens"`: the bearer token of
//! each request, looked up in the store every time (a revoked or expired
//! token is refused from the next request on; a look-up is one indexed
//! read). The answers follow RFC 6750:
//!
//! - no `Authorization`, or another scheme: 401 `WWW-Authenticate: Bearer`;
//! - `Bearer` with nothing usable after it (empty, spaces, characters a
//!   token68 cannot hold): 400 `error="invalid_request"`;
//! - a well-formed token that is unknown, expired, revoked or too long:
//!   401 `error="invalid_token"`;
//! - a request beyond the token's scopes (a tool, prompt, resource or
//!   completion; see [`crate::mcp::reach`]): 403
//!   `error="insufficient_scope"` naming the scope (see [`forbidden`]).
//!
//! Every refusal is audited (kind `auth`, or `tool` for a scope refusal),
//! with the token's name when one was recognised.
//!
//! `auth.mode = "oauth"` ([`authenticate_oauth`]) answers the same way, and
//! every challenge also carries `resource_metadata="<url>"` (RFC 9728 §5.1)
//! so an MCP client can discover the authorization server; a request with
//! no token also gets a `scope` hint. When the issuer's signing keys cannot
//! be fetched and none are cached, the answer is 503 with `Retry-After`
//! (the token may be good: the client should retry, not re-authorize).

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use std::sync::Arc;

use super::json_error;
use super::oauth::{Rejection, Verifier};
use crate::mcp::error::McpError;
use crate::mcp::grant::Grant;
use crate::mcp::jsonrpc::RequestId;
use crate::mcp::reach::Needed;
use crate::store::audit::AuditEntry;
use crate::store::{Store, tokens};

/// The token in `Authorization: Bearer <token>`, or why there is none.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    Token(&'a str),
    /// No credential, or one of another scheme.
    Missing,
    /// `Bearer` with no usable token.
    Malformed,
}

pub(crate) fn presented(headers: &HeaderMap) -> Presented<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Presented::Missing;
    };
    if values.next().is_some() {
        // Two credentials: which one counts is anybody's guess.
        return Presented::Malformed;
    }
    let Ok(value) = value.to_str() else {
        return Presented::Malformed;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Presented::Missing;
    }
    let token = rest.trim_matches(' ');
    let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if token.is_empty() || !token.bytes().all(token68) {
        return Presented::Malformed;
    }
    Presented::Token(token)
}

/// What a request's credential came to.
pub(crate) enum Checked {
    Granted(Arc<Grant>),
    Refused(Response),
}

/// Authenticates one request; `what` names it in the audit log.
pub(crate) async fn authenticate(store: &Store, headers: &HeaderMap, what: &str) -> Checked {
    let token = match presented(headers) {
        Presented::Token(t) => t.to_owned(),
        Presented::Missing => {
            audit(store, what, "unauthenticated", None, None);
            return Checked::Refused(challenge(
                StatusCode::UNAUTHORIZED,
                "Bearer",
                "authentication required: Authorization: Bearer <token>",
            ));
        }
        Presented::Malformed => {
            audit(store, what, "invalid_request", None, None);
            return Checked::Refused(challenge(
                StatusCode::BAD_REQUEST,
                r#"Bearer error="invalid_request", error_description="malformed Authorization header""#,
                "malformed Authorization header",
            ));
        }
    };
    if token.len() > tokens::MAX_SECRET_LEN {
        return invalid(store, what, tokens::Refusal::Unknown, None);
    }
    let now = crate::clock::now_secs();
    let secret = token.clone();
    let looked_up = store.read(move |c| tokens::verify(c, &secret, now)).await;
    match looked_up {
        Ok(Ok(t)) => Checked::Granted(Arc::new(Grant::new(t.name, t.scopes))),
        Ok(Err(why)) => {
            // The name of an expired or revoked token is worth knowing.
            let name = match why {
                tokens::Refusal::Unknown => None,
                _ => named(store, &token).await,
            };
            invalid(store, what, why, name)
        }
        Err(e) => {
            tracing::warn!(error = %e, "token look-up failed");
            Checked::Refused(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &McpError::internal("cannot check the token now; try again"),
            ))
        }
    }
}

/// Authenticates one request against an OAuth authorization server's
/// tokens; `toolsets` give the default scope hint.
pub(crate) async fn authenticate_oauth(
    store: &Store,
    verifier: &Verifier,
    toolsets: &[&str],
    headers: &HeaderMap,
    what: &str,
) -> Checked {
    let metadata = verifier.resource_metadata_url();
    let token = match presented(headers) {
        Presented::Token(t) => t,
        Presented::Missing => {
            audit(store, what, "unauthenticated", None, None);
            let scopes = verifier.scopes_supported(toolsets).join(" ");
            return Checked::Refused(challenge(
                StatusCode::UNAUTHORIZED,
                &format!(r#"Bearer resource_metadata="{metadata}", scope="{scopes}""#),
                "authentication required: Authorization: Bearer <access token>",
            ));
        }
        Presented::Malformed => {
            audit(store, what, "invalid_request", None, None);
            return Checked::Refused(challenge(
                StatusCode::BAD_REQUEST,
                &format!(
                    r#"Bearer error="invalid_request", error_description="malformed Authorization header", resource_metadata="{metadata}""#
                ),
                "malformed Authorization header",
            ));
        }
    };
    match verifier.verify(token).await {
        Ok(v) => Checked::Granted(Arc::new(v.into_grant())),
        Err(Rejection::Invalid(why)) => {
            audit(store, what, "invalid_token", None, Some(&why));
            let shown = header_safe(&why);
            Checked::Refused(challenge(
                StatusCode::UNAUTHORIZED,
                &format!(
                    r#"Bearer error="invalid_token", error_description="{shown}", resource_metadata="{metadata}""#
                ),
                &why,
            ))
        }
        Err(e @ Rejection::Unavailable(_)) => {
            tracing::warn!(error = %e, "OAuth token refused: no signing keys");
            audit(store, what, "unavailable", None, Some(&e.to_string()));
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                &McpError::internal("cannot check the access token now; try again"),
            );
            let retry = verifier.config.jwks_refetch_secs.to_string();
            if let Ok(v) = HeaderValue::from_str(&retry) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Checked::Refused(r)
        }
    }
}

/// `s` as an RFC 6750 `error_description` may hold it.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '?',
        })
        .collect()
}

/// The name of the token a secret belongs to, whatever its state.
async fn named(store: &Store, secret: &str) -> Option<String> {
    let secret = secret.to_owned();
    store
        .read(move |c| tokens::name_of(c, &secret))
        .await
        .ok()
        .flatten()
}

fn invalid(store: &Store, what: &str, why: tokens::Refusal, name: Option<String>) -> Checked {
    audit(store, what, "invalid_token", name, Some(why.as_str()));
    Checked::Refused(challenge(
        StatusCode::UNAUTHORIZED,
        &format!(
            r#"Bearer error="invalid_token", error_description="{}""#,
            why.as_str()
        ),
        why.as_str(),
    ))
}

/// The 403 of a request beyond the token's scopes; in OAuth mode it
/// points to the resource metadata too (the client may step up).
pub(crate) fn forbidden(
    id: &RequestId,
    needed: &Needed,
    resource_metadata: Option<&str>,
) -> Response {
    let mut r = json_error(StatusCode::FORBIDDEN, Some(id), &needed.error());
    // A URI can hold what a quoted-string cannot: the description is
    // only a courtesy, the scope is what the client acts on.
    let description: String = needed
        .description()
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                '?'
            } else {
                c
            }
        })
        .collect();
    let metadata = resource_metadata
        .map(|m| format!(r#", resource_metadata="{m}""#))
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&format!(
        r#"Bearer error="insufficient_scope", scope="{}", error_description="{description}"{metadata}"#,
        needed.scope
    )) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn challenge(status: StatusCode, www_authenticate: &str, message: &str) -> Response {
    let mut r = json_error(status, None, &McpError::invalid_request(message));
    if let Ok(v) = HeaderValue::from_str(www_authenticate) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn audit(
    store: &Store,
    what: &str,
    outcome: &str,
    principal: Option<String>,
    detail: Option<&str>,
) {
    let entry = AuditEntry::event("auth", what, outcome, detail, principal);
    crate::store::audit::record_batched(store, entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn the_bearer_token_is_read_strictly() {
        assert_eq!(presented(&with(&[])), Presented::Missing);
        assert_eq!(presented(&with(&[b"Basic YTpi"])), Presented::Missing);
        assert_eq!(
            presented(&with(&[b"Bearer emcp_ab"])),
            Presented::Token("emcp_ab")
        );
        assert_eq!(
            presented(&with(&[b"bearer  emcp_ab "])),
            Presented::Token("emcp_ab")
        );
        assert_eq!(presented(&with(&[b"Bearer"])), Presented::Malformed);
        assert_eq!(presented(&with(&[b"Bearer "])), Presented::Malformed);
        assert_eq!(presented(&with(&[b"Bearer a b"])), Presented::Malformed);
        assert_eq!(presented(&with(&[b"Bearer a\"b"])), Presented::Malformed);
        assert_eq!(presented(&with(&[b"Bearer \xffab"])), Presented::Malformed);
        assert_eq!(
            presented(&with(&[b"Bearer a", b"Bearer b"])),
            Presented::Malformed
        );
    }
}
