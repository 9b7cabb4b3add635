//! Backups and restore on real files with the real binary: the happy path,
//! retention, and every bad condition of issue 4 — a missing or unwritable
//! backup directory, a full disk, kill -9 during a backup and during a
//! restore, a flipped byte, a truncated manifest, a schema too new.

mod common;

use common::backup::*;
use common::free_port;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn id_of(created: &Value) -> String {
    created["manifest"]["id"].as_str().unwrap().to_owned()
}

fn create(data: &Path, env: &[(&str, &str)]) -> String {
    id_of(&json(data, &["backup", "create"], env, 0))
}

fn statuses(data: &Path) -> Vec<(String, String)> {
    let v = json(data, &["backup", "list"], &[], 0);
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn create_list_verify_and_the_manifest_says_what_it_is() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 200, 100);
    let created = json(
        &data,
        &["backup", "create"],
        &[("ERLMCP_NODE_NAME", "node-a")],
        0,
    );
    let id = id_of(&created);
    let m = &created["manifest"];
    assert_eq!(m["node_name"], "node-a");
    assert_eq!(
        m["schema_version"],
        erlmcp::store::migrations::latest_version()
    );
    assert_eq!(m["erlmcp_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (
            m["replication_epoch"].as_u64(),
            m["replication_seq"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert!(m["compressed_bytes"].as_u64().unwrap() < m["uncompressed_bytes"].as_u64().unwrap());
    assert_eq!(m["sha256"].as_str().unwrap().len(), 64);

    let dir = data.join("backups");
    assert_eq!(
        names(&dir),
        [
            ".lock".to_owned(),
            format!("{id}.db.zst"),
            format!("{id}.json")
        ]
    );
    assert_eq!(statuses(&data), [(id.clone(), "good".to_owned())]);

    let out = erlmcp(&data, &["backup", "verify", &id], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        describe(&out)
    );
    let out = erlmcp(&data, &["backup", "list"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
}

#[test]
fn restore_swaps_keeps_the_previous_database_and_is_audited() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 50, 50);
    let id = create(&data, &[]);
    set_marker(&data, "B");

    let dry = json(&data, &["restore", "latest", "--dry-run"], &[], 0);
    assert_eq!(
        (dry["id"].as_str(), dry["dry_run"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    assert_eq!(marker_of(&db), "B", "a dry run changes nothing");

    let r = json(&data, &["restore", &id], &[], 0);
    assert_eq!(marker_of(&db), "A");
    let previous = Path::new(r["previous"].as_str().unwrap());
    assert_eq!(marker_of(previous), "B", "the pre-restore database is kept");
    assert_eq!(integrity(&db), "ok");
    assert!(audit_kinds(&db).contains(&("restore".into(), "ok".into())));
    assert!(
        !names(&data).iter().any(|n| n.contains(".restore-")),
        "{:?}",
        names(&data)
    );
}

#[test]
fn prune_keeps_the_newest_and_drops_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 10, 10);
    let env = [
        ("ERLMCP_BACKUP__KEEP_LAST", "1"),
        ("ERLMCP_BACKUP__HOURLY", "0"),
        ("ERLMCP_BACKUP__DAILY", "0"),
        ("ERLMCP_BACKUP__WEEKLY", "0"),
    ];
    let ids: Vec<String> = (0..3).map(|_| create(&data, &env)).collect();
    let plan = json(&data, &["backup", "prune", "--dry-run"], &env, 0);
    assert_eq!(plan["delete"].as_array().unwrap().len(), 2);
    assert_eq!(statuses(&data).len(), 3, "a dry run deletes nothing");
    json(&data, &["backup", "prune"], &env, 0);
    assert_eq!(statuses(&data), [(ids[2].clone(), "good".to_owned())]);
}

#[test]
fn a_flipped_byte_is_caught_by_verify_and_refused_by_restore() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 300, 200);
    let older = create(&data, &[]);
    set_marker(&data, "B");
    let newer = create(&data, &[]);
    set_marker(&data, "C");

    let file = data.join("backups").join(format!("{newer}.db.zst"));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();

    let out = erlmcp(&data, &["backup", "verify", &newer], &[]);
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checksum mismatch"),
        "{}",
        describe(&out)
    );
    assert!(statuses(&data).contains(&(newer.clone(), "bad".into())));

    let out = erlmcp(&data, &["restore", &newer], &[]);
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt"),
        "{}",
        describe(&out)
    );
    assert_eq!(marker_of(&db), "C", "nothing was restored");

    // `latest` walks back past it, and says so.
    let out = erlmcp(&data, &["restore", "latest"], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("skipped {newer}")) && text.contains("bad"),
        "{text}"
    );
    assert!(text.contains(&older), "{text}");
    assert_eq!(marker_of(&db), "A");
}

