//! Who a modern (sessionless) HTTP request comes from, for scoping what it
//! may see (tasks). erlmcp does not authenticate requests itself; when an
//! authenticating proxy sits in front, the credential it checked arrives in
//! `Authorization`, and requests bearing the same credential are the same
//! principal. The credential is kept only as a SHA-256 digest. Requests
//! without one share the `anonymous` principal, where the 128-bit task ids
//! are what keeps one client's tasks from another.

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use std::sync::Arc;

pub fn of(headers: &HeaderMap) -> Arc<str> {
    match super::headers::get(headers, header::AUTHORIZATION.as_str()) {
        Some(credential) if !credential.is_empty() => {
            let digest = Sha256::digest(credential.as_bytes());
            Arc::from(format!("authorization:{}", hex::encode(&digest[..16])))
        }
        _ => Arc::from("anonymous"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_credential_is_the_same_principal() {
        let mut a = HeaderMap::new();
        a.insert(header::AUTHORIZATION, "Bearer one".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert(header::AUTHORIZATION, "Bearer two".parse().unwrap());
        assert_eq!(of(&a), of(&a.clone()));
        assert_ne!(of(&a), of(&b));
        assert!(!of(&a).contains("one"), "only a digest is kept");
        assert_eq!(&*of(&HeaderMap::new()), "anonymous");
    }
}
