//! The configuration file (TOML), its defaults, and `ERLMCP_*` environment
//! overrides. Precedence: command-line flags > environment > file > defaults.
//! Unknown keys are rejected by name. Every key is documented in
//! `docs/configuration.md`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's name in logs, backups and replication.
    pub node_name: String,
    /// Where the database (and later backups) live.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub ops: OpsConfig,
    pub shutdown: ShutdownConfig,
    pub supervisor: SupervisorConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub mcp: McpConfig,
    pub tasks: TasksConfig,
    pub toolsets: ToolsetsConfig,
    pub prompts: Vec<PromptConfig>,
    pub backup: BackupConfig,
    pub replication: ReplicationConfig,
    pub upgrade: UpgradeConfig,
    pub limits: LimitsConfig,
    pub retention: RetentionConfig,
    pub auth: AuthConfig,
    pub tracing: TracingConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Answer requests with one JSON body instead of an SSE stream.
    pub json_response: bool,
    /// Host header values accepted (host part, any port). Empty: loopback
    /// names plus the listen address. `"*"` accepts any host.
    pub allowed_hosts: Vec<String>,
    /// Origin header values accepted in addition to http(s) origins on an
    /// allowed host. `"*"` accepts any origin.
    pub allowed_origins: Vec<String>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Sessions idle this long are ended.
    pub session_idle_timeout_secs: u64,
    /// The SSE `retry` hint sent to clients, in milliseconds.
    pub sse_retry_ms: u64,
    /// How long SSE events are kept for Last-Event-ID replay.
    pub event_retention_secs: u64,
    /// A session whose client has not sent `notifications/initialized`
    /// this long after `initialize` is ended.
    pub handshake_timeout_secs: u64,
    /// A request head must arrive whole within this long of its first byte.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in progress and no traffic this long
    /// is closed.
    pub idle_timeout_secs: u64,
    /// A request body must arrive whole within this long (408 otherwise).
    pub body_read_timeout_secs: u64,
    /// A connection whose client reads nothing of a response this long is
    /// closed.
    pub write_timeout_secs: u64,
    /// Largest request head (request line and headers); larger ones get 431.
    pub max_header_bytes: usize,
    pub tls: TlsConfig,
}

/// `[http.tls]`: HTTPS on the MCP listener. The files are read at start,
/// by `check-config`, and again on every reload (SIGHUP); see
/// `docs/operations/security.md`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve `/mcp` over TLS only (a restart changes this; a reload does not).
    pub enabled: bool,
    /// The certificate chain (PEM, the server's certificate first). A
    /// relative path names a file in `$CREDENTIALS_DIRECTORY` (systemd's
    /// `LoadCredential=`).
    pub cert_file: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1), relative like `cert_file`.
    pub key_file: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: false,
            cert_file: PathBuf::from("tls-cert"),
            key_file: PathBuf::from("tls-key"),
        }
    }
}

impl TlsConfig {
    /// Where the certificate chain is read from.
    pub fn cert_path(&self) -> Result<PathBuf, String> {
        credential_path("http.tls.cert_file", &self.cert_file)
    }

    /// Where the private key is read from.
    pub fn key_path(&self) -> Result<PathBuf, String> {
        credential_path("http.tls.key_file", &self.key_file)
    }

    /// Whether both files can be named here: absolute, or relative with
    /// `$CREDENTIALS_DIRECTORY` set. Not a validation rule: a build-time
    /// check (the NixOS module's) runs without the service's credentials,
    /// and the service reads them at start.
    pub fn files_reachable(&self) -> bool {
        self.cert_path().is_ok() && self.key_path().is_ok()
    }

    fn validate(&self) -> Result<(), String> {
        for (key, p) in [
            ("http.tls.cert_file", &self.cert_file),
            ("http.tls.key_file", &self.key_file),
        ] {
            if p.as_os_str().is_empty() {
                return Err(format!("{key} is empty"));
            }
        }
        Ok(())
    }
}

/// An absolute path as is; a relative one in `$CREDENTIALS_DIRECTORY`,
/// never in the working directory (which a service does not choose).
fn credential_path(key: &str, p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join(p)),
        _ => Err(format!(
            "{key} {:?} is relative, which names a systemd credential, but \
             $CREDENTIALS_DIRECTORY is not set; give an absolute path",
            p.display().to_string()
        )),
    }
}

