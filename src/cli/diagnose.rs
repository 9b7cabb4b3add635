//! `erlmcp diagnose [--output FILE]`: one archive (tar, zstd-compressed)
//! to attach to a ticket, like `sos report`: the version, the daemon's
//! status and a metrics snapshot (through its ops listener), the effective
//! configuration, the unit's recent journal lines, the database's
//! integrity check and sizes, and the backup catalogue. Each part that
//! cannot be gathered is noted in `manifest.json` instead of failing the
//! whole bundle: a support bundle is most needed when things are broken.
//!
//! Safe to share: configuration keys that name a secret are redacted, and
//! the value of every credential erlmcp may read (the configured
//! `secret_file`, `$CREDENTIALS_DIRECTORY`, and
//! `/run/credentials/<unit>.service`) is replaced wherever it appears.

use clap::Args;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::CliError;
use super::output;
use crate::backup::{Backups, catalog};
use crate::config::Config;
use crate::ops::client::OpsClient;
use crate::store::DB_FILE;

/// What replaces a secret in the bundle.
const REDACTED: &str = "<redacted>";
/// Configuration keys whose string values are secrets (a `*_file` key
/// holds a path, which is kept).
const SECRET_WORDS: [&str; 4] = ["secret", "password", "token", "credential"];
/// Credentials shorter than this are not searched for: replacing every
/// "1" or "on" would garble the bundle and protect nothing.
const MIN_SECRET_LEN: usize = 6;

