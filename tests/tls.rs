//! TLS on the MCP listener, against a real daemon: a test CA and server
//! certificates made here (rcgen), files passed the systemd way (relative
//! names in `$CREDENTIALS_DIRECTORY`), a client (rustls) that trusts only
//! the test CA. Covers: a legacy session and tool calls over https; a
//! certificate replaced on SIGHUP while a connection stays open (it goes
//! on working, new handshakes present the new certificate); a garbage or
//! mismatched certificate on reload (rejected, the previous one stays);
//! start-up and `check-config` with unusable files (exit 78, a clear
//! message).

mod common;

use common::{BIN, free_port, ops_get, signal, spawn_daemon, wait_exit};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SerialNumber,
};
use serde_json::{Value, json};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A test CA that signs server certificates for 127.0.0.1 and localhost.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate (PEM) with its key (PEM) and DER form.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "erlmcp test CA");
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.as_ref().der().clone()
    }

    fn leaf(&self, cn: &str, serial: u64) -> Leaf {
        let mut p = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

fn install(creds: &Path, leaf: &Leaf) {
    // Whole files replaced by rename, as a certificate manager does.
    for (name, text) in [("tls-cert", &leaf.cert_pem), ("tls-key", &leaf.key_pem)] {
        let tmp = creds.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, creds.join(name)).unwrap();
    }
}

/// One HTTPS connection kept open (keep-alive), trusting only `ca`.
struct Https {
    tls: StreamOwned<ClientConnection, TcpStream>,
}

/// An HTTP/1.1 response: status, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC message carried (JSON body or the last SSE `data:`).
    fn message(&self) -> Value {
        let text = if self.header("content-type") == Some("text/event-stream") {
            self.body
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .next_back()
                .unwrap_or_else(|| panic!("no SSE data in {:?}", self.body))
                .trim()
                .to_owned()
        } else {
            self.body.clone()
        };
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }
}

