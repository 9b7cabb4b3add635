//! Opaque access tokens, asked about at the authorization server's RFC 7662
//! introspection endpoint (erlmcp authenticating as its own client, HTTP
//! Basic). One call per request: a token revoked at the server is refused
//! from the next request on, as static tokens are.
//!
//! An answer counts only if `active` is true, its `aud` names this
//! resource (an answer without `aud` is refused: the token may be meant for
//! another server), its `iss`, when given, is a configured issuer, and its
//! `exp`/`nbf`, when given, hold within the leeway. An endpoint that cannot
//! be reached or answers with an error is "unavailable" (503), not a bad
//! token.

use base64::Engine;
use serde::Deserialize;
use std::time::Duration;

use super::{Rejection, Scp, invalid};
use crate::config::IntrospectionConfig;

/// An answer larger than this is garbage.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

pub(crate) struct Introspector {
    endpoint: String,
    /// `Basic base64(client_id:secret)`, or why the secret is unreadable.
    authorization: Result<String, String>,
    timeout: Duration,
}

/// The fields of an introspection answer erlmcp reads (RFC 7662 §2.2).
#[derive(Deserialize)]
pub(crate) struct Answer {
    #[serde(default)]
    pub active: bool,
    pub scope: Option<String>,
    pub scp: Option<Scp>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub aud: Option<Audience>,
    pub iss: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::One(a) => accepted.contains(a),
            Audience::Many(v) => v.iter().any(|a| accepted.contains(a)),
        }
    }
}

impl Introspector {
    pub(crate) fn new(c: &IntrospectionConfig, timeout: Duration) -> Introspector {
        let authorization = c.read_secret().map(|secret| {
            // RFC 6749 §2.3.1: both parts form-urlencoded before Basic.
            let enc = |s: &str| form_urlencoded(s);
            let pair = format!("{}:{}", enc(&c.client_id), enc(&secret));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        if let Err(e) = &authorization {
            tracing::error!(error = %e, "opaque OAuth tokens cannot be introspected");
        }
        Introspector {
            endpoint: c.endpoint.clone(),
            authorization,
            timeout,
        }
    }

    /// The authorization server's answer about `token`.
    pub(crate) async fn ask(&self, token: &str) -> Result<Answer, Rejection> {
        let authorization = self.authorization.clone().map_err(Rejection::Unavailable)?;
        let (endpoint, timeout, token) = (self.endpoint.clone(), self.timeout, token.to_owned());
        let answer = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(true)
                .max_redirects(0)
                .build()
                .into();
            let failed = |e: ureq::Error| format!("introspection at {endpoint}: {e}");
            let mut resp = agent
                .post(&endpoint)
                .header("Authorization", &authorization)
                .header("Accept", "application/json")
                .send_form([
                    ("token", token.as_str()),
                    ("token_type_hint", "access_token"),
                ])
                .map_err(failed)?;
            let body = resp
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_vec()
                .map_err(failed)?;
            serde_json::from_slice::<Answer>(&body)
                .map_err(|e| format!("introspection at {endpoint}: not an answer: {e}"))
        })
        .await
        .map_err(|e| Rejection::Unavailable(e.to_string()))?;
        answer.map_err(|e| {
            tracing::warn!(error = %e, "OAuth token introspection failed");
            Rejection::Unavailable(e)
        })
    }
}

/// Checks an answer's claims beyond `active` (see the module comment).
pub(crate) fn check(
    a: &Answer,
    issuers: &[String],
    audiences: &[String],
    now: u64,
    leeway: u64,
) -> Result<(), Rejection> {
    if !a.active {
        return Err(invalid("token not active"));
    }
    if a.iss.as_ref().is_some_and(|i| !issuers.contains(i)) {
        return Err(invalid("token from another issuer"));
    }
    if !a
        .aud
        .as_ref()
        .is_some_and(|aud| aud.contains_any(audiences))
    {
        return Err(invalid("token for another audience"));
    }
    if a.exp.is_some_and(|exp| exp + leeway < now) {
        return Err(invalid("token expired"));
    }
    if a.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(invalid("token not yet valid"));
    }
    Ok(())
}

fn form_urlencoded(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'*');
    percent_encoding::utf8_percent_encode(s, SET)
        .to_string()
        .replace("%20", "+")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_only_when_active_and_for_us() {
        let a = |v: serde_json::Value| serde_json::from_value::<Answer>(v).unwrap();
        let iss = ["https://as".to_owned()];
        let aud = ["https://mcp/mcp".to_owned()];
        let ok = |v| check(&a(v), &iss, &aud, 1000, 60);
        assert!(ok(serde_json::json!({"active": true, "aud": "https://mcp/mcp"})).is_ok());
        assert!(ok(serde_json::json!({"active": true, "aud": ["x", "https://mcp/mcp"], "iss": "https://as", "exp": 990})).is_ok());
        for (v, why) in [
            (
                serde_json::json!({"active": false, "aud": "https://mcp/mcp"}),
                "token not active",
            ),
            (serde_json::json!({}), "token not active"),
            (
                serde_json::json!({"active": true}),
                "token for another audience",
            ),
            (
                serde_json::json!({"active": true, "aud": "x"}),
                "token for another audience",
            ),
            (
                serde_json::json!({"active": true, "aud": "https://mcp/mcp", "iss": "https://evil"}),
                "token from another issuer",
            ),
            (
                serde_json::json!({"active": true, "aud": "https://mcp/mcp", "exp": 900}),
                "token expired",
            ),
            (
                serde_json::json!({"active": true, "aud": "https://mcp/mcp", "nbf": 1100}),
                "token not yet valid",
            ),
        ] {
            assert_eq!(ok(v.clone()), Err(invalid(why)), "{v}");
        }
        assert_eq!(form_urlencoded("a b:c%"), "a+b%3Ac%25");
    }
}