/// `[limits]`: what one client (an address; the principal, with
/// `auth.mode = "tokens"`) and all clients together may hold or spend. Every
/// refusal is counted in `erlmcp_http_refusals_total{limit}`; see
/// `docs/operations/limits.md`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Token bucket per client: requests per second refilled (0: no limit) ...
    pub requests_per_sec: u32,
    /// ... and how many may be spent at once.
    pub request_burst: u32,
    /// Open connections, all clients together. Unset: the file-descriptor
    /// limit less a reserve for the database, backups and the ops listener.
    pub max_connections: Option<usize>,
    pub max_connections_per_client: usize,
    /// Legacy sessions that exist (in the database), all clients together.
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    /// Sessions kept in memory; others are read back from the database
    /// when used.
    pub session_cache: usize,
    /// Requests being served at once.
    pub max_requests_per_client: usize,
    pub max_requests_per_session: usize,
    /// Listening SSE streams open at once (GET streams, resumptions,
    /// `subscriptions/listen`).
    pub max_sse_streams_per_client: usize,
    pub max_sse_streams_per_session: usize,
}

/// `[retention]`: how much of what traffic writes the database keeps.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Audit rows older than this are deleted ...
    pub audit_max_age_secs: u64,
    /// ... and the oldest beyond this many (0: no limit).
    pub audit_max_rows: u64,
    /// SSE events kept for replay at most (0: no limit), and the most
    /// bytes of event data (0: no limit); age: `http.event_retention_secs`.
    pub events_max_rows: u64,
    pub events_max_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Serve `/healthz`, `/readyz`, `/metrics`, `/status`.
    pub enabled: bool,
    /// Bound beyond loopback (anything but 127.0.0.0/8 and ::1, so also
    /// 0.0.0.0), every state-changing endpoint asks for a bearer token
    /// with scope `ops` (or `*`).
    pub listen: SocketAddr,
    /// Ask for that token on loopback too.
    pub require_auth: bool,
    /// GET endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`,
    /// `/backups`) answer without a token even where writes need one.
    pub open_reads: bool,
}

/// Who may call the MCP endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// `auth.mode = "oauth"`: the authorization server(s) whose access
    /// tokens are accepted.
    pub oauth: OAuthConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone who reaches `/mcp` may call every tool (as before auth
    /// existed; for loopback and behind an authenticating proxy).
    #[default]
    Off,
    /// A static API token (`erlmcp token create`) in
    /// `Authorization: Bearer`, its scopes limiting the tools.
    Tokens,
    /// An OAuth 2.1 access token (a JWT) from an authorization server in
    /// `auth.oauth.issuer`, for this server's `auth.oauth.resource`.
    Oauth,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Off,
            oauth: OAuthConfig::default(),
        }
    }
}

/// erlmcp as an OAuth 2.1 resource server (the MCP authorization spec):
/// JWT access tokens checked against the issuer's JSON Web Key Set.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// The authorization server's issuer identifier(s), exactly as its
    /// metadata and its tokens' `iss` spell them. A string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// This server's canonical URI (RFC 8707 / RFC 9728), e.g.
    /// `https://mcp.example.com/mcp`: the audience every token must name.
    pub resource: String,
    /// The `aud` values accepted (a token must name one); empty: just
    /// `resource`. For providers that put something else there (Microsoft
    /// Entra: the application's client id).
    pub audience: Vec<String>,
    /// Where the signing keys are; unset: from the issuer's metadata
    /// (RFC 8414, then OpenID Connect discovery).
    pub jwks_uri: Option<String>,
    /// Advertised in the protected resource metadata; empty:
    /// `<toolset>:read` and `<toolset>:write` of every registered toolset.
    pub scopes_supported: Vec<String>,
    /// Signature algorithms accepted (never `none`, never `HS*`).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// A key id not in the cached key set fetches it again at most once
    /// per this many seconds (a flood of made-up `kid`s costs the
    /// authorization server nothing).
    pub jwks_refetch_secs: u64,
    /// Cached keys older than this are fetched again (so a key the
    /// issuer withdrew stops working); a failed fetch keeps them.
    pub jwks_max_age_secs: u64,
    /// A metadata or key set fetch must finish within this long.
    pub fetch_timeout_secs: u64,
    /// Longer bearer tokens are refused without being parsed.
    pub max_token_bytes: usize,
    /// Opaque (non-JWT) access tokens are checked at the authorization
    /// server's RFC 7662 introspection endpoint; unset: refused.
    pub introspection: Option<IntrospectionConfig>,
}