#[test]
fn a_flipped_byte_found_only_at_restore_time_is_skipped_too() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 50, 50);
    let older = create(&data, &[]);
    let newer = create(&data, &[]);
    let file = data.join("backups").join(format!("{newer}.db.zst"));
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    set_marker(&data, "B");
    let r = json(&data, &["restore", "latest"], &[], 0);
    assert_eq!(r["id"].as_str(), Some(older.as_str()));
    assert_eq!(r["skipped"][0]["id"].as_str(), Some(newer.as_str()));
    assert!(
        r["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("verification"),
        "{r}"
    );
    assert_eq!(marker_of(&db), "A");
}

#[test]
fn a_truncated_manifest_never_counts_as_good() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 20, 20);
    let older = create(&data, &[]);
    let newer = create(&data, &[]);
    let manifest = data.join("backups").join(format!("{newer}.json"));
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();

    assert!(statuses(&data).contains(&(newer.clone(), "invalid".into())));
    let out = erlmcp(&data, &["backup", "verify", &newer], &[]);
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("truncated"),
        "{}",
        describe(&out)
    );
    let out = erlmcp(&data, &["restore", &newer], &[]);
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));

    set_marker(&data, "B");
    let r = json(&data, &["restore", "latest"], &[], 0);
    assert_eq!(r["id"].as_str(), Some(older.as_str()));
    assert!(
        r["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid"),
        "{r}"
    );
    assert_eq!(marker_of(&db), "A");
}

#[test]
fn a_backup_with_a_newer_schema_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "future", 5, 5);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let id = create(&data, &[]);
    let out = erlmcp(&data, &["restore", &id], &[]);
    assert_eq!(out.status.code(), Some(65), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("newer"),
        "{err}"
    );
    let out = erlmcp(&data, &["restore", "latest"], &[]);
    assert_eq!(out.status.code(), Some(66), "{}", describe(&out));
}

#[test]
fn a_missing_backup_directory_is_created_and_an_unusable_one_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 5, 5);
    let nested = t.path().join("not/yet/there");
    let env = [("ERLMCP_BACKUP__DIR", nested.to_str().unwrap())];
    create(&data, &env);
    assert_eq!(names(&nested).len(), 3);

    // A path that cannot be a directory (root ignores permission bits).
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let under = file.join("backups");
    let out = erlmcp(
        &data,
        &["backup", "create"],
        &[("ERLMCP_BACKUP__DIR", under.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(73), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used"),
        "{}",
        describe(&out)
    );

    // A read-only filesystem.
    let ro = t.path().join("ro");
    if !mount_tmpfs(&ro, "1m", "ro") {
        eprintln!("SKIPPED the read-only part: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _m = Mounted(ro.clone());
    let out = erlmcp(
        &data,
        &["backup", "create"],
        &[("ERLMCP_BACKUP__DIR", ro.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(73), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{}",
        describe(&out)
    );
}

#[test]
fn a_full_disk_fails_cleanly_and_leaves_nothing_behind() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    // 6 MiB of random bytes: more than 2 MiB even compressed.
    let db = make_db(&data, "A", 10, 10);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1536)
             INSERT INTO kv (key, value) SELECT 'blob' || i, randomblob(4096) FROM n;",
        )
        .unwrap();
    let small = t.path().join("small");
    if !mount_tmpfs(&small, "2m", "") {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _m = Mounted(small.clone());
    let env = [("ERLMCP_BACKUP__DIR", small.to_str().unwrap())];
    let out = erlmcp(&data, &["backup", "create"], &env);
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("full"),
        "{}",
        describe(&out)
    );
    assert_eq!(names(&small), [".lock"], "no partial files");
    let v = json(&data, &["backup", "list"], &env, 0);
    assert_eq!(v, Value::Array(vec![]));
    assert_eq!(integrity(&db), "ok", "the database is untouched");
}

#[test]
fn kill_9_during_a_backup_lists_nothing_good_and_the_next_run_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 400, 400);
    let dir = data.join("backups");
    // One page per step, 20 ms apart: the copy takes seconds.
    let slow = [
        ("ERLMCP_BACKUP__STEP_PAGES", "1"),
        ("ERLMCP_BACKUP__STEP_PAUSE_MS", "20"),
    ];
    let mut child = spawn(&data, &["backup", "create"], &slow);
    wait_for("the staging file", Duration::from_secs(10), || {
        names(&dir).iter().any(|n| n.ends_with(".staging.tmp"))
    });
    kill9(&mut child);
    assert_eq!(statuses(&data), [], "nothing listed");
    assert!(names(&dir).iter().any(|n| n.ends_with(".staging.tmp")));

    // Killed after the data file is in place and verified, before its
    // manifest. The run first cleans the staging leftover of the last one.
    let pause = [("TEST_ERLMCP_PAUSE_AT", "backup.before_manifest:20000")];
    let log = t.path().join("backup.log");
    let mut child = spawn_logged(&data, &["backup", "create"], &pause, &log);
    wait_for("the pause point", Duration::from_secs(20), || {
        log_says(&log, "pausing at")
    });
    kill9(&mut child);
    assert!(!names(&dir).iter().any(|n| n.ends_with(".staging.tmp")));
    let listed = statuses(&data);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1, "partial", "{listed:?}");
    let out = erlmcp(&data, &["restore", "latest"], &[]);
    assert_eq!(out.status.code(), Some(66), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unfinished"),
        "{}",
        describe(&out)
    );

    let created = json(&data, &["backup", "create"], &[], 0);
    let cleaned = created["cleaned"].to_string();
    assert!(
        cleaned.contains(&format!("{}.db.zst", listed[0].0)),
        "{cleaned}"
    );
    let id = id_of(&created);
    assert_eq!(statuses(&data), [(id.clone(), "good".to_owned())]);
    assert_eq!(
        names(&dir),
        [
            ".lock".to_owned(),
            format!("{id}.db.zst"),
            format!("{id}.json")
        ]
    );
}

