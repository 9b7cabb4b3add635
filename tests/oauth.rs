//! `auth.mode = "oauth"` against a real daemon and a real (local) JSON Web
//! Key Set server: the protected resource metadata, the 401 challenges,
//! JWT access tokens signed with RSA, P-256 and Ed25519 test keys, every
//! bad token the brief lists, scopes mapped onto tools, the JWKS refetch
//! bound, and a key server that is down, slow or answers garbage.

mod common;

use common::backup::{describe, erlmcp, wait_for};
use common::{ACCEPT_BOTH, Reply, free_port, get_raw, post_raw, spawn_serve};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/oauth");

/// The resource the introspection endpoint names in its answers (set by
/// the test that runs it; one such test per process).
static RESOURCE_FOR_INTROSPECTION: Mutex<Option<String>> = Mutex::new(None);

/// How the key server answers `/jwks`.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Ok,
    /// Closes the connection without a word.
    Down,
    /// Answers after the daemon's fetch timeout (1 s).
    Slow,
    /// 200 with HTML.
    Garbage,
}

/// An authorization server's metadata and key set, on loopback.
struct KeyServer {
    base: String,
    mode: Arc<Mutex<Mode>>,
    jwks: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    /// `/introspect` calls (RFC 7662), answered from [`introspection_answer`].
    introspections: Arc<AtomicUsize>,
}

/// The introspection endpoint's answer about `token`; `None`: the
/// connection is dropped.
fn introspection_answer(token: &str, resource: &str) -> Option<Value> {
    Some(match token {
        "opaque-good" => {
            json!({"active": true, "aud": resource, "sub": "carol", "scope": "memory:read"})
        }
        "opaque-inactive" => json!({"active": false}),
        "opaque-elsewhere" => json!({"active": true, "aud": "https://other/mcp", "sub": "x"}),
        "opaque-noaud" => json!({"active": true, "sub": "x", "scope": "memory:write"}),
        "opaque-expired" => json!({"active": true, "aud": resource, "sub": "x", "exp": 1000}),
        "opaque-down" => return None,
        _ => json!({"active": false}),
    })
}

/// The Basic credential erlmcp must present at `/introspect`.
const INTROSPECTION_BASIC: &str = "Basic ZXJsbWNwOnMzY3JldCtzcGFjZQ=="; // erlmcp:s3cret+space