/// How erlmcp asks the authorization server about an opaque token.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    pub endpoint: String,
    /// erlmcp's own client id at the authorization server.
    pub client_id: String,
    /// The file holding its client secret (never the secret itself): an
    /// absolute path, or a name in `$CREDENTIALS_DIRECTORY` (systemd
    /// `LoadCredential=`).
    pub client_secret_file: String,
}

impl IntrospectionConfig {
    /// Where the client secret is read from.
    pub fn secret_path(&self) -> Result<PathBuf, String> {
        let p = Path::new(&self.client_secret_file);
        if p.is_absolute() {
            return Ok(p.to_owned());
        }
        match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => Ok(Path::new(&dir).join(p)),
            None => Err(format!(
                "auth.oauth.introspection.client_secret_file {:?} is relative and $CREDENTIALS_DIRECTORY is not set",
                self.client_secret_file
            )),
        }
    }

    /// The secret, trimmed of a trailing newline.
    pub fn read_secret(&self) -> Result<String, String> {
        let path = self.secret_path()?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the introspection client secret {}: {e}",
                path.display()
            )
        })?;
        let secret = text.trim_end_matches(['\n', '\r']).to_owned();
        if secret.is_empty() {
            return Err(format!(
                "the introspection client secret {} is empty",
                path.display()
            ));
        }
        Ok(secret)
    }
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            issuer: Vec::new(),
            resource: String::new(),
            audience: Vec::new(),
            jwks_uri: None,
            scopes_supported: Vec::new(),
            algorithms: ["RS256", "PS256", "ES256", "EdDSA"]
                .map(String::from)
                .to_vec(),
            leeway_secs: 60,
            jwks_refetch_secs: 30,
            jwks_max_age_secs: 3600,
            fetch_timeout_secs: 5,
            max_token_bytes: 8192,
            introspection: None,
        }
    }
}

/// Signature algorithms `auth.oauth.algorithms` may name.
pub const OAUTH_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl OAuthConfig {
    fn validate(&self) -> Result<(), String> {
        if self.issuer.is_empty() {
            return Err("auth.mode = \"oauth\" needs auth.oauth.issuer (the authorization server's issuer URL)".into());
        }
        for (i, iss) in self.issuer.iter().enumerate() {
            check_url("auth.oauth.issuer", iss)?;
            if self.issuer[..i].contains(iss) {
                return Err(format!("auth.oauth.issuer lists {iss:?} twice"));
            }
        }
        if self.resource.is_empty() {
            return Err("auth.mode = \"oauth\" needs auth.oauth.resource (this server's URL, e.g. https://mcp.example.com/mcp)".into());
        }
        check_url("auth.oauth.resource", &self.resource)?;
        if self.resource.contains('#') {
            return Err("auth.oauth.resource must not have a fragment (RFC 8707)".into());
        }
        if self.audience.iter().any(|a| a.trim().is_empty()) {
            return Err("auth.oauth.audience holds an empty value".into());
        }
        if let Some(uri) = &self.jwks_uri {
            check_url("auth.oauth.jwks_uri", uri)?;
            if self.issuer.len() > 1 {
                return Err("auth.oauth.jwks_uri needs exactly one issuer (each issuer has its own keys; leave jwks_uri unset to discover them)".into());
            }
        }
        for s in &self.scopes_supported {
            check_oauth_scope(s)?;
        }
        if self.algorithms.is_empty() {
            return Err("auth.oauth.algorithms is empty".into());
        }
        for a in &self.algorithms {
            if a.eq_ignore_ascii_case("none") || a.to_ascii_uppercase().starts_with("HS") {
                return Err(format!(
                    "auth.oauth.algorithms: {a:?} is never accepted (unsigned or shared-secret tokens); use {}",
                    OAUTH_ALGORITHMS.join(", ")
                ));
            }
            if !OAUTH_ALGORITHMS.contains(&a.as_str()) {
                return Err(format!(
                    "auth.oauth.algorithms: unknown algorithm {a:?}; use {}",
                    OAUTH_ALGORITHMS.join(", ")
                ));
            }
        }
        if self.leeway_secs > 600 {
            return Err("auth.oauth.leeway_secs must be at most 600".into());
        }
        for (key, v) in [
            ("auth.oauth.jwks_refetch_secs", self.jwks_refetch_secs),
            ("auth.oauth.jwks_max_age_secs", self.jwks_max_age_secs),
            ("auth.oauth.fetch_timeout_secs", self.fetch_timeout_secs),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if !(512..=65536).contains(&self.max_token_bytes) {
            return Err("auth.oauth.max_token_bytes must be between 512 and 65536".into());
        }
        if let Some(i) = &self.introspection {
            check_url("auth.oauth.introspection.endpoint", &i.endpoint)?;
            if i.client_id.is_empty() || i.client_id.contains(':') {
                return Err(
                    "auth.oauth.introspection.client_id must be set and hold no ':'".into(),
                );
            }
            // Read now, so check-config and a start-up say what is wrong.
            i.read_secret()?;
        }
        Ok(())
    }
}

/// A scope's spelling in `auth.oauth.scopes_supported`: printable ASCII
/// without spaces, quotes or backslashes (RFC 6749 §3.3), so it can go
/// into a `WWW-Authenticate` header.
fn check_oauth_scope(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(format!("auth.oauth.scopes_supported: invalid scope {s:?}"))
    }
}