#[test]
fn kill_9_during_a_restore_leaves_the_old_or_the_new_database_and_the_daemon_starts() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "old-A", 200, 100);
    create(&data, &[]);
    set_marker(&data, "B");

    for (point, expect) in [
        ("restore.before_swap", "B"),
        ("restore.after_swap", "old-A"),
    ] {
        let pause = [("TEST_ERLMCP_PAUSE_AT", &*format!("{point}:20000"))];
        let log = t.path().join("restore.log");
        let mut child = spawn_logged(&data, &["restore", "latest"], &pause, &log);
        wait_for("the pause point", Duration::from_secs(20), || {
            log_says(&log, "pausing at")
        });
        kill9(&mut child);
        assert_eq!(marker_of(&db), expect, "killed at {point}");
        assert_eq!(integrity(&db), "ok", "killed at {point}");
        set_marker(&data, "B");
    }

    // The daemon starts on what is there and serves.
    let d = start_daemon(&data, &[], &t.path().join("daemon.log"));
    stop_daemon(d);
    assert_eq!(integrity(&db), "ok");
}

#[test]
fn the_daemon_schedules_backups_stops_mid_backup_and_holds_off_offline_restores() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 400, 400);
    let dir = data.join("backups");
    let slow = [
        ("ERLMCP_BACKUP__ENABLED", "true"),
        ("ERLMCP_BACKUP__SCHEDULE", "1h"),
        ("ERLMCP_BACKUP__STEP_PAGES", "1"),
        ("ERLMCP_BACKUP__STEP_PAUSE_MS", "20"),
    ];
    // No backup yet: the first is due at once. Stopping mid-copy is quick
    // and leaves nothing behind.
    let d = start_daemon(&data, &slow, &t.path().join("d1.log"));
    wait_for(
        "the scheduled backup to start",
        Duration::from_secs(20),
        || names(&dir).iter().any(|n| n.ends_with(".staging.tmp")),
    );
    let asked = std::time::Instant::now();
    stop_daemon(d);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(names(&dir), [".lock"]);

    let enabled = [
        ("ERLMCP_BACKUP__ENABLED", "true"),
        ("ERLMCP_BACKUP__SCHEDULE", "1h"),
    ];
    let d = start_daemon(&data, &enabled, &t.path().join("d2.log"));
    wait_for("a scheduled backup", Duration::from_secs(20), || {
        statuses(&data).iter().any(|(_, s)| s == "good")
    });
    // Its ops listener is not in the (default) configuration: the restore
    // works on the files, and the daemon's lock stops it.
    let out = erlmcp(&data, &["restore", "latest"], &[]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another erlmcp process"),
        "{}",
        describe(&out)
    );
    stop_daemon(d);
    assert!(audit_kinds(&data.join("erlmcp.db")).contains(&("backup".into(), "ok".into())));
}

