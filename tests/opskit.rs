//! The operator's kit holds together: every alert in
//! `dist/prometheus/erlmcp.rules.yml` has its runbook in `docs/runbooks/`
//! (and every runbook an alert), its severity, summary, description and
//! `runbook_url`, and a promtool unit test in which it fires and one in
//! which it does not; every metric a rule or a dashboard panel queries is
//! one a real erlmcp exports; `erlmcp diagnose` leaks no credential; and a
//! real Prometheus with these rules fires on a real erlmcp whose backups
//! fail and which then stops. (promtool itself runs the rules and their
//! unit tests: the `promtool` stage of `tests/run`.)

mod common;

use common::pair::{TestDir, pair, wait_in_sync};
use common::{Session, ops_get};
use serde_json::json;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const RULES: &str = "dist/prometheus/erlmcp.rules.yml";
const RULE_TESTS: &str = "dist/prometheus/tests";
const RUNBOOKS: &str = "docs/runbooks";
const DASHBOARD: &str = "dist/grafana/erlmcp.json";
const RUNBOOK_BASE: &str = "https://erlmcp.example/docs/runbooks/";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rules of the rules file, each as its YAML mapping.
fn rules() -> Vec<Value> {
    let doc = yaml(&root().join(RULES));
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

/// Alert name → its rule.
fn alerts() -> BTreeMap<String, Value> {
    rules()
        .into_iter()
        .filter_map(|r| Some((r["alert"].as_str()?.to_owned(), r)))
        .collect()
}

#[test]
fn every_alert_has_a_runbook_and_every_runbook_an_alert() {
    let alerts = alerts();
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
    let mut problems = Vec::new();
    for (name, rule) in &alerts {
        let severity = rule["labels"]["severity"].as_str();
        if !matches!(severity, Some("critical" | "warning")) {
            problems.push(format!("{name}: severity {severity:?}"));
        }
        for a in ["summary", "description"] {
            if rule["annotations"][a].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {a}"));
            }
        }
        let url = rule["annotations"]["runbook_url"].as_str();
        if url != Some(&format!("{RUNBOOK_BASE}{name}.md")) {
            problems.push(format!("{name}: runbook_url {url:?}"));
        }
        let runbook = root().join(RUNBOOKS).join(format!("{name}.md"));
        match std::fs::read_to_string(&runbook) {
            Err(_) => problems.push(format!("{name}: no {}", runbook.display())),
            Ok(text) => {
                if !text.starts_with(&format!("# {name}\n")) {
                    problems.push(format!("{name}: its runbook is titled otherwise"));
                }
                for section in ["Meaning", "Impact", "Confirm", "Fix", "Escalate"] {
                    if !text.contains(&format!("\n## {section}\n")) {
                        problems.push(format!("{name}: its runbook lacks ## {section}"));
                    }
                }
                if !text.contains(&format!("Severity: **{}**", severity.unwrap_or("?"))) {
                    problems.push(format!("{name}: its runbook states another severity"));
                }
            }
        }
    }
    for entry in std::fs::read_dir(root().join(RUNBOOKS)).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        if file == "README.md" {
            continue;
        }
        match file.strip_suffix(".md") {
            Some(name) if alerts.contains_key(name) => {}
            _ => problems.push(format!("{RUNBOOKS}/{file}: no alert of that name")),
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(root().join(RULE_TESTS)).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".test.yml") {
            continue;
        }
        files += 1;
        let doc = yaml(&path);
        assert_eq!(
            doc["rule_files"][0].as_str(),
            Some("../erlmcp.rules.yml"),
            "{}",
            path.display()
        );
        for test in doc["tests"].as_sequence().unwrap() {
            let Some(cases) = test["alert_rule_test"].as_sequence() else {
                continue;
            };
            for case in cases {
                let name = case["alertname"].as_str().unwrap().to_owned();
                let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
                if expected == 0 {
                    quiet.insert(name);
                } else {
                    fires.insert(name);
                }
            }
        }
    }
    assert!(files >= 1, "no promtool tests in {RULE_TESTS}");
    let mut problems = Vec::new();
    for name in alerts().keys() {
        if !fires.contains(name) {
            problems.push(format!("{name}: no test in which it fires"));
        }
        if !quiet.contains(name) {
            problems.push(format!("{name}: no test in which it stays quiet"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The metric names a PromQL expression reads: its identifiers that start
/// with `erlmcp_` (label values in quotes and range durations left out).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => rest.push(c),
            _ => rest.push(' '),
        }
    }
    into.extend(
        rest.split_whitespace()
            .filter(|w| w.starts_with("erlmcp_"))
            .map(str::to_owned),
    );
}

/// Every `expr` of a Grafana dashboard's panels, rows included.
fn dashboard_exprs(v: &serde_json::Value, into: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                into.push(e.to_owned());
            }
            m.values().for_each(|v| dashboard_exprs(v, into));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, into)),
        _ => {}
    }
}

