//! Upgrades with real binaries: the current release and the test build of
//! the next one (one more migration), on one data directory.

mod common;

use common::next::next_release_bin;
use common::pair::{Writer, entity_names, wait_for};
use common::{BIN, free_port};
use rusqlite::Connection;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Daemon {
    child: Child,
    mcp: u16,
    ops: u16,
}

impl Daemon {
    fn start(bin: &Path, dir: &Path, extra_env: &[(&str, &str)]) -> Daemon {
        let (mcp, ops) = (free_port(), free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{mcp}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops}")])
            .arg("--data-dir")
            .arg(dir)
            .env("ERLMCP_UPGRADE__PROBATION_SECS", "2")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let d = Daemon {
            child: cmd.spawn().unwrap(),
            mcp,
            ops,
        };
        wait_for("the daemon to answer", Duration::from_secs(30), || {
            d.status().is_some()
        });
        d
    }

    fn status(&self) -> Option<Value> {
        let r = ureq::get(&format!("http://127.0.0.1:{}/status", self.ops))
            .call()
            .ok()?;
        serde_json::from_str(&r.into_body().read_to_string().ok()?).ok()
    }

    fn upgrade(&self) -> Value {
        self.status()
            .map(|s| s["upgrade"].clone())
            .unwrap_or(Value::Null)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.mcp)
    }

    fn write(&self, names: &[&str]) {
        let mut w = Writer::new();
        assert!(w.open(&self.url()));
        for n in names {
            assert_eq!(
                w.create(&self.url(), n),
                common::pair::Outcome::Acked,
                "{n}"
            );
        }
    }

    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert!(self.child.wait().unwrap().success());
    }
}

fn schema(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn pinned(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("backups"))
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pinned"))
                .collect()
        })
        .unwrap_or_default()
}

/// Up with the next release, then back with the current one: the older
/// binary takes the schema back with the down steps the newer one recorded,
/// every row written before and during the newer release's run is there,
/// and what only the newer schema could hold is kept aside.
#[test]
fn the_previous_release_takes_the_data_back_keeping_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let next = next_release_bin();
    let d = Daemon::start(Path::new(BIN), &dir, &[]);
    d.write(&["before-1", "before-2"]);
    let base = d.status().unwrap()["version"].as_str().unwrap().to_owned();
    d.stop();
    let old_schema = schema(&dir.join("erlmcp.db"));

    let d = Daemon::start(&next, &dir, &[]);
    let u = d.upgrade();
    assert_eq!(u["state"], "probation", "{u}");
    assert_eq!(u["previous"], base.as_str());
    let restore_point = u["restore_point"]
        .as_str()
        .expect("a restore point")
        .to_owned();
    assert_eq!(pinned(&dir).len(), 1, "the restore point is pinned");
    d.write(&["during-1"]);
    {
        let c = Connection::open(dir.join("erlmcp.db")).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.execute("INSERT INTO memory_tags VALUES (1, 'friend')", [])
            .unwrap();
    }
    d.stop();
    assert_eq!(schema(&dir.join("erlmcp.db")), old_schema + 1);

    let d = Daemon::start(Path::new(BIN), &dir, &[]);
    let u = d.upgrade();
    assert_eq!(u["state"], "rolled_back", "{u}");
    assert_eq!(u["release"], base.as_str());
    assert!(
        u["reason"].as_str().unwrap().contains("older release"),
        "{u}"
    );
    assert_eq!(schema(&dir.join("erlmcp.db")), old_schema);
    let names = entity_names(&dir.join("erlmcp.db"));
    for n in ["before-1", "before-2", "during-1"] {
        assert!(names.contains(n), "{n} lost");
    }
    let c = Connection::open(dir.join("erlmcp.db")).unwrap();
    let kept: i64 = c
        .query_row("SELECT count(*) FROM memory_tags_kept", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        kept, 1,
        "rows of a table the old release lacks are kept aside"
    );
    assert!(
        pinned(&dir).is_empty(),
        "restore point {restore_point} unpinned after the rollback"
    );
    d.stop();
}

