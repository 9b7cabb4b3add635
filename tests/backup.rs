//! Backups and restore on real files with the real binary: the happy path,
//! retention, and every bad condition of issue 4 — a missing or unwritable
//! backup directory, a full disk, kill -9 during a backup and during a
//! restore, a flipped byte, a truncated manifest, a schema too new.

mod backup_support;

use backup_support::*;
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
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = spawn(&data, &["serve", "--listen", &listen], &[]);
    wait_for("the daemon to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(&listen).is_ok()
    });
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit {status:?}");
    assert_eq!(integrity(&db), "ok");
}

#[test]
fn the_daemon_schedules_backups_stops_mid_backup_and_holds_off_offline_restores() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 400, 400);
    let dir = data.join("backups");
    let listen = format!("127.0.0.1:{}", free_port());
    let slow = [
        ("ERLMCP_BACKUP__ENABLED", "true"),
        ("ERLMCP_BACKUP__SCHEDULE", "1h"),
        ("ERLMCP_BACKUP__STEP_PAGES", "1"),
        ("ERLMCP_BACKUP__STEP_PAUSE_MS", "20"),
    ];
    // No backup yet: the first is due at once. Stopping mid-copy is quick
    // and leaves nothing behind.
    let mut daemon = spawn(&data, &["serve", "--listen", &listen], &slow);
    wait_for(
        "the scheduled backup to start",
        Duration::from_secs(20),
        || names(&dir).iter().any(|n| n.ends_with(".staging.tmp")),
    );
    let asked = std::time::Instant::now();
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
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
    let mut daemon = spawn(&data, &["serve", "--listen", &listen], &enabled);
    wait_for("a scheduled backup", Duration::from_secs(20), || {
        statuses(&data).iter().any(|(_, s)| s == "good")
    });
    let out = erlmcp(&data, &["restore", "latest"], &[]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another erlmcp process"),
        "{}",
        describe(&out)
    );
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    assert!(audit_kinds(&data.join("erlmcp.db")).contains(&("backup".into(), "ok".into())));
}
