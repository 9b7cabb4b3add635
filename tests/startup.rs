//! Starting up: refusing a database from a newer erlmcp without touching
//! it, refusing bad configuration by name, documented exit codes.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "error");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_database_from_a_newer_erlmcp_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("erlmcp.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE future(x); PRAGMA user_version = 999;")
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    let files_before: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let port = free_port().to_string();
    let (code, err) = run(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("999") && err.contains("newer"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "not one byte changed");
    let files_after: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files_before, files_after, "no WAL or other file created");
    let (code, _) = run(&["stdio", "--data-dir", data.to_str().unwrap()], &[]);
    assert_eq!(code, Some(65));
}

#[test]
fn bad_configuration_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[http]\nlisten = '127.0.0.1:1'\nlisen_typo = true\n").unwrap();
    let (code, err) = run(&["serve", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, Some(78));
    assert!(err.contains("lisen_typo"), "{err}");
    let (code, err) = run(&["check-config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, Some(78));
    assert!(err.contains("lisen_typo"), "{err}");
    let (code, err) = run(&["check-config", "/nonexistent.toml"], &[]);
    assert_eq!(code, Some(78), "{err}");
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[http]\nlisten = '127.0.0.1:9999'\n[[prompts]]\nname = 'p'\ntemplate = 'x'\n",
    )
    .unwrap();
    let (code, err) = run(&["check-config", good.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(
        &[
            "serve",
            "--data-dir",
            tmp.path().join("d").to_str().unwrap(),
        ],
        &[("ERLMCP_STORE__SYNCHRONOUS", "sometimes")],
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("sometimes") || err.contains("synchronous"),
        "{err}"
    );
    let (code, _) = run(&["serve", "--bogus-flag"], &[]);
    assert_eq!(code, Some(2));
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let (code, err) = run(
        &[
            "serve",
            "--data-dir",
            tmp.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains(&port.to_string()), "{err}");
}

#[test]
fn version_flag_prints_the_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn prompts_come_from_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[[prompts]]
name = "review"
title = "Code review"
description = "Review some code"
template = "Review this {{language}} code:\n{{code}}"
[[prompts.arguments]]
name = "language"
required = true
values = ["rust", "ruby", "python"]
[[prompts.arguments]]
name = "code"
required = true
"#,
    )
    .unwrap();
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    let (mut s, _) = Session::open(&server.url(), "2025-11-25");
    let list = s.request("prompts/list", serde_json::json!({}));
    assert_eq!(list.result()["prompts"][0]["name"], "review");
    let got = s.request(
        "prompts/get",
        serde_json::json!({ "name": "review",
        "arguments": { "language": "rust", "code": "fn main() {}" } }),
    );
    assert_eq!(
        got.result()["messages"][0]["content"]["text"],
        "Review this rust code:\nfn main() {}"
    );
    let missing = s.request(
        "prompts/get",
        serde_json::json!({ "name": "review", "arguments": { "language": "rust" } }),
    );
    assert_eq!(missing.error_code(), -32602);
    let c = s.request("completion/complete", serde_json::json!({
        "ref": { "type": "ref/prompt", "name": "review" }, "argument": { "name": "language", "value": "r" } }));
    assert_eq!(
        c.result()["completion"]["values"],
        serde_json::json!(["rust", "ruby"])
    );
    let _ = Duration::from_secs(0);
}
