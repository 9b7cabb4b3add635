//! One authorization server's signing keys: found through its metadata
//! (RFC 8414, then OpenID Connect discovery) unless `auth.oauth.jwks_uri`
//! names them, fetched over HTTP off the async runtime, and cached.
//!
//! The cache answers every token whose `kid` it holds without a fetch. A
//! `kid` it does not hold (the issuer rotated its keys), or keys older than
//! `jwks_max_age_secs`, fetch the set again, but at most once per
//! `jwks_refetch_secs` whatever the tokens say: made-up key ids cost the
//! authorization server nothing. (The first successful load does not count
//! against the bound; failed loads do.) A fetch that fails (down, slow, garbage)
//! keeps the keys already cached; nothing unverified is ever accepted.

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// A metadata document or key set larger than this is garbage.
const MAX_DOCUMENT_BYTES: u64 = 512 * 1024;

#[derive(Debug, Error)]
pub(crate) enum FetchError {
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("{url} is not a JSON Web Key Set: {message}")]
    NotAKeySet { url: String, message: String },
    #[error("no metadata of issuer {issuer} names its jwks_uri (tried {tried})")]
    NoMetadata { issuer: String, tried: String },
    #[error("the fetch did not finish: {0}")]
    Aborted(String),
}

/// What a token's key id finds.
pub(crate) enum Found {
    /// The keys that may have signed it (one when the token names a `kid`).
    Keys(Vec<Jwk>),
    /// The key set holds no key of that id (after a refetch, if allowed).
    Unknown,
    /// The key of that id is not one for this algorithm.
    Mismatch,
    /// No key set could be fetched at all yet.
    NoKeys(String),
}

pub(crate) struct KeySet {
    issuer: String,
    configured_uri: Option<String>,
    timeout: Duration,
    refetch: Duration,
    max_age: Duration,
    cached: ArcSwapOption<Cached>,
    /// When the last fetch began; held while one runs, so concurrent
    /// requests wait for it instead of fetching too.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// The discovered `jwks_uri` and why the last fetch failed.
    discovered: std::sync::Mutex<Option<String>>,
    last_error: std::sync::Mutex<String>,
}

struct Cached {
    keys: Vec<Jwk>,
    at: Instant,
}

impl KeySet {
    pub(crate) fn new(
        issuer: &str,
        jwks_uri: Option<&str>,
        timeout: Duration,
        refetch: Duration,
        max_age: Duration,
    ) -> KeySet {
        KeySet {
            issuer: issuer.to_owned(),
            configured_uri: jwks_uri.map(str::to_owned),
            timeout,
            refetch,
            max_age,
            cached: ArcSwapOption::empty(),
            last_attempt: tokio::sync::Mutex::new(None),
            discovered: std::sync::Mutex::new(None),
            last_error: std::sync::Mutex::new("not fetched yet".into()),
        }
    }

    /// The keys that may verify a token of `alg` naming `kid`.
    pub(crate) async fn keys_for(&self, kid: Option<&str>, alg: Algorithm) -> Found {
        let seen = self.cached.load_full();
        if let Some(c) = &seen
            && c.at.elapsed() < self.max_age
        {
            match pick(&c.keys, kid, alg) {
                Found::Unknown => {}
                found => return found,
            }
        }
        self.refresh(seen.as_ref().map(|c| c.at)).await;
        match self.cached.load_full() {
            Some(c) => pick(&c.keys, kid, alg),
            None => Found::NoKeys(self.last_error.lock().unwrap().clone()),
        }
    }

