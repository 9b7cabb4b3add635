//! DNS-rebinding protection: the Host header must name an allowed host and
//! an Origin header, when present, an allowed origin. Anything else is 403.

use axum::http::{HeaderMap, header};
use std::net::SocketAddr;

/// The allow-lists, resolved from configuration.
#[derive(Clone, Debug)]
pub struct Guard {
    any_host: bool,
    hosts: Vec<String>,
    any_origin: bool,
    origins: Vec<String>,
}

impl Guard {
    /// With no hosts configured: loopback names, plus the listen address
    /// when it is a specific (not unspecified) IP.
    pub fn new(listen: SocketAddr, hosts: &[String], origins: &[String]) -> Self {
        let mut h: Vec<String> = hosts.iter().map(|s| normalize_host(s)).collect();
        if h.is_empty() {
            h = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
            if !listen.ip().is_unspecified() {
                h.push(normalize_host(&listen.ip().to_string()));
            }
        }
        Guard {
            any_host: h.iter().any(|x| x == "*"),
            hosts: h,
            any_origin: origins.iter().any(|x| x == "*"),
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// `Err(reason)` when the request must be refused.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        if !self.any_host {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .ok_or("missing Host header")?;
            let name = host_part(host);
            if !self.hosts.contains(&name) {
                return Err(format!("Host {host:?} is not allowed"));
            }
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().map_err(|_| "unreadable Origin header")?;
            if !self.origin_allowed(origin) {
                return Err(format!("Origin {origin:?} is not allowed"));
            }
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&o) {
            return true;
        }
        // An http(s) origin on an allowed host is the page the server itself
        // would serve; anything else is a foreign site.
        let Some(rest) = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
        else {
            return false;
        };
        let name = host_part(rest);
        self.any_host || self.hosts.contains(&name)
    }
}

fn normalize_host(h: &str) -> String {
    let h = h.trim().to_ascii_lowercase();
    if h.contains(':') && !h.starts_with('[') && h.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{h}]")
    } else {
        h
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn host_part(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if h.starts_with('[') {
        return h.split_inclusive(']').next().unwrap_or(&h).to_owned();
    }
    h.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(name, _)| name.to_owned())
        .unwrap_or(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn loopback_is_allowed_and_foreign_hosts_are_not() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap(), &[], &[]);
        assert!(g.check(&headers("localhost:8080", None)).is_ok());
        assert!(
            g.check(&headers("127.0.0.1", Some("http://localhost:3000")))
                .is_ok()
        );
        assert!(g.check(&headers("[::1]:8080", None)).is_ok());
        assert!(g.check(&headers("evil.example", None)).is_err());
        assert!(
            g.check(&headers("localhost", Some("http://evil.example")))
                .is_err()
        );
        assert!(g.check(&headers("localhost", Some("null"))).is_err());
    }

    #[test]
    fn configured_hosts_and_origins_replace_the_defaults() {
        let g = Guard::new(
            "0.0.0.0:8080".parse().unwrap(),
            &["server".into()],
            &["https://app.example".into()],
        );
        assert!(g.check(&headers("server:8080", None)).is_ok());
        assert!(g.check(&headers("localhost", None)).is_err());
        assert!(
            g.check(&headers("server", Some("https://app.example")))
                .is_ok()
        );
        let open = Guard::new("0.0.0.0:1".parse().unwrap(), &["*".into()], &[]);
        assert!(open.check(&headers("anything", None)).is_ok());
    }
}