#[derive(Args, Debug)]
pub(super) struct DiagnoseArgs {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Directory of the database (default: from the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The daemon's ops listener (default: from the configuration).
    #[arg(long, value_name = "ADDR:PORT")]
    ops: Option<SocketAddr>,
    /// Where to write the archive (default:
    /// `erlmcp-diagnose-<node>-<UTC time>.tar.zst` in the current directory).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The systemd unit whose journal lines are included.
    #[arg(long, default_value = "erlmcp")]
    unit: String,
    /// How many of its latest journal lines.
    #[arg(long, default_value_t = 2000)]
    journal_lines: u32,
    /// Machine-readable output (the manifest, one JSON document on stdout).
    #[arg(long)]
    json: bool,
}

/// The bundle's table of contents (`manifest.json` in it, and `--json`).
#[derive(Debug, Serialize)]
struct Manifest {
    output: PathBuf,
    erlmcp_version: &'static str,
    node_name: String,
    created_at: String,
    /// Occurrences of credential values replaced.
    secrets_redacted: usize,
    parts: Vec<Part>,
}

#[derive(Debug, Serialize)]
struct Part {
    file: &'static str,
    outcome: Outcome,
    /// Why a part is missing, or what it covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    bytes: usize,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Ok,
    Skipped,
    Failed,
}

/// The database's integrity and sizes (`database.json`).
#[derive(Debug, Serialize)]
struct Database {
    path: PathBuf,
    size_bytes: Option<u64>,
    wal_bytes: Option<u64>,
    schema_version: Option<i64>,
    /// `ok`, or the first problems `PRAGMA integrity_check` reports.
    integrity: Vec<String>,
    data_dir_avail_bytes: Option<u64>,
    data_dir_size_bytes: Option<u64>,
}

pub(super) fn run(args: DiagnoseArgs) -> Result<(), CliError> {
    let mut c = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    let ops = args.ops.unwrap_or(c.ops.listen);
    let now = crate::clock::now_secs();
    let output = args.output.clone().unwrap_or_else(|| {
        let stamp = crate::clock::rfc3339(now).replace([':', '-'], "");
        PathBuf::from(format!("erlmcp-diagnose-{}-{stamp}.tar.zst", c.node_name))
    });

    let mut files: Vec<(&'static str, Result<Vec<u8>, Gap>)> = vec![
        ("version.txt", Ok(version_text().into_bytes())),
        ("config.toml", config_text(&c).map(String::into_bytes)),
    ];
    let client = OpsClient::new(ops, Some(Duration::from_secs(10)));
    for (file, path) in [("status.json", "/status"), ("metrics.txt", "/metrics")] {
        let got = client
            .get_text(path)
            .map(String::into_bytes)
            .map_err(|e| Gap::Failed(e.to_string()));
        files.push((file, got));
    }
    files.push(("journal.txt", journal(&args.unit, args.journal_lines)));
    files.push(("database.json", Ok(json(&database(&c.data_dir)))));
    files.push((
        "backups.json",
        catalog::list(&Backups::from_config(&c))
            .map(|entries| json(&entries))
            .map_err(|e| Gap::Failed(e.to_string())),
    ));

    let secrets = credentials(&c, &args.unit);
    let mut manifest = Manifest {
        output: output.clone(),
        erlmcp_version: crate::release::VERSION,
        node_name: c.node_name.clone(),
        created_at: crate::clock::rfc3339(now),
        secrets_redacted: 0,
        parts: Vec::new(),
    };
    let mut members = Vec::new();
    for (file, got) in files {
        let (outcome, detail, bytes) = match got {
            Ok(b) => {
                let (b, n) = scrub(b, &secrets);
                manifest.secrets_redacted += n;
                (Outcome::Ok, None, b)
            }
            Err(Gap::Skipped(why)) => (Outcome::Skipped, Some(why), Vec::new()),
            Err(Gap::Failed(why)) => (Outcome::Failed, Some(why), Vec::new()),
        };
        // An error message may quote what it failed on.
        let detail = detail.map(|d| {
            let (d, n) = scrub(d.into_bytes(), &secrets);
            manifest.secrets_redacted += n;
            String::from_utf8_lossy(&d).into_owned()
        });
        manifest.parts.push(Part {
            file,
            outcome,
            detail,
            bytes: bytes.len(),
        });
        if !bytes.is_empty() {
            members.push((file, bytes));
        }
    }
    members.push(("manifest.json", json(&manifest)));
    write_archive(&output, &members, now)?;
    output::print(&manifest, args.json, |m| {
        println!("wrote {}", m.output.display());
        for p in &m.parts {
            let what = match p.outcome {
                Outcome::Ok => "ok",
                Outcome::Skipped => "skipped",
                Outcome::Failed => "FAILED",
            };
            match &p.detail {
                Some(d) => println!("  {:<14} {what}: {d}", p.file),
                None => println!("  {:<14} {what}", p.file),
            }
        }
        if m.secrets_redacted > 0 {
            println!("  {} credential value(s) redacted", m.secrets_redacted);
        }
    });
    Ok(())
}

/// Why a part of the bundle is missing.
enum Gap {
    /// Nothing to gather here (no journal on this host).
    Skipped(String),
    Failed(String),
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("bundle parts are plain data");
    b.push(b'\n');
    b
}

fn version_text() -> String {
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_owned());
    format!(
        "erlmcp {}\nos {os}\narch {}\n",
        crate::release::VERSION,
        std::env::consts::ARCH
    )
}

/// The effective configuration as TOML, with the values of keys that name
/// a secret replaced.
fn config_text(c: &Config) -> Result<String, Gap> {
    let mut v = toml::Value::try_from(c).map_err(|e| Gap::Failed(e.to_string()))?;
    redact_keys(&mut v);
    toml::to_string_pretty(&v).map_err(|e| Gap::Failed(e.to_string()))
}

fn redact_keys(v: &mut toml::Value) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let k = k.to_ascii_lowercase();
                let secret = SECRET_WORDS.iter().any(|w| k.contains(w))
                    && !k.ends_with("_file")
                    && !k.ends_with("_path");
                if secret && v.is_str() {
                    *v = toml::Value::String(REDACTED.into());
                } else {
                    redact_keys(v);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact_keys),
        _ => {}
    }
}

