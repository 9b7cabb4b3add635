//! Backups and restores while the store keeps writing, in-process: the copy
//! is one consistent snapshot and is never restarted by commits; a restore
//! through the open store swaps the file under queued writes and readers.

mod common;

use common::backup::*;
use erlmcp::backup::restore::{self, Target};
use erlmcp::backup::{Backups, Pacing, snapshot};
use erlmcp::config::Config;
use erlmcp::store::{Store, StoreConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn backups(data: &std::path::Path, pacing: Pacing) -> Backups {
    let c = Config {
        data_dir: data.to_owned(),
        ..Config::default()
    };
    let mut b = Backups::from_config(&c);
    b.pacing = pacing;
    b
}

/// Each write adds one entity and one observation in the same transaction:
/// in any consistent snapshot the two counts are equal.
async fn write_pair(store: &Store, i: u64) {
    store
        .write(move |tx| {
            tx.execute(
                "INSERT INTO memory_entities (name, entity_type) VALUES (?1, 'w')",
                [format!("w{i}")],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO memory_observations (entity_id, content) VALUES (?1, ?2)",
                rusqlite::params![id, "x".repeat(200)],
            )?;
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_is_one_consistent_snapshot_under_steady_writes() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 2000, 300);
    let store = Store::open(&data, &StoreConfig::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                write_pair(&store, i).await;
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    // Small steps with pauses: many commits land while the copy runs.
    let b = backups(
        &data,
        Pacing {
            step_pages: 8,
            pause: Duration::from_millis(2),
        },
    );
    let dest = t.path().join("copy.db");
    let db = b.db_path();
    let before = written.load(Ordering::Relaxed);
    let stats = tokio::task::spawn_blocking(move || {
        snapshot::copy_online(&db, &dest, b.pacing, &AtomicBool::new(false))
    })
    .await
    .unwrap()
    .unwrap();
    let during = written.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    assert!(during > 20, "writes went on during the copy ({during})");
    assert_eq!(
        stats.restarts, 0,
        "the held read transaction keeps the copy from restarting: {stats:?}"
    );
    assert!(stats.steps as i64 >= stats.pages / 8, "{stats:?}");
    let copy = t.path().join("copy.db");
    assert_eq!(integrity(&copy), "ok");
    let c = rusqlite::Connection::open(&copy).unwrap();
    let (e, o): (i64, i64) = c
        .query_row(
            "SELECT (SELECT count(*) FROM memory_entities), (SELECT count(*) FROM memory_observations)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(e, o, "one snapshot: every pair complete");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the copy is a standalone file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_through_the_open_store_swaps_under_queued_writes() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 100, 50);
    let store = Store::open(&data, &StoreConfig::default()).unwrap();
    let b = backups(
        &data,
        Pacing {
            step_pages: 64,
            pause: Duration::ZERO,
        },
    );
    let bb = b.clone();
    let created = tokio::task::spawn_blocking(move || snapshot::create(&bb))
        .await
        .unwrap()
        .unwrap();
    store
        .write(|tx| erlmcp::store::kv::put(tx, "test_marker", b"B"))
        .await
        .unwrap();

    // Writes and reads keep coming while the swap happens.
    let traffic = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200u64 {
                write_pair(&store, 10_000 + i).await;
                store
                    .read(|c| {
                        Ok(c.query_row("SELECT count(*) FROM kv", [], |r| r.get::<_, i64>(0))?)
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let mut forgotten = false;
    let r = restore::restore_online(&b, &store, Target::Latest, false, || forgotten = true)
        .await
        .unwrap();
    traffic.await.unwrap();
    assert_eq!(r.id, created.manifest.id);
    assert!(forgotten, "sessions are forgotten after the swap");

    let marker = store
        .read(|c| {
            Ok(
                c.query_row("SELECT value FROM kv WHERE key = 'test_marker'", [], |r| {
                    r.get::<_, Vec<u8>>(0)
                })?,
            )
        })
        .await
        .unwrap();
    assert_eq!(marker, b"A", "readers see the restored file");
    let audited = store
        .read(|c| erlmcp::store::audit::recent(c, Some("restore"), 5))
        .await
        .unwrap();
    assert_eq!(audited[0].outcome, "ok");
    assert_eq!(marker_of(r.previous.as_ref().unwrap()), "B");
    store.checkpoint().await.unwrap();
    assert_eq!(integrity(&b.db_path()), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_backs_up_audits_and_metrics_tell_success_and_failure() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    make_db(&data, "A", 20, 20);
    let store = Store::open(&data, &StoreConfig::default()).unwrap();
    let b = backups(
        &data,
        Pacing {
            step_pages: 64,
            pause: Duration::ZERO,
        },
    );
    let sched = erlmcp::backup::scheduler::Scheduler {
        backups: b.clone(),
        schedule: erlmcp::clock::Schedule::parse("1h").unwrap(),
        store: store.clone(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(sched.clone().run(stop.clone()));
    // No backup yet: the first one is due at once.
    let bb = b.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("a scheduled backup", Duration::from_secs(20), || {
            erlmcp::backup::catalog::list(&bb)
                .unwrap()
                .iter()
                .any(|e| e.is_good())
        })
    })
    .await
    .unwrap();
    stop.cancel();
    task.await.unwrap();
    let text = recorder.render();
    for name in [
        "erlmcp_backup_last_success_timestamp_seconds",
        "erlmcp_backup_last_duration_seconds",
        "erlmcp_backup_size_bytes",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(
        erlmcp::backup::metrics::status_line()
            .unwrap()
            .contains(" ok ")
    );

    // A backup directory that cannot be created: counted, said in STATUS.
    let blocker = t.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let mut broken = sched.clone();
    broken.backups.dir = blocker.join("backups");
    assert!(!broken.run_once().await);
    let text = recorder.render();
    assert!(text.contains("erlmcp_backup_failures_total 1"), "{text}");
    assert!(
        erlmcp::backup::metrics::status_line()
            .unwrap()
            .contains("FAILED")
    );

    // A corrupt backup found by verify is counted too.
    let id = erlmcp::backup::catalog::list(&b).unwrap()[0].id.clone();
    let f = b.data_file(&id);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let reports = erlmcp::backup::verify::verify(&b, Some(&id)).unwrap();
    assert!(!reports[0].ok);
    assert!(
        recorder
            .render()
            .contains("erlmcp_backup_verification_failures_total 1")
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    let audited = store
        .read(|c| erlmcp::store::audit::recent(c, Some("backup"), 5))
        .await
        .unwrap();
    let outcomes: Vec<&str> = audited.iter().map(|e| e.outcome.as_str()).collect();
    assert!(
        outcomes.contains(&"ok") && outcomes.contains(&"error"),
        "{outcomes:?}"
    );
}