/// An absolute `https` URL (plain `http` only on loopback, for tests and
/// a provider on the same host), without user info.
fn check_url(key: &str, url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| format!("{key}: {url:?} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or("");
    if host.is_empty() || url.contains('@') {
        return Err(format!(
            "{key}: {url:?} must be an absolute URL with a host and no user info"
        ));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        Some("http") => Err(format!(
            "{key}: {url:?} must use https (http only on loopback)"
        )),
        _ => Err(format!("{key}: {url:?} must be an https URL")),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long a stop waits for in-flight requests before giving up on them.
    pub drain_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// More restarts than this within `within_secs` escalate (at the root:
    /// the process exits non-zero and systemd restarts it).
    pub max_restarts: usize,
    pub within_secs: u64,
}

/// How hard a commit waits for the disk (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a crash of erlmcp, not of the OS.
    Normal,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub synchronous: Synchronous,
    pub readers: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full tracing filter.
    /// `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub page_size: usize,
    pub client_request_timeout_secs: u64,
    pub instructions: Option<String>,
    pub audit_tool_calls: bool,
    pub list_ttl_ms: u64,
}

/// `[tasks]`: tool calls that answer now with a task handle and finish
/// later (MCP tasks, 2025-11-25 and the 2026-07-28 extension).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// How long a task (and its result) is kept when the client asks for
    /// no particular time.
    pub default_ttl_secs: u64,
    /// The longest a client may ask a task to be kept.
    pub max_ttl_secs: u64,
    /// The polling interval suggested to clients.
    pub poll_interval_ms: u64,
    /// A modern call of a tool that may run as a task, still running after
    /// this long, is answered with a task instead of waiting for it.
    pub promote_after_ms: u64,
    /// Tasks not yet finished that one session or principal may have at
    /// once; 0 turns task creation off.
    pub max_live_per_owner: usize,
    /// Largest result a task keeps; a bigger one fails the task.
    pub max_result_bytes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsetsConfig {
    pub memory: MemoryConfig,
    pub files: FilesConfig,
    pub conformance: ConformanceConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    pub enabled: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    pub enabled: bool,
    pub roots: Vec<FileRoot>,
    /// Files larger than this are listed but not read.
    pub max_file_bytes: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRoot {
    /// Appears in resource names.
    pub name: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ConformanceConfig {
    pub enabled: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub arguments: Vec<PromptArgumentConfig>,
    /// Text with `{{argument}}` placeholders.
    pub template: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PromptArgumentConfig {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Offered by `completion/complete`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// `[backup]`: scheduled, verified snapshots of the database (see
/// `docs/operations/backup-and-restore.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Run the scheduler in the daemon. Off for ad-hoc runs; the packaged
    /// units turn it on. `erlmcp backup create` works either way.
    pub enabled: bool,
    /// Where backups go; default `<data_dir>/backups`.
    pub dir: Option<PathBuf>,
    /// When: an interval (`"15m"`, `"6h"`) or calendar times (`"hourly"`,
    /// `"daily 03:30"`, `"*:00/15"`), UTC. Grammar in `crate::clock::schedule`.
    pub schedule: String,
    /// Retention: the newest N good backups are always kept ...
    pub keep_last: usize,
    /// ... plus the newest of each of the last N hours, days, ISO weeks.
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    /// Pages copied per step of the SQLite backup API ...
    pub step_pages: u32,
    /// ... and the pause between steps, so the copy does not hog the disk.
    pub step_pause_ms: u64,
    /// zstd level (1-19).
    pub compression_level: i32,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            enabled: false,
            dir: None,
            schedule: "hourly".into(),
            keep_last: 3,
            hourly: 24,
            daily: 7,
            weekly: 4,
            step_pages: 1024,
            step_pause_ms: 2,
            compression_level: 3,
        }
    }
}

impl BackupConfig {
    /// The backup directory for a data directory.
    pub fn dir_for(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("backups"))
    }

    fn validate(&self) -> Result<(), String> {
        crate::clock::Schedule::parse(&self.schedule)
            .map_err(|e| format!("backup.schedule: {e}"))?;
        if self.step_pages == 0 {
            return Err("backup.step_pages must be at least 1".into());
        }
        if !(1..=19).contains(&self.compression_level) {
            return Err("backup.compression_level must be between 1 and 19".into());
        }
        if self.keep_last == 0 {
            return Err("backup.keep_last must be at least 1".into());
        }
        Ok(())
    }
}

/// `[upgrade]`: releases on probation, and `erlmcp upgrade apply` (see
/// `docs/operations/upgrades.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// A release this data has not run before is confirmed once it has been
    /// ready, its watchdog healthy, this long without a break.
    pub probation_secs: u64,
    /// `erlmcp upgrade apply` rolls back when the new release is not
    /// confirmed this long after its restart.
    pub deadline_secs: u64,
    /// Where releases live, one directory per release holding `erlmcp`.
    pub releases_dir: PathBuf,
    /// The link the service runs (`<current_link>/erlmcp`), pointing into
    /// `releases_dir`.
    pub current_link: PathBuf,
    /// The systemd unit to restart.
    pub unit: String,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            probation_secs: 30,
            deadline_secs: 180,
            releases_dir: PathBuf::from("/opt/erlmcp/releases"),
            current_link: PathBuf::from("/opt/erlmcp/current"),
            unit: "erlmcp.service".into(),
        }
    }
}