fn client_config(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

impl Https {
    fn connect(port: u16, ca: &CertificateDer<'static>) -> Result<Https, std::io::Error> {
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = ClientConnection::new(client_config(ca), name).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        // Finish the handshake now, so that its failure shows here.
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Https { tls })
    }

    /// The certificate the server presented.
    fn server_cert(&self) -> CertificateDer<'static> {
        self.tls.conn.peer_certificates().unwrap()[0].clone()
    }

    fn alpn(&self) -> Option<Vec<u8>> {
        self.tls.conn.alpn_protocol().map(|p| p.to_vec())
    }

    fn post(&mut self, headers: &[(&str, &str)], body: &Value) -> Response {
        let body = body.to_string();
        let mut req = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        self.tls.write_all(req.as_bytes()).unwrap();
        self.tls.flush().unwrap();
        self.read_response()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let mut byte = [0u8; 1];
        while !line.ends_with("\r\n") {
            let n = self.tls.read(&mut byte).unwrap();
            assert_eq!(n, 1, "connection closed mid-response after {line:?}");
            line.push(byte[0] as char);
        }
        line.truncate(line.len() - 2);
        line
    }

    fn read_response(&mut self) -> Response {
        let status_line = self.line();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let find = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let mut body = Vec::new();
        if let Some(len) = find("content-length") {
            body.resize(len.parse().unwrap(), 0);
            self.tls.read_exact(&mut body).unwrap();
        } else if find("transfer-encoding").as_deref() == Some("chunked") {
            loop {
                let size = usize::from_str_radix(self.line().trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                self.tls.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        }
        Response {
            status,
            headers,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

/// A legacy (2025-11-25) session on one kept-alive connection.
struct Session {
    conn: Https,
    id: String,
    next: u64,
}

impl Session {
    fn open(conn: Https) -> Session {
        let mut s = Session {
            conn,
            id: String::new(),
            next: 1,
        };
        let r = s.conn.post(
            &[],
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "tls-test", "version": "1"}}}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.message()["result"]["protocolVersion"], "2025-11-25");
        s.id = r.header("mcp-session-id").unwrap().to_owned();
        let id = s.id.clone();
        let r = s.conn.post(
            &session_headers(&id),
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        s
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        self.next += 1;
        let msg = json!({"jsonrpc": "2.0", "id": self.next, "method": "tools/call",
            "params": {"name": tool, "arguments": args}});
        let id = self.id.clone();
        let r = self.conn.post(&session_headers(&id), &msg);
        assert_eq!(r.status, 200, "{}", r.body);
        let m = r.message();
        assert_eq!(m["id"], self.next, "{m}");
        assert_ne!(m["result"]["isError"], true, "{m}");
        m["result"].clone()
    }
}

fn session_headers(id: &str) -> [(&str, &str); 2] {
    [
        ("Mcp-Session-Id", id),
        ("Mcp-Protocol-Version", "2025-11-25"),
    ]
}

fn add_entity(s: &mut Session, name: &str) {
    s.call(
        "create_entities",
        json!({"entities": [{"name": name, "entityType": "test", "observations": []}]}),
    );
}

fn entity_names(s: &mut Session) -> Vec<String> {
    let r = s.call("read_graph", json!({}));
    let graph: Value = r["structuredContent"].clone();
    let mut names: Vec<String> = graph["entities"]
        .as_array()
        .unwrap_or_else(|| panic!("no entities in {r}"))
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn wait_tls(port: u16, ca: &CertificateDer<'static>, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if Https::connect(port, ca).is_ok() {
            return;
        }
        if let Some(s) = child.try_wait().unwrap() {
            panic!("erlmcp exited at start-up: {s}");
        }
        assert!(Instant::now() < deadline, "no TLS listener on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last reload's line in `/status` (empty before the first).
fn last_reload(ops: u16) -> String {
    ops_get(ops, "/status").result_json()["last_reload"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits until `/status` reports a reload other than `before` whose line
/// contains `needle` (each reload below has a different line).
fn wait_reload(ops: u16, needle: &str, before: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = last_reload(ops);
        if line != before && line.contains(needle) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no reload with {needle:?}: last {line:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TLS_ON: (&str, &str) = ("ERLMCP_HTTP__TLS__ENABLED", "true");

#[test]
fn https_sessions_and_certificates_replaced_on_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let ca = Ca::new();
    let (one, two) = (ca.leaf("erlmcp one", 1001), ca.leaf("erlmcp two", 2002));
    install(&creds, &one);
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(
        &tmp.path().join("data"),
        mcp,
        ops,
        &[],
        &[TLS_ON, ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    wait_tls(mcp, &ca.der(), &mut child);
    assert_eq!(
        ops_get(ops, "/status").result_json()["mcp_tls"],
        true,
        "/status says the MCP listener is TLS"
    );

    // Plain HTTP on the TLS port gets no MCP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", mcp)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 "),
        "plain HTTP was served on the TLS port"
    );
    // Counted once the server has dropped the connection, which may be
    // just after the client saw it close.
    let counted = || {
        ops_get(ops, "/metrics")
            .body
            .lines()
            .any(|l| l == "erlmcp_http_tls_handshake_failures_total 1")
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !counted() {
        assert!(
            Instant::now() < deadline,
            "the failed handshake is not counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A session over https, its connection kept open across the reload.
    let conn = Https::connect(mcp, &ca.der()).unwrap();
    assert_eq!(conn.server_cert(), one.der);
    assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let mut before = Session::open(conn);
    add_entity(&mut before, "Ada");

    // Replace the certificate; SIGHUP.
    let prev = last_reload(ops);
    install(&creds, &two);
    signal(&child, libc::SIGHUP);
    wait_reload(ops, "applied", &prev);
    let fresh = Https::connect(mcp, &ca.der()).unwrap();
    assert_eq!(
        fresh.server_cert(),
        two.der,
        "a new handshake sees the new certificate"
    );
    let mut after = Session::open(fresh);
    add_entity(&mut after, "Grace");
    // The connection from before the reload goes on, same session.
    add_entity(&mut before, "Edsger");
    assert_eq!(entity_names(&mut before), ["Ada", "Edsger", "Grace"]);
    assert_eq!(before.conn.server_cert(), one.der);

    // Garbage as the new certificate: the reload is rejected, and says why.
    let prev = last_reload(ops);
    std::fs::write(creds.join("tls-cert"), "not a certificate\n").unwrap();
    signal(&child, libc::SIGHUP);
    let line = wait_reload(ops, "REJECTED", &prev);
    assert!(
        line.contains("tls-cert") && line.contains("no PEM certificate"),
        "{line}"
    );
    let mut s = Session::open(Https::connect(mcp, &ca.der()).unwrap());
    assert_eq!(
        s.conn.server_cert(),
        two.der,
        "the previous certificate stays"
    );
    assert_eq!(entity_names(&mut s), ["Ada", "Edsger", "Grace"]);

    // A certificate with another certificate's key: rejected too.
    let prev = last_reload(ops);
    std::fs::write(creds.join("tls-cert"), &one.cert_pem).unwrap();
    std::fs::write(creds.join("tls-key"), &two.key_pem).unwrap();
    signal(&child, libc::SIGHUP);
    let line = wait_reload(ops, "REJECTED", &prev);
    assert!(line.contains("does not fit the certificate"), "{line}");
    let conn = Https::connect(mcp, &ca.der()).unwrap();
    assert_eq!(
        conn.server_cert(),
        two.der,
        "the previous certificate stays"
    );
    // Existing connections were never touched.
    assert_eq!(entity_names(&mut after), ["Ada", "Edsger", "Grace"]);
    assert_eq!(entity_names(&mut before), ["Ada", "Edsger", "Grace"]);

    child.kill().unwrap();
    child.wait().unwrap();
}

/// `erlmcp serve` with TLS on and these files; returns (exit code, stderr).
fn serve_fails(data: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--ops-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("RUST_LOG", "warn")
        .env(TLS_ON.0, TLS_ON.1)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(60));
    if code.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_to_string(&mut err)
        .unwrap();
    (code, err)
}

#[test]
fn unusable_certificates_stop_the_start_with_the_config_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let ca = Ca::new();
    let (one, two) = (ca.leaf("one", 1), ca.leaf("two", 2));
    let creds_env = ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap());

    // Relative names but no credentials directory.
    let (code, err) = serve_fails(&data, &[]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("CREDENTIALS_DIRECTORY"), "{err}");

    // Missing files.
    let (code, err) = serve_fails(&data, &[creds_env]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("tls-cert"), "{err}");

    // A key that is not the certificate's.
    std::fs::write(creds.join("tls-cert"), &one.cert_pem).unwrap();
    std::fs::write(creds.join("tls-key"), &two.key_pem).unwrap();
    let (code, err) = serve_fails(&data, &[creds_env]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("does not fit the certificate"), "{err}");

    // A key file with no key.
    std::fs::write(creds.join("tls-key"), &one.cert_pem).unwrap();
    let (code, err) = serve_fails(&data, &[creds_env]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("private key"), "{err}");

    // check-config reads the files the same way (absolute paths here).
    let cfg = tmp.path().join("erlmcp.toml");
    let check = |cert: &Path, key: &Path| {
        std::fs::write(
            &cfg,
            format!(
                "[http.tls]\nenabled = true\ncert_file = {:?}\nkey_file = {:?}\n",
                cert.to_str().unwrap(),
                key.to_str().unwrap()
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&cfg)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // Relative paths (credentials) outside the service: valid, not read,
    // and said so (the NixOS module checks its config at build time).
    std::fs::write(&cfg, "[http.tls]\nenabled = true\n").unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("TLS certificate: not read"), "{text}");
    let (cert, key) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    std::fs::write(&cert, format!("{}{}", one.cert_pem, ca.pem())).unwrap();
    std::fs::write(&key, &one.key_pem).unwrap();
    let (code, out) = check(&cert, &key);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(2 certificates)"), "{out}");
    std::fs::write(&key, &two.key_pem).unwrap();
    let (code, out) = check(&cert, &key);
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("does not fit the certificate"), "{out}");
}

/// A client that connects and never starts the handshake is closed by the
/// header timeout, counted as one; the listener goes on serving.
#[test]
fn a_silent_client_is_closed_by_the_header_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let ca = Ca::new();
    install(&creds, &ca.leaf("erlmcp", 7));
    let (mcp, ops) = (free_port(), free_port());
    let mut child = spawn_daemon(
        &tmp.path().join("data"),
        mcp,
        ops,
        &[],
        &[
            TLS_ON,
            ("CREDENTIALS_DIRECTORY", creds.to_str().unwrap()),
            ("ERLMCP_HTTP__HEADER_READ_TIMEOUT_SECS", "1"),
        ],
    );
    wait_tls(mcp, &ca.der(), &mut child);
    let mut silent = TcpStream::connect(("127.0.0.1", mcp)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "the server closes a connection that never shakes hands"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ops_get(ops, "/metrics")
        .body
        .lines()
        .any(|l| l == r#"erlmcp_http_timeouts_total{timeout="header"} 1"#)
    {
        assert!(Instant::now() < deadline, "the timeout is not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = Session::open(Https::connect(mcp, &ca.der()).unwrap());
    assert_eq!(entity_names(&mut s), Vec::<String>::new());
    child.kill().unwrap();
    child.wait().unwrap();
}