/// A healthy new release is confirmed after its probation; its restore
/// point is let go.
#[test]
fn a_healthy_release_is_confirmed_after_probation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    Daemon::start(Path::new(BIN), &dir, &[]).stop();
    let d = Daemon::start(&next_release_bin(), &dir, &[]);
    assert_eq!(d.upgrade()["state"], "probation");
    wait_for("the confirmation", Duration::from_secs(20), || {
        d.upgrade()["state"] == "confirmed"
    });
    assert!(pinned(&dir).is_empty());
    d.stop();
}

/// An unready release is never confirmed (it stays on probation: the
/// deadline of `erlmcp upgrade apply` rolls it back).
#[test]
fn an_unready_release_stays_on_probation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    Daemon::start(Path::new(BIN), &dir, &[]).stop();
    let next = next_release_bin();
    let fault = format!("unready@{}", release_of(&next));
    let d = Daemon::start(&next, &dir, &[("TEST_ERLMCP_FAULT", &fault)]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(d.upgrade()["state"], "probation");
    assert_eq!(pinned(&dir).len(), 1, "the restore point stays pinned");
    d.stop();
}

/// Killed in the middle of a migration: the schema is the old one or the
/// new one, never between; the next start completes it.
#[test]
fn a_kill_in_the_middle_of_a_migration_leaves_one_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = Daemon::start(Path::new(BIN), &dir, &[]);
    d.write(&["kept"]);
    d.stop();
    let db = dir.join("erlmcp.db");
    let old = schema(&db);
    let mut child = Command::new(next_release_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--ops-listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&dir)
        .env("TEST_ERLMCP_PAUSE_AT", "migrate.before_commit:30000")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("migrate.before_commit") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("paused in the migration");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        schema(&db),
        old,
        "killed before its commit: the old schema, whole"
    );
    let d = Daemon::start(&next_release_bin(), &dir, &[]);
    assert_eq!(schema(&db), old + 1);
    assert!(entity_names(&db).contains("kept"));
    d.stop();
}

fn release_of(bin: &Path) -> String {
    let out = Command::new(bin).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// A host laid out for `erlmcp upgrade`: `releases/{current,next}/erlmcp`,
/// a `current` link, the service run by the fake systemctl of
/// `tests/data/fake-systemctl` (the story runs real systemd).
struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    data: PathBuf,
    ops: u16,
    base: String,
    next: String,
}