impl UpgradeConfig {
    fn validate(&self) -> Result<(), String> {
        if self.probation_secs == 0 {
            return Err("upgrade.probation_secs must be at least 1".into());
        }
        if self.deadline_secs <= self.probation_secs {
            return Err("upgrade.deadline_secs must be longer than upgrade.probation_secs".into());
        }
        Ok(())
    }
}

/// `[replication]`: a primary and a hot standby (see
/// `docs/operations/replication-and-failover.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Record every change in the replication log and pair with `peer`.
    pub enabled: bool,
    /// The other node's ops listener (`HOST:PORT`).
    pub peer: Option<String>,
    /// The role at the very first start; afterwards the node keeps the role
    /// it had (`erlmcp role` changes it).
    pub initial_role: InitialRole,
    /// `sync`: a write is acknowledged once the standby has it durably.
    /// `async`: on the local commit (the standby lags, RPO > 0).
    pub mode: ReplicationMode,
    /// Sync mode, when the standby stops acknowledging: `block` (writes
    /// wait `ack_timeout_ms`, then fail) or `degrade` (go on alone).
    pub on_standby_loss: StandbyLoss,
    /// How long a write waits for the standby.
    pub ack_timeout_ms: u64,
    /// How often each node asks the peer for its role and epoch.
    pub peer_check_ms: u64,
    /// A file holding the shared secret both nodes present. Default:
    /// `$CREDENTIALS_DIRECTORY/replication-secret` (systemd credentials).
    pub secret_file: Option<PathBuf>,
    /// Log entries kept at most, whatever the standby and the backups
    /// still need: a standby further behind takes a snapshot.
    pub max_log_entries: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitialRole {
    Primary,
    #[default]
    Standby,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    #[default]
    Sync,
    Async,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StandbyLoss {
    #[default]
    Block,
    Degrade,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            enabled: false,
            peer: None,
            initial_role: InitialRole::Standby,
            mode: ReplicationMode::Sync,
            on_standby_loss: StandbyLoss::Block,
            ack_timeout_ms: 5000,
            peer_check_ms: 1000,
            secret_file: None,
            max_log_entries: 100_000,
        }
    }
}

impl ReplicationConfig {
    /// Where the shared secret is read from.
    pub fn secret_path(&self) -> Option<PathBuf> {
        self.secret_file.clone().or_else(|| {
            std::env::var_os("CREDENTIALS_DIRECTORY")
                .map(|d| PathBuf::from(d).join("replication-secret"))
        })
    }

