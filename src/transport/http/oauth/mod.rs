//! erlmcp as an OAuth 2.1 resource server (`auth.mode = "oauth"`), as the
//! MCP authorization spec (2025-06-18, 2025-11-25) asks of an MCP server:
//!
//! - its protected resource metadata (RFC 9728) names this server's
//!   canonical URI and the authorization servers that issue its tokens;
//! - an access token is a JWT signed by one of those servers: checked
//!   against the issuer's key set ([`jwks`]), its `iss`, its audience (our
//!   resource, RFC 8707), `exp` and `nbf` within the leeway, and an
//!   algorithm from the allow-list that fits the key;
//! - its `sub` (else `client_id`) is the principal, its `scope` (or `scp`)
//!   the scopes of the [`Grant`] the rest of the server already honours.
//!
//! A token that is not a JWT is asked about at the authorization server's
//! introspection endpoint ([`introspection`], RFC 7662) when one is
//! configured, and refused as invalid otherwise.

pub(crate) mod introspection;
pub(crate) mod jwks;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::str::FromStr;
use std::time::Duration;
use thiserror::Error;

use crate::config::OAuthConfig;
use crate::mcp::grant::Grant;
use jwks::{Found, KeySet};

/// The most scopes one token may carry (more is somebody's mistake).
const MAX_SCOPES: usize = 256;
/// The longest principal (`sub` or `client_id`) accepted.
const MAX_PRINCIPAL: usize = 256;

/// Why a token was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// 401 `invalid_token`: the reason is safe to show the caller.
    #[error("{0}")]
    Invalid(String),
    /// 503: the issuer's keys could not be fetched and none are cached; the
    /// token may well be good, so the client should retry, not re-authorize.
    #[error("the authorization server's signing keys are unavailable: {0}")]
    Unavailable(String),
}

fn invalid(why: impl Into<String>) -> Rejection {
    Rejection::Invalid(why.into())
}

/// Checks access tokens for one `[auth.oauth]` configuration.
pub(crate) struct Verifier {
    pub(crate) config: OAuthConfig,
    algorithms: Vec<Algorithm>,
    /// One key set per issuer, in the configuration's order.
    issuers: Vec<KeySet>,
    introspector: Option<introspection::Introspector>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.config.issuer)
            .field("resource", &self.config.resource)
            .finish_non_exhaustive()
    }
}

/// What a valid token says about its bearer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    pub principal: String,
    pub scopes: Vec<String>,
}

impl Verified {
    pub(crate) fn into_grant(self) -> Grant {
        Grant::new(self.principal, self.scopes)
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    scp: Option<Scp>,
}

/// `scp` as Entra and Okta write it: a list, or a space-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Scp {
    Many(Vec<String>),
    One(String),
}

impl Verifier {
    /// `config` was validated (`Config::validate`).
    pub(crate) fn new(config: &OAuthConfig) -> Verifier {
        let timeout = Duration::from_secs(config.fetch_timeout_secs);
        let refetch = Duration::from_secs(config.jwks_refetch_secs);
        let max_age = Duration::from_secs(config.jwks_max_age_secs);
        Verifier {
            algorithms: config
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_str(a).ok())
                .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
                .collect(),
            issuers: config
                .issuer
                .iter()
                .map(|i| KeySet::new(i, config.jwks_uri.as_deref(), timeout, refetch, max_age))
                .collect(),
            introspector: config
                .introspection
                .as_ref()
                .map(|i| introspection::Introspector::new(i, timeout)),
            config: config.clone(),
        }
    }

    /// The `aud` values a token may name.
    fn audiences(&self) -> Vec<String> {
        if self.config.audience.is_empty() {
            vec![self.config.resource.clone()]
        } else {
            self.config.audience.clone()
        }
    }

    /// An opaque token, asked about at the introspection endpoint.
    async fn introspect(
        &self,
        introspector: &introspection::Introspector,
        token: &str,
    ) -> Result<Verified, Rejection> {
        let a = introspector.ask(token).await?;
        introspection::check(
            &a,
            &self.config.issuer,
            &self.audiences(),
            crate::clock::now_secs().max(0) as u64,
            self.config.leeway_secs,
        )?;
        grant_of(Claims {
            iss: String::new(),
            sub: a.sub,
            client_id: a.client_id,
            scope: a.scope,
            scp: a.scp,
        })
    }

    /// The URL of this resource's metadata (RFC 9728 §3.1: the well-known
    /// path inserted before the resource's path).
    pub(crate) fn resource_metadata_url(&self) -> String {
        let r = &self.config.resource;
        let start = r.find("://").map(|i| i + 3).unwrap_or(0);
        match r[start..].find('/') {
            Some(p) => {
                let (origin, path) = r.split_at(start + p);
                let path = path.trim_end_matches('/');
                format!("{origin}/.well-known/oauth-protected-resource{path}")
            }
            None => format!("{r}/.well-known/oauth-protected-resource"),
        }
    }

    /// The scopes advertised: configured, else every registered toolset's.
    pub(crate) fn scopes_supported(&self, toolsets: &[&str]) -> Vec<String> {
        if !self.config.scopes_supported.is_empty() {
            return self.config.scopes_supported.clone();
        }
        toolsets
            .iter()
            .flat_map(|t| [format!("{t}:read"), format!("{t}:write")])
            .collect()
    }

    /// The protected resource metadata document (RFC 9728 §2).
    pub(crate) fn metadata(&self, toolsets: &[&str]) -> Value {
        json!({
            "resource": self.config.resource,
            "authorization_servers": self.config.issuer,
            "scopes_supported": self.scopes_supported(toolsets),
            "bearer_methods_supported": ["header"],
            "resource_name": "erlmcp",
        })
    }

    /// Checks one bearer token.
    pub(crate) async fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        if token.len() > self.config.max_token_bytes {
            return Err(invalid("token too long"));
        }
        if let Some(i) = &self.introspector
            && token.split('.').count() != 3
        {
            return self.introspect(i, token).await;
        }
        let alg = self.algorithm_of(token)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token header"))?;
        // The issuer picks the key set; the signature check below then
        // demands that very issuer.
        let claimed: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| invalid("malformed token claims"))?;
        let Some(index) = self.config.issuer.iter().position(|i| *i == claimed.iss) else {
            return Err(invalid("token from another issuer"));
        };
        let keys = match self.issuers[index]
            .keys_for(header.kid.as_deref(), alg)
            .await
        {
            Found::Keys(k) => k,
            Found::Unknown => return Err(invalid("unknown signing key")),
            Found::Mismatch => return Err(invalid("the signing key does not fit the algorithm")),
            Found::NoKeys(why) => return Err(Rejection::Unavailable(why)),
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer[index]]);
        validation.set_audience(&self.audiences());
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut last = invalid("bad signature");
        for jwk in &keys {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
                Ok(data) => return grant_of(data.claims),
                Err(e) => {
                    last = why(e.kind());
                    if !matches!(e.kind(), ErrorKind::InvalidSignature) {
                        break; // signed by this key: the claims are what fail
                    }
                }
            }
        }
        Err(last)
    }

    /// The header's `alg`, if the allow-list has it (`none`, `HS256` and
    /// anything unlisted are refused before any key is looked at).
    fn algorithm_of(&self, token: &str) -> Result<Algorithm, Rejection> {
        #[derive(Deserialize)]
        struct Alg {
            alg: String,
        }
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT access token"));
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .map_err(|_| invalid("malformed token header"))?;
        let alg = serde_json::from_slice::<Alg>(&bytes)
            .map_err(|_| invalid("malformed token header"))?
            .alg;
        match Algorithm::from_str(&alg) {
            Ok(a) if self.algorithms.contains(&a) => Ok(a),
            _ if alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Err(invalid(format!("algorithm {alg} not accepted")))
            }
            _ => Err(invalid("algorithm not accepted")),
        }
    }
}