impl KeyServer {
    fn start(jwks: Value) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let ks = KeyServer {
            base: base.clone(),
            mode: Arc::new(Mutex::new(Mode::Ok)),
            jwks: Arc::new(Mutex::new(jwks)),
            hits: Arc::new(AtomicUsize::new(0)),
            introspections: Arc::new(AtomicUsize::new(0)),
        };
        let (mode, keys, hits) = (ks.mode.clone(), ks.jwks.clone(), ks.hits.clone());
        let introspections = ks.introspections.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (mode, keys, hits, base) =
                    (mode.clone(), keys.clone(), hits.clone(), base.clone());
                let introspections = introspections.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap_or(0);
                    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        headers.push(h.trim_end().to_owned());
                    }
                    let header = |name: &str| {
                        headers.iter().find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                        })
                    };
                    let (status, body) = match path.as_str() {
                        "/.well-known/oauth-authorization-server" => (
                            200,
                            json!({"issuer": base, "jwks_uri": format!("{base}/jwks"),
                                   "token_endpoint": format!("{base}/token")})
                            .to_string(),
                        ),
                        "/jwks" => {
                            hits.fetch_add(1, Ordering::SeqCst);
                            match *mode.lock().unwrap() {
                                Mode::Ok => (200, keys.lock().unwrap().to_string()),
                                Mode::Down => return, // dropped: connection closed
                                Mode::Slow => {
                                    std::thread::sleep(Duration::from_secs(3));
                                    (200, keys.lock().unwrap().to_string())
                                }
                                Mode::Garbage => (200, "<html>maintenance</html>".to_owned()),
                            }
                        }
                        "/introspect" => {
                            introspections.fetch_add(1, Ordering::SeqCst);
                            let len: usize = header("content-length")
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(0);
                            let mut body = vec![0; len];
                            std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                            let body = String::from_utf8(body).unwrap();
                            let token = body
                                .split('&')
                                .find_map(|kv| kv.strip_prefix("token="))
                                .unwrap_or("")
                                .to_owned();
                            if header("authorization").as_deref() != Some(INTROSPECTION_BASIC) {
                                (401, r#"{"error":"invalid_client"}"#.to_owned())
                            } else {
                                let resource = RESOURCE_FOR_INTROSPECTION
                                    .lock()
                                    .unwrap()
                                    .clone()
                                    .unwrap_or_default();
                                match introspection_answer(&token, &resource) {
                                    Some(a) => (200, a.to_string()),
                                    None => return,
                                }
                            }
                        }
                        _ => (404, "{}".to_owned()),
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        ks
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The test keys: (kid, algorithm, private PEM file).
const SIGNERS: &[(&str, Algorithm, &str)] = &[
    ("rsa-1", Algorithm::RS256, "rsa.pem"),
    ("ec-1", Algorithm::ES256, "ec.pem"),
    ("ed-1", Algorithm::EdDSA, "ed.pem"),
];

fn encoding_key(file: &str, alg: Algorithm) -> EncodingKey {
    let pem = std::fs::read(Path::new(KEYS).join(file)).unwrap();
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    }
}

/// The public halves of `kids` as a JWKS document.
fn jwks(kids: &[&str]) -> Value {
    let keys: Vec<Jwk> = SIGNERS
        .iter()
        .filter(|(kid, _, _)| kids.contains(kid))
        .map(|(kid, alg, file)| {
            let mut jwk = Jwk::from_encoding_key(&encoding_key(file, *alg), *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk
        })
        .collect();
    serde_json::to_value(JwkSet { keys }).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with the test key `kid` (the header may claim another).
fn sign(kid: &str, header_kid: Option<&str>, claims: &Value) -> String {
    let (_, alg, file) = SIGNERS.iter().find(|(k, _, _)| *k == kid).unwrap();
    let mut header = Header::new(*alg);
    header.kid = header_kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(file, *alg)).unwrap()
}

/// An `erlmcp serve` in oauth mode, with its config file.
struct Daemon {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
}

impl Daemon {
    fn start(issuer: &str, extra: &str) -> Daemon {
        let data = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let config = data.path().join("erlmcp.toml");
            std::fs::write(
                &config,
                format!(
                    "[auth]\nmode = \"oauth\"\n[auth.oauth]\nissuer = \"{issuer}\"\n\
                     resource = \"http://127.0.0.1:{port}/mcp\"\nfetch_timeout_secs = 1\n{extra}"
                ),
            )
            .unwrap();
            let mut child = spawn_serve(
                data.path(),
                port,
                &["--config".into(), config.display().to_string()],
                &[],
            );
            for _ in 0..1500 {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Daemon { child, port, data };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("erlmcp could not start");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    fn resource(&self) -> String {
        self.url()
    }

    fn metadata_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp",
            self.port
        )
    }

    /// Good claims for this daemon from `issuer`, with `scope`.
    fn claims(&self, issuer: &str, scope: &str) -> Value {
        json!({"iss": issuer, "sub": "alice", "aud": self.resource(), "scope": scope,
               "iat": now(), "exp": now() + 600})
    }

    /// `initialize` with `token`: the reply.
    fn initialize(&self, token: &str) -> Reply {
        post_raw(
            &self.url(),
            &[
                ("Accept", ACCEPT_BOTH),
                ("Authorization", &format!("Bearer {token}")),
            ],
            initialize_body().as_bytes(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn initialize_body() -> String {
    json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": { "name": "oauth-test", "version": "1" } } })
    .to_string()
}

/// The `invalid_token` 401 and its description.
fn assert_invalid(d: &Daemon, token: &str, why: &str) {
    let r = d.initialize(token);
    assert_eq!(r.status, 401, "{why}: {}", r.body);
    let www = r.header("www-authenticate").unwrap_or_default();
    assert!(
        www.contains(r#"error="invalid_token""#)
            && www.contains(&format!(r#"error_description="{why}""#))
            && www.contains(&format!(r#"resource_metadata="{}""#, d.metadata_url())),
        "{why}: {www}"
    );
}

/// A legacy session opened with `token`, then `method` on it.
fn call(d: &Daemon, token: &str, method: &str, params: Value) -> Reply {
    let bearer = format!("Bearer {token}");
    let r = d.initialize(token);
    assert_eq!(r.status, 200, "{}", r.body);
    let sid = r.header("mcp-session-id").unwrap().to_owned();
    let h = [
        ("Accept", ACCEPT_BOTH),
        ("Authorization", bearer.as_str()),
        ("Mcp-Session-Id", sid.as_str()),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let n = post_raw(
        &d.url(),
        &h,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(n.status, 202);
    post_raw(
        &d.url(),
        &h,
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            .to_string()
            .as_bytes(),
    )
}

#[test]
fn oauth_tokens_are_checked_against_the_issuers_keys() {
    let ks = KeyServer::start(jwks(&["rsa-1", "ec-1", "ed-1"]));
    let iss = ks.base.clone();
    let d = Daemon::start(&iss, "jwks_refetch_secs = 3600\n");

    // The protected resource metadata, at both well-known paths.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let r = get_raw(&format!("http://127.0.0.1:{}{path}", d.port), &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let m: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(m["resource"], d.resource());
        assert_eq!(m["authorization_servers"], json!([iss]));
        assert_eq!(m["bearer_methods_supported"], json!(["header"]));
        assert_eq!(
            m["scopes_supported"],
            json!(["memory:read", "memory:write"])
        );
    }

    // No token: 401 pointing at the metadata, with a scope hint.
    let r = post_raw(
        &d.url(),
        &[("Accept", ACCEPT_BOTH)],
        initialize_body().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!(
            r#"Bearer resource_metadata="{}", scope="memory:read memory:write""#,
            d.metadata_url()
        )
    );
    let r = post_raw(
        &d.url(),
        &[("Accept", ACCEPT_BOTH), ("Authorization", "Bearer a b")],
        initialize_body().as_bytes(),
    );
    assert_eq!(r.status, 400);

    // Good tokens, each algorithm: one discovery, one key set fetch.
    for kid in ["rsa-1", "ec-1", "ed-1"] {
        let t = sign(kid, Some(kid), &d.claims(&iss, "memory:read"));
        let r = d.initialize(&t);
        assert_eq!(r.status, 200, "{kid}: {}", r.body);
    }
    assert_eq!(ks.hits(), 1, "one fetch serves every key");
    // No kid: the keys that fit the algorithm are tried.
    let r = d.initialize(&sign("rsa-1", None, &d.claims(&iss, "")));
    assert_eq!(r.status, 200, "{}", r.body);

    // Bad tokens.
    let c = d.claims(&iss, "memory:write");
    let with = |patch: Value| {
        let mut c = c.clone();
        c.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        c
    };
    let rsa = |claims: &Value| sign("rsa-1", Some("rsa-1"), claims);
    assert_invalid(
        &d,
        &rsa(&with(json!({"exp": now() - 3600}))),
        "token expired",
    );
    assert_invalid(
        &d,
        &rsa(&with(json!({"nbf": now() + 3600}))),
        "token not yet valid",
    );
    // Within the leeway (60 s) is fine.
    let r = d.initialize(&rsa(&with(json!({"exp": now() - 5}))));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_invalid(
        &d,
        &rsa(&with(json!({"aud": "https://other.example.com/mcp"}))),
        "token for another audience",
    );
    assert_invalid(
        &d,
        &rsa(&with(json!({"iss": "https://evil.example.com"}))),
        "token from another issuer",
    );
    let mut no_exp = c.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_invalid(&d, &rsa(&no_exp), "token without exp");
    let mut nobody = c.clone();
    nobody.as_object_mut().unwrap().remove("sub");
    assert_invalid(&d, &rsa(&nobody), "token without sub or client_id");
    // A signature from a key that is not the issuer's (the P-256 key
    // under the RSA key's id does not even fit; a forged RS256 signature).
    assert_invalid(
        &d,
        &sign("ec-1", Some("rsa-1"), &c),
        "the signing key does not fit the algorithm",
    );
    let good = rsa(&c);
    let (head_payload, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head_payload}.{}", "A".repeat(342));
    assert_invalid(&d, &forged, "bad signature");
    // A changed payload under the original signature.
    let parts: Vec<&str> = good.split('.').collect();
    let other = rsa(&with(json!({"scope": "*"})));
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_invalid(&d, &spliced, "bad signature");
    // `alg: none`, and HS256 keyed with the RSA public key (the classic
    // confusion attack).
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "rsa-1"})),
        b64(&c)
    );
    assert_invalid(&d, &none, "algorithm none not accepted");
    let public = std::fs::read(Path::new(KEYS).join("rsa.pub.pem")).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let hs = jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(&public).unwrap()).unwrap();
    assert_invalid(&d, &hs, "algorithm HS256 not accepted");
    assert_invalid(&d, "not-a-jwt", "not a JWT access token");
    assert_invalid(&d, "e30.e30.e30.e30", "not a JWT access token");
    assert_invalid(&d, &"x".repeat(9000), "token too long");
    assert_eq!(ks.hits(), 1, "no bad token fetched keys");

    // An unknown kid fetches the key set once; another one within the
    // refetch bound does not.
    assert_invalid(
        &d,
        &sign("rsa-1", Some("rotated-1"), &c),
        "unknown signing key",
    );
    assert_eq!(ks.hits(), 2);
    assert_invalid(
        &d,
        &sign("rsa-1", Some("rotated-2"), &c),
        "unknown signing key",
    );
    assert_eq!(ks.hits(), 2, "the refetch bound holds");
    // The cached keys still serve.
    assert_eq!(d.initialize(&good).status, 200);

    // Scopes: tools/list filtered, a write beyond the scope is 403 naming
    // the scope and the metadata.
    let reader = rsa(&with(json!({"sub": "reader", "scope": "memory:read"})));
    let r = call(&d, &reader, "tools/list", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let tools: Vec<String> = r.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(tools.contains(&"read_graph".to_owned()), "{tools:?}");
    assert!(!tools.contains(&"create_entities".to_owned()), "{tools:?}");
    let create = json!({"name": "create_entities", "arguments": {"entities": [
        {"name": "n1", "entityType": "t", "observations": []}]}});
    let r = call(&d, &reader, "tools/call", create.clone());
    assert_eq!(r.status, 403, "{}", r.body);
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.contains(r#"error="insufficient_scope""#)
            && www.contains(r#"scope="memory:write""#)
            && www.contains(&d.metadata_url()),
        "{www}"
    );
    // `scp` as a list (Entra, Okta) and `client_id` as the principal.
    let mut bot = with(json!({"client_id": "bot", "scp": ["memory:write"]}));
    let o = bot.as_object_mut().unwrap();
    o.remove("sub");
    o.remove("scope");
    let r = call(&d, &rsa(&bot), "tools/call", create);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(r.result()["isError"], json!(true), "{}", r.body);

    // The audit log: the tool call under its principal, the refusals with
    // their reasons.
    let rows = || {
        let out = erlmcp(d.data.path(), &["audit", "--json"], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
    };
    wait_for("the audit rows", Duration::from_secs(10), || {
        let rows = rows();
        let has = |kind: &str, outcome: &str, principal: Value, detail: Option<&str>| {
            rows.iter().any(|r| {
                r["kind"] == kind
                    && r["outcome"] == outcome
                    && r["principal"] == principal
                    && detail.is_none_or(|d| r["detail"] == d)
            })
        };
        has("tool", "ok", json!("bot"), None)
            && has("tool", "insufficient_scope", json!("reader"), None)
            && has("auth", "invalid_token", Value::Null, Some("token expired"))
            && has(
                "auth",
                "invalid_token",
                Value::Null,
                Some("algorithm HS256 not accepted"),
            )
            && has("auth", "unauthenticated", Value::Null, None)
    });
}

#[test]
fn a_key_server_that_fails_keeps_the_cached_keys() {
    let ks = KeyServer::start(jwks(&["rsa-1"]));
    let iss = ks.base.clone();
    // Keys expire from the cache after a second, and may be refetched as
    // often: every request below past the first second tries a fetch.
    let d = Daemon::start(&iss, "jwks_refetch_secs = 1\njwks_max_age_secs = 1\n");
    let good = sign("rsa-1", Some("rsa-1"), &d.claims(&iss, "memory:read"));
    assert_eq!(d.initialize(&good).status, 200);
    let unknown = sign("rsa-1", Some("rsa-9"), &d.claims(&iss, "memory:read"));
    for mode in [Mode::Down, Mode::Slow, Mode::Garbage] {
        ks.set(mode);
        let before = ks.hits();
        std::thread::sleep(Duration::from_millis(1100));
        let r = d.initialize(&good);
        assert_eq!(r.status, 200, "{mode:?}: cached keys serve: {}", r.body);
        assert!(ks.hits() > before, "{mode:?}: a fetch was tried");
        std::thread::sleep(Duration::from_millis(1100));
        assert_invalid(&d, &unknown, "unknown signing key");
    }
    // Back up: a rotated key set is picked up, the old key goes.
    ks.set(Mode::Ok);
    *ks.jwks.lock().unwrap() = jwks(&["ed-1"]);
    std::thread::sleep(Duration::from_millis(1100));
    let ed = sign("ed-1", Some("ed-1"), &d.claims(&iss, "memory:read"));
    assert_eq!(d.initialize(&ed).status, 200);
    assert_invalid(&d, &good, "unknown signing key");
}

#[test]
fn with_no_keys_to_be_had_tokens_get_503_not_401() {
    let ks = KeyServer::start(jwks(&["rsa-1"]));
    ks.set(Mode::Garbage);
    let iss = ks.base.clone();
    let d = Daemon::start(&iss, "jwks_refetch_secs = 1\n");
    let good = sign("rsa-1", Some("rsa-1"), &d.claims(&iss, "memory:read"));
    let r = d.initialize(&good);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Still nothing unverified gets in meanwhile.
    assert_invalid(&d, "e30.e30", "not a JWT access token");
    ks.set(Mode::Ok);
    wait_for("the key set", Duration::from_secs(10), || {
        d.initialize(&good).status == 200
    });
}

#[test]
fn a_configured_audience_replaces_the_resource() {
    let ks = KeyServer::start(jwks(&["ec-1"]));
    let iss = ks.base.clone();
    let d = Daemon::start(&iss, "audience = [\"api://erlmcp\", \"0000-1111\"]\n");
    let mut c = d.claims(&iss, "memory:read");
    c["aud"] = json!(["other", "0000-1111"]);
    assert_eq!(d.initialize(&sign("ec-1", Some("ec-1"), &c)).status, 200);
    c["aud"] = json!(d.resource());
    assert_invalid(
        &d,
        &sign("ec-1", Some("ec-1"), &c),
        "token for another audience",
    );
}

#[test]
fn opaque_tokens_are_introspected() {
    let ks = KeyServer::start(jwks(&["rsa-1"]));
    let iss = ks.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, "s3cret space\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    let section = |secret: &Path| {
        format!(
            "[auth.oauth.introspection]\nendpoint = \"{iss}/introspect\"\nclient_id = \"erlmcp\"\n\
             client_secret_file = \"{}\"\n",
            secret.display()
        )
    };
    let d = Daemon::start(&iss, &section(&good));
    *RESOURCE_FOR_INTROSPECTION.lock().unwrap() = Some(d.resource());

    let r = call(&d, "opaque-good", "tools/list", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let tools = r.result()["tools"].to_string();
    assert!(
        tools.contains("read_graph") && !tools.contains("create_entities"),
        "{tools}"
    );
    // Every request asks again (initialize, initialized, tools/list).
    assert_eq!(ks.introspections.load(Ordering::SeqCst), 3);
    for (token, why) in [
        ("opaque-inactive", "token not active"),
        ("opaque-unknown", "token not active"),
        ("opaque-elsewhere", "token for another audience"),
        ("opaque-noaud", "token for another audience"),
        ("opaque-expired", "token expired"),
    ] {
        assert_invalid(&d, token, why);
    }
    let r = d.initialize("opaque-down");
    assert_eq!(r.status, 503, "{}", r.body);
    // A JWT is still checked locally.
    let before = ks.introspections.load(Ordering::SeqCst);
    let jwt = sign("rsa-1", Some("rsa-1"), &d.claims(&iss, "memory:read"));
    assert_eq!(d.initialize(&jwt).status, 200);
    assert_eq!(ks.introspections.load(Ordering::SeqCst), before);
    drop(d);

    // erlmcp's own credential refused at the endpoint: 503, not 401.
    let d = Daemon::start(&iss, &section(&wrong));
    *RESOURCE_FOR_INTROSPECTION.lock().unwrap() = Some(d.resource());
    let r = d.initialize("opaque-good");
    assert_eq!(r.status, 503, "{}", r.body);

    // The secret file: named in $CREDENTIALS_DIRECTORY, or absolute.
    let file = dir.path().join("c.toml");
    let config = |secret: &str| {
        format!(
            "[auth]\nmode = \"oauth\"\n[auth.oauth]\nissuer = \"{iss}\"\nresource = \"https://m.example.com/mcp\"\n\
             [auth.oauth.introspection]\nendpoint = \"{iss}/introspect\"\nclient_id = \"erlmcp\"\nclient_secret_file = \"{secret}\"\n"
        )
    };
    let check = |text: String, creds: Option<&Path>| {
        std::fs::write(&file, text).unwrap();
        let mut c = std::process::Command::new(common::BIN);
        c.arg("check-config")
            .arg(&file)
            .env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = creds {
            c.env("CREDENTIALS_DIRECTORY", dir);
        }
        c.output().unwrap()
    };
    assert_eq!(
        check(config("good"), Some(dir.path())).status.code(),
        Some(0)
    );
    let out = check(config("good"), None);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CREDENTIALS_DIRECTORY"));
    let out = check(config("/nonexistent/secret"), None);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot read the introspection client secret")
    );
}

#[test]
fn bad_oauth_configurations_are_refused_by_name() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("c.toml");
    for (oauth, complaint) in [
        ("", "needs auth.oauth.issuer"),
        (
            "issuer = \"https://as.example.com\"\n",
            "needs auth.oauth.resource",
        ),
        (
            "issuer = \"http://as.example.com\"\nresource = \"https://m.example.com/mcp\"\n",
            "must use https",
        ),
        (
            "issuer = \"https://as.example.com\"\nresource = \"https://m.example.com/mcp\"\nalgorithms = [\"none\"]\n",
            "is never accepted",
        ),
        (
            "issuer = \"https://as.example.com\"\nresource = \"https://m.example.com/mcp\"\nalgorithms = [\"HS256\"]\n",
            "is never accepted",
        ),
        (
            "issuer = [\"https://a.example.com\", \"https://b.example.com\"]\nresource = \"https://m.example.com/mcp\"\njwks_uri = \"https://a.example.com/k\"\n",
            "needs exactly one issuer",
        ),
        (
            "issuer = \"https://as.example.com\"\nresource = \"https://m.example.com/mcp#x\"\n",
            "fragment",
        ),
        (
            "issuer = \"https://as.example.com\"\nresource = \"https://m.example.com/mcp\"\nclient_secret = \"s\"\n",
            "unknown field",
        ),
    ] {
        std::fs::write(
            &file,
            format!("[auth]\nmode = \"oauth\"\n[auth.oauth]\n{oauth}"),
        )
        .unwrap();
        let out = std::process::Command::new(common::BIN)
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{oauth}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(complaint),
            "{oauth}: {}",
            describe(&out)
        );
    }
}