    fn validate(&self, c: &Config) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let Some(peer) = &self.peer else {
            return Err("replication.peer must name the other node's ops listener".into());
        };
        if peer
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            return Err(format!("replication.peer {peer:?} is not HOST:PORT"));
        }
        if !c.ops.enabled {
            return Err("replication needs the ops listener (ops.enabled = true)".into());
        }
        if self.ack_timeout_ms < 100 {
            return Err("replication.ack_timeout_ms must be at least 100".into());
        }
        if self.peer_check_ms < 100 {
            return Err("replication.peer_check_ms must be at least 100".into());
        }
        if self.max_log_entries < 1000 {
            return Err("replication.max_log_entries must be at least 1000".into());
        }
        // Where the secret is found is not checked here: the default is the
        // service's credential, which only the daemon sees. `erlmcp
        // check-config` at build time, and keepalived's hooks (`erlmcp role
        // --config`, `erlmcp ready --config`), read this file without it;
        // `serve` refuses to start without the secret (exit 78).
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: default_node_name(),
            data_dir: default_data_dir(),
            http: HttpConfig::default(),
            ops: OpsConfig::default(),
            shutdown: ShutdownConfig::default(),
            supervisor: SupervisorConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig::default(),
            mcp: McpConfig::default(),
            tasks: TasksConfig::default(),
            toolsets: ToolsetsConfig::default(),
            prompts: Vec::new(),
            backup: BackupConfig::default(),
            replication: ReplicationConfig::default(),
            upgrade: UpgradeConfig::default(),
            limits: LimitsConfig::default(),
            retention: RetentionConfig::default(),
            auth: AuthConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            json_response: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: 4 * 1024 * 1024,
            session_idle_timeout_secs: 24 * 3600,
            sse_retry_ms: 3000,
            event_retention_secs: 3600,
            handshake_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            write_timeout_secs: 30,
            max_header_bytes: 64 * 1024,
            tls: TlsConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_sec: 100,
            request_burst: 200,
            max_connections: None,
            max_connections_per_client: 256,
            max_sessions: 50_000,
            max_sessions_per_client: 1_000,
            session_cache: 10_000,
            max_requests_per_client: 128,
            max_requests_per_session: 32,
            max_sse_streams_per_client: 128,
            max_sse_streams_per_session: 4,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            audit_max_age_secs: 90 * 24 * 3600,
            audit_max_rows: 1_000_000,
            events_max_rows: 10_000,
            events_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9718)),
            require_auth: false,
            open_reads: true,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_secs: 10,
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 5,
            within_secs: 60,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            synchronous: Synchronous::Full,
            readers: 2,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            page_size: 100,
            client_request_timeout_secs: 60,
            instructions: None,
            audit_tool_calls: true,
            list_ttl_ms: 60_000,
        }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            default_ttl_secs: 3600,
            max_ttl_secs: 7 * 24 * 3600,
            poll_interval_ms: 500,
            promote_after_ms: 250,
            max_live_per_owner: 64,
            max_result_bytes: 4 * 1024 * 1024,
        }
    }
}