fn why(kind: &ErrorKind) -> Rejection {
    invalid(match kind {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
        ErrorKind::InvalidAudience => "token for another audience".to_owned(),
        ErrorKind::InvalidIssuer => "token from another issuer".to_owned(),
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(c) if matches!(c.as_str(), "exp" | "iss" | "aud") => {
            format!("token without {c}")
        }
        _ => "invalid token".to_owned(),
    })
}

fn grant_of(c: Claims) -> Result<Verified, Rejection> {
    let principal = c
        .sub
        .filter(|s| !s.is_empty())
        .or(c.client_id.filter(|s| !s.is_empty()))
        .ok_or_else(|| invalid("token without sub or client_id"))?;
    if principal.len() > MAX_PRINCIPAL || principal.chars().any(char::is_control) {
        return Err(invalid("token sub unusable"));
    }
    let mut scopes: Vec<String> = match (c.scope, c.scp) {
        (Some(s), _) | (None, Some(Scp::One(s))) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        (None, Some(Scp::Many(v))) => v,
        (None, None) => Vec::new(),
    };
    if scopes.len() > MAX_SCOPES {
        return Err(invalid("token with too many scopes"));
    }
    scopes.dedup();
    Ok(Verified { principal, scopes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(resource: &str) -> Verifier {
        Verifier::new(&OAuthConfig {
            issuer: vec!["https://as.example.com".into()],
            resource: resource.into(),
            ..OAuthConfig::default()
        })
    }

    #[test]
    fn the_metadata_url_inserts_the_well_known_path() {
        assert_eq!(
            verifier("https://mcp.example.com/mcp").resource_metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            verifier("https://mcp.example.com").resource_metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn claims_become_a_grant() {
        let c = |v: Value| grant_of(serde_json::from_value(v).unwrap());
        let iss = "https://as.example.com";
        assert_eq!(
            c(json!({"iss": iss, "sub": "ann", "scope": "memory:read  files:write"})).unwrap(),
            Verified {
                principal: "ann".into(),
                scopes: vec!["memory:read".into(), "files:write".into()]
            }
        );
        let by_client = c(json!({"iss": iss, "client_id": "bot", "scp": ["memory:write"]}));
        assert_eq!(by_client.unwrap().principal, "bot");
        assert_eq!(
            c(json!({"iss": iss, "sub": "x", "scp": "a b"}))
                .unwrap()
                .scopes,
            ["a", "b"]
        );
        assert!(c(json!({"iss": iss, "scope": "memory:read"})).is_err());
        assert!(c(json!({"iss": iss, "sub": "a\nb"})).is_err());
    }

    #[tokio::test]
    async fn bad_tokens_are_refused_before_any_key_is_fetched() {
        let v = verifier("https://mcp.example.com/mcp");
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        let hs = format!("{}.{}.c2ln", b64(r#"{"alg":"HS256"}"#), b64("{}"));
        let other = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"iss":"https://evil.example.com","exp":1}"#)
        );
        for (token, answer) in [
            ("abc", "not a JWT access token"),
            ("a.b.c.d", "not a JWT access token"),
            ("!!.b.c", "malformed token header"),
            (none.as_str(), "algorithm none not accepted"),
            (hs.as_str(), "algorithm HS256 not accepted"),
            (other.as_str(), "token from another issuer"),
        ] {
            assert_eq!(v.verify(token).await, Err(invalid(answer)), "{token}");
        }
        assert_eq!(
            v.verify(&"a".repeat(9000)).await,
            Err(invalid("token too long"))
        );
    }
}