/// The unit's latest journal lines, when this host has a journal.
fn journal(unit: &str, lines: u32) -> Result<Vec<u8>, Gap> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "short-iso-precise", "-n"])
        .arg(lines.to_string())
        .arg("-u")
        .arg(unit)
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Gap::Skipped("journalctl not found".into()))
        }
        Err(e) => Err(Gap::Failed(format!("journalctl: {e}"))),
        Ok(o) if !o.status.success() => Err(Gap::Failed(format!(
            "journalctl: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
        Ok(o) => Ok(o.stdout),
    }
}

/// Sizes and `PRAGMA integrity_check` on a read-only connection (a running
/// daemon keeps writing; the check reads a consistent snapshot).
fn database(data_dir: &Path) -> Database {
    let path = data_dir.join(DB_FILE);
    let len = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
    let space = crate::fsx::space(data_dir).ok();
    let mut d = Database {
        size_bytes: len(&path),
        wal_bytes: len(&data_dir.join(format!("{DB_FILE}-wal"))),
        schema_version: None,
        integrity: Vec::new(),
        data_dir_avail_bytes: space.as_ref().map(|s| s.avail_bytes),
        data_dir_size_bytes: space.as_ref().map(|s| s.size_bytes),
        path,
    };
    if d.size_bytes.is_none() {
        d.integrity.push("no database file".into());
        return d;
    }
    let check = || -> rusqlite::Result<(i64, Vec<String>)> {
        let conn = rusqlite::Connection::open_with_flags(
            &d.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((version, rows))
    };
    match check() {
        Ok((version, rows)) => {
            d.schema_version = Some(version);
            d.integrity = rows;
        }
        Err(e) => d.integrity.push(format!("cannot check: {e}")),
    }
    d
}

/// The values of the credentials erlmcp may read on this host.
fn credentials(c: &Config, unit: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = c.replication.secret_path().into_iter().collect();
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from(format!("/run/credentials/{unit}.service"))];
    if let Some(d) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        if let Ok(entries) = std::fs::read_dir(&d) {
            files.extend(entries.flatten().map(|e| e.path()));
        }
    }
    let mut secrets = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        // The file as written, and without the line end most carry.
        let trimmed = bytes.trim_ascii().to_vec();
        for s in [bytes, trimmed] {
            if s.len() >= MIN_SECRET_LEN && !secrets.contains(&s) {
                secrets.push(s);
            }
        }
    }
    // Longest first: a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// `bytes` with every occurrence of each secret replaced, and how many.
fn scrub(mut bytes: Vec<u8>, secrets: &[Vec<u8>]) -> (Vec<u8>, usize) {
    let mut count = 0;
    for s in secrets {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(s) {
                out.extend_from_slice(REDACTED.as_bytes());
                i += s.len();
                count += 1;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    (bytes, count)
}

/// The members under one directory (`erlmcp-diagnose/`), as a
/// zstd-compressed tar, written to a temporary name then renamed: a
/// half-written bundle never carries the final name.
fn write_archive(path: &Path, members: &[(&str, Vec<u8>)], mtime: i64) -> Result<(), CliError> {
    let tmp = path.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut tar = tar::Builder::new(zstd::Encoder::new(file, 3)?.auto_finish());
        for (name, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(mtime.max(0) as u64);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("erlmcp-diagnose/{name}"), &bytes[..])?;
        }
        tar.into_inner()?;
        Ok(())
    };
    let done = write().and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::Other {
            message: format!("cannot write {}: {e}", path.display()),
            code: crate::exit::CANT_CREATE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_occurrence_longest_first() {
        let secrets = vec![b"hunter2-long".to_vec(), b"hunter2".to_vec()];
        let (out, n) = scrub(b"a hunter2-long b hunter2 c".to_vec(), &secrets);
        assert_eq!(out, b"a <redacted> b <redacted> c");
        assert_eq!(n, 2);
    }

    #[test]
    fn keys_naming_a_secret_are_redacted_paths_kept() {
        let mut v: toml::Value = toml::from_str(
            "[a]\napi_token = \"t0ps3cret\"\nsecret_file = \"/run/x\"\nname = \"n\"\n",
        )
        .unwrap();
        redact_keys(&mut v);
        assert_eq!(v["a"]["api_token"].as_str(), Some(REDACTED));
        assert_eq!(v["a"]["secret_file"].as_str(), Some("/run/x"));
        assert_eq!(v["a"]["name"].as_str(), Some("n"));
    }
}