impl TasksConfig {
    fn validate(&self) -> Result<(), String> {
        if self.default_ttl_secs == 0 || self.default_ttl_secs > self.max_ttl_secs {
            return Err("tasks.default_ttl_secs must be between 1 and tasks.max_ttl_secs".into());
        }
        if self.poll_interval_ms == 0 {
            return Err("tasks.poll_interval_ms must be at least 1".into());
        }
        if self.max_result_bytes < 1024 {
            return Err("tasks.max_result_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { enabled: true }
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            enabled: false,
            roots: Vec::new(),
            max_file_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `$STATE_DIRECTORY` when systemd sets it (first entry), else `./erlmcp-data`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var("STATE_DIRECTORY") {
        Ok(dirs) if !dirs.is_empty() => PathBuf::from(dirs.split(':').next().unwrap_or(&dirs)),
        _ => PathBuf::from("erlmcp-data"),
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "erlmcp".into())
}

/// The prefix of environment overrides; `__` separates nesting levels:
/// `ERLMCP_HTTP__LISTEN=0.0.0.0:8080` sets `http.listen`.
pub const ENV_PREFIX: &str = "ERLMCP_";

/// Variables with the prefix that are not configuration keys: the ops
/// token the command line presents (`docs/operations/security.md`).
const NOT_CONFIG: &[&str] = &["ERLMCP_OPS_TOKEN"];

impl Config {
    /// Loads `path` (or defaults when `None`) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "(defaults)".to_owned()),
        };
        Self::from_table(table, std::env::vars(), &origin)
    }

    /// Builds a config from a parsed file plus environment variables.
    pub fn from_table(
        mut table: toml::Table,
        env: impl Iterator<Item = (String, String)>,
        origin: &str,
    ) -> Result<Config, ConfigError> {
        for (key, value) in env {
            if NOT_CONFIG.contains(&key.as_str()) {
                continue;
            }
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            apply_env(&mut table, rest, &value);
        }
        let config: Config =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.http.max_body_bytes < 1024 {
            return Err("http.max_body_bytes must be at least 1024".into());
        }
        if self.mcp.page_size == 0 {
            return Err("mcp.page_size must be at least 1".into());
        }
        if self.ops.enabled && self.ops.listen == self.http.listen && self.http.listen.port() != 0 {
            return Err("ops.listen must differ from http.listen".into());
        }
        if self.supervisor.within_secs == 0 {
            return Err("supervisor.within_secs must be at least 1".into());
        }
        if self.store.readers == 0 || self.store.readers > 64 {
            return Err("store.readers must be between 1 and 64".into());
        }
        if self.toolsets.files.enabled && self.toolsets.files.roots.is_empty() {
            return Err("toolsets.files is enabled but lists no roots".into());
        }
        self.http.tls.validate()?;
        self.backup.validate()?;
        self.tasks.validate()?;
        self.replication.validate(self)?;
        self.upgrade.validate()?;
        self.validate_limits()?;
        self.tracing.validate()?;
        if self.auth.mode == AuthMode::Oauth {
            self.auth.oauth.validate()?;
        }
        for (i, p) in self.prompts.iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(format!("prompts[{i}].name is empty"));
            }
            if self.prompts[..i].iter().any(|q| q.name == p.name) {
                return Err(format!("prompt {:?} is declared twice", p.name));
            }
        }
        Ok(())
    }
}

/// `[tracing]`: OpenTelemetry traces of MCP requests, exported over OTLP
/// (HTTP/protobuf). Off while `otlp_endpoint` is unset. Read at start; a
/// reload does not change it (see `docs/operations/traces.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://127.0.0.1:4318`; plain
    /// HTTP only); spans go to `<otlp_endpoint>/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of traces started here that are kept (0.0 to 1.0); a request
    /// whose `traceparent` says sampled or not keeps its caller's decision.
    pub sampling_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "erlmcp".into(),
            sampling_ratio: 1.0,
        }
    }
}