    /// Fetches the key set again unless one fetched since `seen` or the
    /// refetch bound has not passed.
    async fn refresh(&self, seen: Option<Instant>) {
        let mut last = self.last_attempt.lock().await;
        let now_cached = self.cached.load().as_ref().map(|c| c.at);
        if now_cached != seen {
            return; // fetched while this request waited
        }
        if last.is_some_and(|t| t.elapsed() < self.refetch) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "OAuth signing keys fetched");
                metrics::counter!("erlmcp_oauth_jwks_fetches_total", "outcome" => "ok")
                    .increment(1);
                self.cached.store(Some(Arc::new(Cached {
                    keys,
                    at: Instant::now(),
                })));
                if seen.is_none() {
                    // The first load is no refetch: a key rotated right
                    // after it may still be fetched at once.
                    *last = None;
                }
            }
            Err(e) => {
                // Keep what is cached; rediscover the metadata next time.
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch the OAuth signing keys; keeping the cached ones");
                metrics::counter!("erlmcp_oauth_jwks_fetches_total", "outcome" => "failed")
                    .increment(1);
                *self.discovered.lock().unwrap() = None;
                *self.last_error.lock().unwrap() = e.to_string();
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Jwk>, FetchError> {
        let issuer = self.issuer.clone();
        let known = self
            .configured_uri
            .clone()
            .or_else(|| self.discovered.lock().unwrap().clone());
        let timeout = self.timeout;
        let (uri, keys) = tokio::task::spawn_blocking(move || {
            let agent = agent(timeout);
            let uri = match known {
                Some(u) => u,
                None => discover(&agent, &issuer)?,
            };
            let body = get(&agent, &uri)?;
            Ok::<_, FetchError>((uri.clone(), parse_key_set(&uri, &body)?))
        })
        .await
        .map_err(|e| FetchError::Aborted(e.to_string()))??;
        if self.configured_uri.is_none() {
            *self.discovered.lock().unwrap() = Some(uri);
        }
        Ok(keys)
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .max_redirects(0)
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, FetchError> {
    let http = |e: ureq::Error| FetchError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let mut resp = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(http)?;
    resp.body_mut()
        .with_config()
        .limit(MAX_DOCUMENT_BYTES)
        .read_to_vec()
        .map_err(http)
}

/// Where the issuer's metadata may be (MCP authorization, 2025-11-25:
/// RFC 8414 first, then OpenID Connect, path inserted, then appended).
pub(crate) fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let (origin, path) = match trimmed.find("://").map(|i| i + 3) {
        Some(start) => match trimmed[start..].find('/') {
            Some(p) => trimmed.split_at(start + p),
            None => (trimmed, ""),
        },
        None => (trimmed, ""),
    };
    let mut urls = vec![format!(
        "{origin}/.well-known/oauth-authorization-server{path}"
    )];
    if !path.is_empty() {
        urls.push(format!("{origin}/.well-known/openid-configuration{path}"));
    }
    urls.push(format!("{trimmed}/.well-known/openid-configuration"));
    urls
}

/// The issuer's `jwks_uri`, from the first metadata document that is the
/// issuer's own (its `issuer` equals ours, RFC 8414 §3.3).
fn discover(agent: &ureq::Agent, issuer: &str) -> Result<String, FetchError> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: Option<String>,
    }
    let urls = metadata_urls(issuer);
    let mut tried = Vec::new();
    for url in &urls {
        let outcome = match get(agent, url) {
            Ok(body) => match serde_json::from_slice::<Metadata>(&body) {
                Ok(m) if m.issuer != issuer => format!("names issuer {:?}", m.issuer),
                Ok(Metadata {
                    jwks_uri: Some(u), ..
                }) if u.starts_with("https://") || u.starts_with("http://") => return Ok(u),
                Ok(_) => "has no http(s) jwks_uri".to_owned(),
                Err(e) => format!("is not metadata: {e}"),
            },
            Err(e) => e.to_string(),
        };
        tried.push(format!("{url} {outcome}"));
    }
    Err(FetchError::NoMetadata {
        issuer: issuer.to_owned(),
        tried: tried.join("; "),
    })
}

/// The signature keys of a JWKS document. Keys this server cannot use (for
/// encryption, symmetric, of unknown types) are skipped one by one, so a
/// provider's encryption keys do not spoil its signing keys.
pub(crate) fn parse_key_set(url: &str, body: &[u8]) -> Result<Vec<Jwk>, FetchError> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| FetchError::NotAKeySet {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    let keys: Vec<Jwk> = set
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter(|k| {
            !matches!(
                k.algorithm,
                AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
            ) && !matches!(k.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature)
        })
        .collect();
    if keys.is_empty() {
        return Err(FetchError::NotAKeySet {
            url: url.to_owned(),
            message: "it holds no signature key".into(),
        });
    }
    Ok(keys)
}

/// Whether `key` can check a signature of `alg`: the right family (an RSA
/// key never verifies an HMAC), the right curve, and the key's own `alg`
/// when it names one.
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    if let Some(ka) = key.common.key_algorithm
        && ka != jsonwebtoken::jwk::KeyAlgorithm::from(alg)
    {
        return false;
    }
    match (&key.algorithm, alg) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

fn pick(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Found {
    match kid {
        Some(kid) => match keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid))
        {
            Some(k) if fits(k, alg) => Found::Keys(vec![k.clone()]),
            Some(_) => Found::Mismatch,
            None => Found::Unknown,
        },
        None => {
            let fitting: Vec<Jwk> = keys.iter().filter(|k| fits(k, alg)).cloned().collect();
            if fitting.is_empty() {
                Found::Unknown
            } else {
                Found::Keys(fitting)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_the_spec_says() {
        assert_eq!(
            metadata_urls("https://as.example.com"),
            [
                "https://as.example.com/.well-known/oauth-authorization-server",
                "https://as.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls("https://as.example.com/realms/mcp/"),
            [
                "https://as.example.com/.well-known/oauth-authorization-server/realms/mcp",
                "https://as.example.com/.well-known/openid-configuration/realms/mcp",
                "https://as.example.com/realms/mcp/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn only_signature_keys_are_kept() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"RSA","use":"enc","alg":"RSA-OAEP","kid":"enc","n":"AQAB","e":"AQAB"},
            {"kty":"weird","kid":"w"},
            {"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = parse_key_set("u", body).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(matches!(
            pick(&keys, Some("ed"), Algorithm::EdDSA),
            Found::Keys(_)
        ));
        assert!(matches!(
            pick(&keys, Some("ed"), Algorithm::RS256),
            Found::Mismatch
        ));
        assert!(matches!(
            pick(&keys, Some("hmac"), Algorithm::EdDSA),
            Found::Unknown
        ));
        assert!(matches!(
            pick(&keys, None, Algorithm::ES256),
            Found::Unknown
        ));
        assert!(parse_key_set("u", b"<html>").is_err());
        assert!(parse_key_set("u", br#"{"keys":[{"kty":"oct","k":"eA"}]}"#).is_err());
    }
}