impl Host {
    fn new(fault: Option<&str>, deadline_secs: u64) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let next_bin = next_release_bin();
        let (base, next) = (release_of(Path::new(BIN)), release_of(&next_bin));
        for (name, bin) in [(&base, PathBuf::from(BIN)), (&next, next_bin)] {
            let d = root.join("releases").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(bin, d.join("erlmcp")).unwrap();
        }
        std::os::unix::fs::symlink(root.join("releases").join(&base), root.join("current"))
            .unwrap();
        let (mcp, ops) = (free_port(), free_port());
        let data = root.join("data");
        let config = root.join("erlmcp.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:{mcp}\"\n[ops]\nlisten = \"127.0.0.1:{ops}\"\n\
                 [upgrade]\nprobation_secs = 2\ndeadline_secs = {deadline_secs}\nreleases_dir = \"{}\"\n\
                 current_link = \"{}\"\nunit = \"erlmcp-test.service\"\n",
                data.display(),
                root.join("releases").display(),
                root.join("current").display()
            ),
        )
        .unwrap();
        let unit = root.join("unit");
        std::fs::create_dir_all(&unit).unwrap();
        let env = fault
            .map(|f| format!("TEST_ERLMCP_FAULT={f}@{next} "))
            .unwrap_or_default();
        std::fs::write(
            unit.join("exec"),
            format!(
                "env {env}RUST_LOG=info {}/erlmcp serve --config {}",
                root.join("current").display(),
                config.display()
            ),
        )
        .unwrap();
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fake-systemctl"),
            bin.join("systemctl"),
        )
        .unwrap();
        let h = Host {
            _tmp: tmp,
            root,
            config,
            data,
            ops,
            base,
            next,
        };
        h.systemctl(&["restart"]);
        wait_for("the service to answer", Duration::from_secs(30), || {
            h.status().is_some()
        });
        h
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.root.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn systemctl(&self, args: &[&str]) {
        let ok = Command::new(self.root.join("bin/systemctl"))
            .args(args)
            .env("FAKE_UNIT_DIR", self.root.join("unit"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "fake systemctl {args:?}");
    }

    fn erlmcp(&self, args: &[&str], pause: Option<&str>) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .env("PATH", self.path())
            .env("FAKE_UNIT_DIR", self.root.join("unit"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null());
        if let Some(p) = pause {
            c.env("TEST_ERLMCP_PAUSE_AT", p);
        }
        c
    }

    fn upgrade(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["upgrade"];
        all.extend(args);
        all.push("--json");
        let out = self.erlmcp(&all, None).output().unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v)
    }

    fn status(&self) -> Option<Value> {
        let r = ureq::get(&format!("http://127.0.0.1:{}/status", self.ops))
            .call()
            .ok()?;
        serde_json::from_str(&r.into_body().read_to_string().ok()?).ok()
    }

    fn current(&self) -> String {
        std::fs::read_link(self.root.join("current"))
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn url(&self) -> String {
        let s = self.status().unwrap();
        format!("http://{}/mcp", s["mcp_listen"].as_str().unwrap())
    }

    fn write(&self, names: &[&str]) {
        let mut w = Writer::new();
        let url = self.url();
        assert!(w.open(&url));
        for n in names {
            assert_eq!(w.create(&url, n), common::pair::Outcome::Acked, "{n}");
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new(self.root.join("bin/systemctl"))
            .arg("stop")
            .env("FAKE_UNIT_DIR", self.root.join("unit"))
            .status();
    }
}

#[test]
fn upgrade_apply_confirms_a_healthy_release() {
    let h = Host::new(None, 30);
    h.write(&["a"]);
    let (code, out) = h.upgrade(&["apply", &h.next.clone()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["outcome"], "confirmed");
    assert_eq!(h.current(), h.next);
    assert!(entity_names(&h.data.join("erlmcp.db")).contains("a"));
}

/// A release that never becomes ready: the deadline rolls it back, binary
/// and data, and every write acknowledged during its window is kept.
#[test]
fn upgrade_apply_rolls_back_an_unready_release_keeping_its_writes() {
    let h = Host::new(Some("unready"), 8);
    h.write(&["before"]);
    let cmd = h
        .erlmcp(&["upgrade", "apply", &h.next.clone(), "--json"], None)
        .spawn();
    let mut child = cmd.unwrap();
    wait_for("the next release to serve", Duration::from_secs(30), || {
        h.status().is_some_and(|s| s["version"] == h.next.as_str())
    });
    h.write(&["during"]);
    let code = child.wait().unwrap().code();
    assert_eq!(
        code,
        Some(1),
        "an upgrade that rolled back fails the command"
    );
    assert_eq!(h.current(), h.base);
    wait_for("the previous release", Duration::from_secs(30), || {
        h.status().is_some_and(|s| s["version"] == h.base.as_str())
    });
    let u = h.status().unwrap()["upgrade"].clone();
    assert_eq!(u["state"], "rolled_back", "{u}");
    assert!(u["reason"].as_str().unwrap().contains("not ready"), "{u}");
    let names = entity_names(&h.data.join("erlmcp.db"));
    assert!(
        names.contains("before") && names.contains("during"),
        "{names:?}"
    );
}

/// A release that crashes after its migration: the crash loop is seen and
/// the previous release takes the data back.
#[test]
fn upgrade_apply_rolls_back_a_crash_loop() {
    let h = Host::new(Some("crash"), 60);
    h.write(&["kept"]);
    let (code, out) = h.upgrade(&["apply", &h.next.clone()]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["outcome"], "rolled_back");
    assert!(
        out["reason"].as_str().unwrap().contains("crash loop")
            || out["reason"].as_str().unwrap().contains("failed"),
        "{out}"
    );
    assert_eq!(h.current(), h.base);
    assert!(entity_names(&h.data.join("erlmcp.db")).contains("kept"));
}

/// `erlmcp upgrade apply` killed at each step: `erlmcp upgrade resume`
/// finishes the upgrade (or its rollback), and the data is whole.
#[test]
fn an_interrupted_upgrade_is_finished_by_resume() {
    for (point, fault) in [
        ("upgrade.after_journal", None),
        ("upgrade.after_flip", None),
        ("upgrade.rollback.after_flip", Some("unready")),
    ] {
        let h = Host::new(fault, 6);
        h.write(&["kept"]);
        let mut child = h
            .erlmcp(
                &["upgrade", "apply", &h.next.clone()],
                Some(&format!("{point}:60000")),
            )
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = point.to_owned();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains(&p) {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("never reached {point}"));
        child.kill().unwrap();
        child.wait().unwrap();
        let (code, out) = h.upgrade(&["resume"]);
        let expected = if fault.is_some() {
            "rolled_back"
        } else {
            "confirmed"
        };
        assert_eq!(out["outcome"], expected, "{point}: {out} ({code})");
        let runs = if fault.is_some() { &h.base } else { &h.next };
        assert_eq!(&h.current(), runs, "{point}");
        assert!(
            entity_names(&h.data.join("erlmcp.db")).contains("kept"),
            "{point}"
        );
        let (_, again) = h.upgrade(&["resume"]);
        assert_eq!(again, Value::Null, "{point}: nothing left to resume");
    }
}

/// A rolling upgrade of a replicating pair: the standby first (its newer
/// schema applies the older primary's changes), a switchover, then the old
/// primary — which, until upgraded, the newer primary refuses to feed,
/// saying why, since an older schema cannot apply a newer one's changes.
#[test]
fn a_rolling_upgrade_goes_standby_first_and_the_wrong_order_is_refused() {
    use common::pair::{TestDir, assert_same_tables, pair, wait_in_sync};
    let tmp = TestDir::new();
    let (mut a, mut b) = pair(tmp.path(), "");
    a.start();
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    let write = |node: &common::pair::Node, prefix: &str| {
        let mut w = Writer::new();
        assert!(w.open(&node.url()));
        for i in 0..3 {
            let name = format!("{prefix}-{i}");
            assert_eq!(
                w.create(&node.url(), &name),
                common::pair::Outcome::Acked,
                "{name}"
            );
        }
    };
    write(&a, "old");
    b.kill9();
    b.bin = next_release_bin();
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(30));
    write(&a, "mixed");
    wait_in_sync(&a, &b, Duration::from_secs(10));
    assert_eq!(
        b.role("primary", false).0,
        0,
        "switch over to the upgraded node"
    );
    wait_for(
        "the old primary to refuse the older order",
        Duration::from_secs(20),
        || {
            a.replication()["problem"]
                .as_str()
                .is_some_and(|p| p.contains("upgrade the standby first"))
        },
    );
    write(&b, "new");
    a.kill9();
    a.bin = next_release_bin();
    a.start();
    wait_in_sync(&b, &a, Duration::from_secs(30));
    let names = entity_names(&a.db());
    for n in ["old-0", "mixed-1", "new-2"] {
        assert!(names.contains(n), "{n} missing on the upgraded standby");
    }
    assert_same_tables(&b, &a);
}