/// The names of the samples of a Prometheus text exposition.
fn exported(text: &str, into: &mut BTreeSet<String>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        into.insert(line[..end].to_owned());
    }
}

/// A real pair (replication, scheduled backups) driven with a few
/// requests, scraped: every metric the rules and the dashboard query is
/// there, and every recording rule the dashboard reads is in the rules.
#[test]
fn every_queried_metric_is_exported() {
    let mut rules_read = BTreeSet::new();
    let mut recorded = BTreeSet::new();
    for r in rules() {
        metric_names(r["expr"].as_str().unwrap(), &mut rules_read);
        if let Some(name) = r["record"].as_str() {
            recorded.insert(name.to_owned());
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(DASHBOARD)).unwrap()).unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 30, "{} dashboard queries", exprs.len());
    let mut dashboard_reads = BTreeSet::new();
    for e in &exprs {
        metric_names(e, &mut dashboard_reads);
    }

    let tmp = TestDir::new();
    let (mut a, mut b) = pair(
        tmp.path(),
        "ack_timeout_ms = 3000\n[backup]\nenabled = true\nschedule = \"1h\"",
    );
    a.start();
    b.start();
    wait_in_sync(&a, &b, std::time::Duration::from_secs(30));
    let (mut s, _) = Session::open(&a.url(), "2025-11-25");
    s.call(
        "create_entities",
        json!({"entities": [{"name": "kit", "entityType": "test", "observations": []}]}),
    );
    s.call("read_graph", json!({}));
    s.request("no/such", json!({}));
    wait_in_sync(&a, &b, std::time::Duration::from_secs(30));
    // The scheduler's first backup, taken at start (none exists yet).
    common::pair::wait_for("a first backup", std::time::Duration::from_secs(30), || {
        a.metric("erlmcp_backup_size_bytes") > 0.0
    });
    let mut names = BTreeSet::new();
    let mut a_text = String::new();
    for n in [&a, &b] {
        let r = ops_get(n.ops, "/metrics");
        assert_eq!(r.status, 200);
        exported(&r.body, &mut names);
        if n.name == "a" {
            a_text = r.body;
        }
    }
    // The latency SLO counts calls under this bucket's bound.
    assert!(
        a_text.contains("erlmcp_tool_call_duration_seconds_bucket{toolset=\"memory\",tool=\"read_graph\",le=\"0.25\"}"),
        "no le=\"0.25\" bucket for the latency SLO"
    );

    let mut problems = Vec::new();
    for (what, read) in [("rules", &rules_read), ("dashboard", &dashboard_reads)] {
        for name in read {
            let known = if name.contains(':') {
                recorded.contains(name)
            } else {
                names.contains(name)
            };
            if !known {
                problems.push(format!(
                    "{what} query {name}, which nothing exports or records"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}\nexported: {names:#?}");
}

/// `erlmcp diagnose` against a running node whose replication secret comes
/// from a systemd credential: every part is gathered, and the secret is
/// nowhere in the archive.
#[test]
fn diagnose_bundles_the_node_without_its_credential() {
    let tmp = TestDir::new();
    let (mut a, _b) = pair(tmp.path(), "");
    // The secret through $CREDENTIALS_DIRECTORY, as systemd's
    // LoadCredential= gives it, rather than a configured file.
    let creds = tmp.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let secret = "kit-secret-5f1d9c0b7a2e4d6f8091a3b5c7d9e1f3";
    std::fs::write(creds.join("replication-secret"), format!("{secret}\n")).unwrap();
    let config = std::fs::read_to_string(&a.config).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("secret_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&a.config, config).unwrap();
    a.env
        .push(("CREDENTIALS_DIRECTORY".into(), creds.display().to_string()));
    a.start();

    let out = tmp.path().join("bundle.tar.zst");
    let run = std::process::Command::new(common::BIN)
        .args(["diagnose", "--json", "--config"])
        .arg(&a.config)
        .arg("--output")
        .arg(&out)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    for part in manifest["parts"].as_array().unwrap() {
        let file = part["file"].as_str().unwrap();
        let outcome = part["outcome"].as_str().unwrap();
        // This host may have no journal, or none of that unit.
        if file != "journal.txt" {
            assert_eq!(outcome, "ok", "{part}");
        }
    }

    let raw = zstd::decode_all(std::fs::File::open(&out).unwrap()).unwrap();
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the credential's value is in the archive"
    );
    let mut members = BTreeMap::new();
    for entry in tar::Archive::new(&raw[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        members.insert(name, text);
    }
    let get = |name: &str| {
        members
            .get(&format!("erlmcp-diagnose/{name}"))
            .unwrap_or_else(|| panic!("no {name} in {:?}", members.keys()))
    };
    assert!(get("version.txt").starts_with("erlmcp "));
    let status: serde_json::Value = serde_json::from_str(get("status.json")).unwrap();
    assert_eq!(status["node"], "a");
    assert!(get("metrics.txt").contains("erlmcp_build_info"));
    assert!(get("config.toml").contains("[replication]"));
    let db: serde_json::Value = serde_json::from_str(get("database.json")).unwrap();
    assert_eq!(db["integrity"], json!(["ok"]), "{db}");
    assert!(db["size_bytes"].as_u64().unwrap() > 0);
    let _: serde_json::Value = serde_json::from_str(get("backups.json")).unwrap();
    let inner: serde_json::Value = serde_json::from_str(get("manifest.json")).unwrap();
    assert_eq!(inner["parts"], manifest["parts"]);
}

/// Debian's Prometheus server, as `tests/run` unpacks it with promtool
/// (`CI_ERLMCP_PROMETHEUS` names it; else the CI cache's copy).
fn prometheus_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CI_ERLMCP_PROMETHEUS") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "CI_ERLMCP_PROMETHEUS={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let cache = std::env::var("CI_ERLMCP_CACHE").unwrap_or_else(|_| "/var/cache/erlmcp-ci".into());
    let p = PathBuf::from(cache).join("prometheus/usr/bin/prometheus");
    p.exists().then_some(p)
}

/// A child process killed on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A 200 answer's body; `None` for anything else, a refused connection
/// included (Prometheus starting).
fn http_get(url: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .build()
        .into();
    let r = agent.get(url).call().ok()?;
    if r.status() != 200 {
        return None;
    }
    r.into_body().read_to_string().ok()
}

/// The alerts Prometheus holds: name → state (pending, firing).
fn prometheus_alerts(port: u16) -> BTreeMap<String, String> {
    let Some(body) = http_get(&format!("http://127.0.0.1:{port}/api/v1/alerts")) else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["labels"]["alertname"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A real Prometheus with erlmcp's rules scrapes a real erlmcp: quiet while
/// it is healthy; `ErlmcpBackupFailing` firing once a backup fails;
/// `ErlmcpDown` firing a minute after erlmcp stops. Read through
/// Prometheus' HTTP API.
#[test]
fn prometheus_fires_when_backups_fail_and_erlmcp_stops() {
    let Some(prometheus) = prometheus_binary() else {
        eprintln!("skipped: no Prometheus (tests/run's promtool stage unpacks one)");
        return;
    };
    use std::time::{Duration, Instant};
    let tmp = TestDir::new();
    let data = tmp.path().join("data");
    let (mcp, ops, web) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let erlmcp = Killed(
        std::process::Command::new(common::BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{mcp}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
            .arg("--data-dir")
            .arg(&data)
            .env("ERLMCP_BACKUP__ENABLED", "true")
            .env("ERLMCP_BACKUP__SCHEDULE", "1h")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: erlmcp\n    static_configs:\n      - targets: [\"127.0.0.1:{ops}\"]\n",
            root().join(RULES).display()
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wait = |what: &str, secs: u64, mut f: Box<dyn FnMut() -> bool + '_>| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    // Healthy: scraped, the scheduler's first backup taken, no alert.
    wait(
        "Prometheus to scrape erlmcp and its first backup",
        60,
        Box::new(|| {
            http_get(&format!(
                "http://127.0.0.1:{web}/api/v1/query?query=erlmcp_backup_size_bytes%3E0"
            ))
            .is_some_and(|b| b.contains("\"value\""))
        }),
    );
    std::thread::sleep(Duration::from_secs(3));
    // None firing. (Pending ones may be the host's: ErlmcpFilesystemFillingUp
    // reads this machine's disk, a few seconds of history, and waits an hour.)
    let firing: Vec<_> = prometheus_alerts(web)
        .into_iter()
        .filter(|(_, state)| state == "firing")
        .collect();
    assert!(firing.is_empty(), "alerts firing while healthy: {firing:?}");

    // Backups fail: the backup directory is a file now.
    let backups = data.join("backups");
    std::fs::rename(&backups, tmp.path().join("backups.moved")).unwrap();
    std::fs::write(&backups, "not a directory").unwrap();
    let r = common::ops_post(ops, "/backup");
    assert!(
        r.status >= 400,
        "a backup into a file succeeded: {}",
        r.body
    );
    wait(
        "ErlmcpBackupFailing to fire",
        30,
        Box::new(|| {
            prometheus_alerts(web)
                .get("ErlmcpBackupFailing")
                .map(String::as_str)
                == Some("firing")
        }),
    );

    // erlmcp stops: pending at once, firing after the alert's minute.
    drop(erlmcp);
    wait(
        "ErlmcpDown to be pending",
        30,
        Box::new(|| prometheus_alerts(web).contains_key("ErlmcpDown")),
    );
    wait(
        "ErlmcpDown to fire",
        100,
        Box::new(|| prometheus_alerts(web).get("ErlmcpDown").map(String::as_str) == Some("firing")),
    );
}