impl TracingConfig {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err("tracing.sampling_ratio must be between 0.0 and 1.0".into());
        }
        if self.service_name.trim().is_empty() {
            return Err("tracing.service_name is empty".into());
        }
        // No TLS client is built in: export to a collector on this host
        // or its private network, which forwards.
        if let Some(e) = &self.otlp_endpoint
            && !e.starts_with("http://")
        {
            return Err(format!(
                "tracing.otlp_endpoint {e:?} must be an http:// URL (a local collector)"
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_limits(&self) -> Result<(), String> {
        let h = &self.http;
        for (key, v) in [
            ("http.handshake_timeout_secs", h.handshake_timeout_secs),
            ("http.header_read_timeout_secs", h.header_read_timeout_secs),
            ("http.idle_timeout_secs", h.idle_timeout_secs),
            ("http.body_read_timeout_secs", h.body_read_timeout_secs),
            ("http.write_timeout_secs", h.write_timeout_secs),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        // hyper's read buffer cannot be smaller than 8 KiB.
        if h.max_header_bytes < 8192 {
            return Err("http.max_header_bytes must be at least 8192".into());
        }
        let l = &self.limits;
        if l.requests_per_sec > 0 && l.request_burst == 0 {
            return Err(
                "limits.request_burst must be at least 1 when requests_per_sec is set".into(),
            );
        }
        for (key, v) in [
            ("limits.max_connections", l.max_connections.unwrap_or(1)),
            (
                "limits.max_connections_per_client",
                l.max_connections_per_client,
            ),
            ("limits.max_sessions", l.max_sessions),
            ("limits.max_sessions_per_client", l.max_sessions_per_client),
            ("limits.session_cache", l.session_cache),
            ("limits.max_requests_per_client", l.max_requests_per_client),
            (
                "limits.max_requests_per_session",
                l.max_requests_per_session,
            ),
            (
                "limits.max_sse_streams_per_client",
                l.max_sse_streams_per_client,
            ),
            (
                "limits.max_sse_streams_per_session",
                l.max_sse_streams_per_session,
            ),
        ] {
            if v == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.retention.audit_max_age_secs == 0 {
            return Err("retention.audit_max_age_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Sets `a.b.c` from `A__B__C=value`; the value is read as TOML when it
/// parses (numbers, booleans, arrays), as a plain string otherwise.
fn apply_env(table: &mut toml::Table, path: &str, raw: &str) {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let mut cur = table;
    for k in &keys[..keys.len() - 1] {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let Some(t) = entry.as_table_mut() else {
            return;
        };
        cur = t;
    }
    if let Some(last) = keys.last() {
        cur.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_table(table, env, "test")
    }

    #[test]
    fn empty_config_has_safe_defaults() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert!(c.toolsets.memory.enabled);
        assert!(!c.toolsets.conformance.enabled);
        assert_eq!(c.store.synchronous, Synchronous::Full);
        assert!(!c.backup.enabled);
        assert_eq!(c.backup.dir_for(Path::new("/d")), Path::new("/d/backups"));
    }

    #[test]
    fn backup_settings_are_checked() {
        let c = parse("[backup]\nenabled = true\nschedule = 'daily 03:30'\n", &[]).unwrap();
        assert!(c.backup.enabled);
        let e = parse("[backup]\nschedule = 'sometimes'\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup.schedule"), "{e}");
        let e = parse("[backup]\nkeep_last = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep_last"), "{e}");
    }

    #[test]
    fn limits_and_retention_have_production_defaults_and_are_checked() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.limits.requests_per_sec, 100);
        assert_eq!(c.limits.max_connections, None, "derived from the fd limit");
        assert_eq!(c.http.handshake_timeout_secs, 30);
        assert_eq!(c.retention.audit_max_rows, 1_000_000);
        let c = parse(
            "[limits]\nrequests_per_sec = 0\nmax_connections = 10\n",
            &[("ERLMCP_RETENTION__EVENTS_MAX_BYTES", "0")],
        )
        .unwrap();
        assert_eq!(c.limits.max_connections, Some(10));
        assert_eq!(c.retention.events_max_bytes, 0);
        for (bad, key) in [
            ("[limits]\nmax_sessions = 0\n", "limits.max_sessions"),
            ("[limits]\nrequest_burst = 0\n", "limits.request_burst"),
            ("[http]\nidle_timeout_secs = 0\n", "http.idle_timeout_secs"),
            ("[http]\nmax_header_bytes = 100\n", "http.max_header_bytes"),
            (
                "[retention]\naudit_max_age_secs = 0\n",
                "audit_max_age_secs",
            ),
        ] {
            let e = parse(bad, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn tracing_is_off_by_default_and_checked() {
        let c = parse("", &[]).unwrap();
        assert_eq!(c.tracing.otlp_endpoint, None);
        let on = parse("[tracing]\notlp_endpoint = 'http://127.0.0.1:4318'\n", &[]).unwrap();
        assert_eq!(on.tracing.service_name, "erlmcp");
        for (bad, says) in [
            (
                "[tracing]\nsampling_ratio = 1.5\n",
                "tracing.sampling_ratio",
            ),
            (
                "[tracing]\nsampling_ratio = -0.1\n",
                "tracing.sampling_ratio",
            ),
            ("[tracing]\nservice_name = ' '\n", "tracing.service_name"),
            (
                "[tracing]\notlp_endpoint = 'https://collector:4318'\n",
                "must be an http:// URL",
            ),
            (
                "[tracing]\notlp_endpoint = '127.0.0.1:4318'\n",
                "must be an http:// URL",
            ),
            ("[tracing]\nendpoint = 'http://x'\n", "endpoint"),
        ] {
            let e = parse(bad, &[]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse("[http]\nlisten_port = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
        let e = parse("colour = 'red'\n", &[]).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let e = parse("", &[("ERLMCP_HTTP__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = parse(
            "[http]\nlisten = '127.0.0.1:1'\n",
            &[
                ("ERLMCP_HTTP__LISTEN", "0.0.0.0:9"),
                ("ERLMCP_HTTP__JSON_RESPONSE", "true"),
                ("ERLMCP_NODE_NAME", "alpha"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9");
        assert!(c.http.json_response);
        assert_eq!(c.node_name, "alpha");
    }

    #[test]
    fn wrong_types_and_values_are_explained() {
        let e = parse("[http]\nlisten = 'nowhere'\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") || e.contains("address"), "{e}");
        let e = parse("[toolsets.files]\nenabled = true\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no roots"), "{e}");
        let e = parse(
            "[[prompts]]\nname='a'\ntemplate='x'\n[[prompts]]\nname='a'\ntemplate='y'\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