/// A daemon with its MCP and ops listeners on free ports.
struct Daemon {
    child: std::process::Child,
    mcp: String,
    ops: String,
}

fn start_daemon(data: &Path, env: &[(&str, &str)], log: &Path) -> Daemon {
    let (mcp, ops) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let mut all = env.to_vec();
    all.push(("ERLMCP_HTTP__JSON_RESPONSE", "true"));
    let child = spawn_logged(
        data,
        &["serve", "--listen", &mcp, "--ops-listen", &ops],
        &all,
        log,
    );
    wait_for("the daemon to be ready", Duration::from_secs(20), || {
        ops_get(&ops, "/readyz").0 == 200
    });
    Daemon { child, mcp, ops }
}

fn stop_daemon(mut d: Daemon) {
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    assert!(d.child.wait().unwrap().success());
}

#[test]
fn through_the_running_daemon_restore_swaps_and_lost_sessions_get_a_clean_404() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 50, 50);
    let d = start_daemon(&data, &[], &t.path().join("daemon.log"));
    let via = |args: &[&str], code: i32| {
        let mut all = args.to_vec();
        all.extend(["--ops", d.ops.as_str()]);
        json(&data, &all, &[], code)
    };

    let kept = new_session(&d.mcp);
    let id = id_of(&via(&["backup", "create"], 0));
    let lost = new_session(&d.mcp);
    set_marker(&data, "B");
    assert_eq!(via(&["backup", "list"], 0)[0]["status"], "good");
    assert_eq!(via(&["backup", "verify", &id], 0)[0]["ok"], true);

    // Without --ops, the configured ops listener is found and used (an
    // offline restore would be refused: the daemon holds the directory).
    let config = t.path().join("erlmcp.toml");
    std::fs::write(&config, format!("[ops]\nlisten = \"{}\"\n", d.ops)).unwrap();
    let r = json(
        &data,
        &["restore", "latest", "--config", config.to_str().unwrap()],
        &[],
        0,
    );
    assert_eq!(r["id"].as_str(), Some(id.as_str()));
    assert_eq!(marker_of(&db), "A");

    assert_eq!(
        ping(&d.mcp, &kept),
        200,
        "a session the backup has lives on"
    );
    assert_eq!(ping(&d.mcp, &lost), 404, "a session it lacks: clean 404");
    let refused = via(&["restore", "no-such-backup"], 66);
    assert!(
        refused["error"].as_str().unwrap().contains("no backup"),
        "{refused}"
    );

    let (_, metrics) = ops_get(&d.ops, "/metrics");
    for name in [
        "erlmcp_backup_last_success_timestamp_seconds",
        "erlmcp_backup_size_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let (_, status) = ops_get(&d.ops, "/status");
    assert!(status.contains(&format!("last backup {id} ok")), "{status}");
    stop_daemon(d);
    let audit = audit_kinds(&db);
    assert!(
        audit.contains(&("restore".into(), "ok".into())),
        "{audit:?}"
    );
    assert!(
        audit.contains(&("restore".into(), "refused".into())),
        "{audit:?}"
    );
}

#[test]
fn kill_9_of_the_daemon_during_an_online_restore_leaves_the_old_database() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let db = make_db(&data, "A", 50, 50);
    create(&data, &[]);
    set_marker(&data, "B");
    let log = t.path().join("daemon.log");
    let pause = [("TEST_ERLMCP_PAUSE_AT", "restore.before_swap:20000")];
    let mut d = start_daemon(&data, &pause, &log);
    let cli = spawn(&data, &["restore", "latest", "--ops", &d.ops], &[]);
    wait_for("the pause point", Duration::from_secs(20), || {
        log_says(&log, "pausing at")
    });
    kill9(&mut d.child);
    drop(cli);
    assert_eq!(marker_of(&db), "B");
    assert_eq!(integrity(&db), "ok");
    let d = start_daemon(&data, &[], &t.path().join("again.log"));
    stop_daemon(d);
}

#[test]
fn a_restore_test_into_a_fresh_directory_gets_a_database_the_daemon_serves() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 20, 20);
    create(&data, &[]);
    let scratch = t.path().join("restore-test");
    let dir = data.join("backups");
    let env = [("ERLMCP_BACKUP__DIR", dir.to_str().unwrap())];
    let r = json(&scratch, &["restore", "latest"], &env, 0);
    assert!(r["previous"].is_null(), "nothing was replaced: {r}");
    assert_eq!(marker_of(&scratch.join("erlmcp.db")), "A");
    let d = start_daemon(&scratch, &[], &t.path().join("daemon.log"));
    stop_daemon(d);
}
