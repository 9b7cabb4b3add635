//! TLS on the MCP listener (rustls, the *ring* provider), with a
//! certificate that a reload replaces without touching open connections:
//! the server config resolves its certificate through [`Certs`], which
//! holds the current chain and key behind an `ArcSwap`. A handshake takes
//! whatever is current when it starts; established connections keep the
//! keys they negotiated. Loading is all-or-nothing: a chain or key that
//! cannot be read, parsed or paired leaves the current one in place.
//!
//! ALPN offers `http/1.1` only: the listener speaks HTTP/1.1 (hyper's
//! `http1`), and MCP's Streamable HTTP needs nothing more.

use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{0}")]
    Path(String),
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    #[error("the TLS certificate file {} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the TLS key {} does not fit the certificate {}: {source}", key.display(), cert.display())]
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the TLS server configuration: {0}")]
    Config(rustls::Error),
}

/// A certificate chain and its key, checked to belong together.
pub(crate) struct Loaded {
    key: Arc<CertifiedKey>,
    /// For the logs and `check-config`.
    pub(crate) summary: String,
}

/// Reads, parses and pairs the chain and key `c` names.
pub(crate) fn load(c: &TlsConfig) -> Result<Loaded, TlsError> {
    let cert = c.cert_path().map_err(TlsError::Path)?;
    let key = c.key_path().map_err(TlsError::Path)?;
    let chain = read_chain(&cert)?;
    let der = PrivateKeyDer::from_pem_file(&key).map_err(|source| TlsError::Read {
        what: "private key",
        path: key.clone(),
        source,
    })?;
    let n = chain.len();
    let certified =
        CertifiedKey::from_der(chain, der, &provider()).map_err(|source| TlsError::Key {
            cert: cert.clone(),
            key: key.clone(),
            source,
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        summary: format!(
            "{} ({n} certificate{}) with the key {}",
            cert.display(),
            if n == 1 { "" } else { "s" },
            key.display()
        ),
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        what: "certificate chain",
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn provider() -> CryptoProvider {
    ring::default_provider()
}

/// The certificate every new handshake presents.
#[derive(Debug)]
struct Certs(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The listener's TLS: the acceptor and the certificate it presents.
pub struct Tls {
    certs: Arc<Certs>,
    pub(crate) acceptor: TlsAcceptor,
}

impl Tls {
    /// The TLS of `c`, or `None` when it is off.
    pub(crate) fn from_config(c: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        if !c.enabled {
            return Ok(None);
        }
        let loaded = load(c)?;
        tracing::info!(certificate = %loaded.summary, "TLS on the MCP listener");
        let certs = Arc::new(Certs(ArcSwap::new(loaded.key)));
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            certs,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }))
    }

    /// New handshakes present `loaded` from now on.
    pub(crate) fn install(&self, loaded: Loaded) {
        self.certs.0.store(loaded.key);
        tracing::info!(certificate = %loaded.summary, "TLS certificate reloaded");
    }
}
