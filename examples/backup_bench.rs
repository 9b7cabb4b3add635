//! Backup benchmark: a database of at least `--gib` GiB, a steady writer
//! through `Store::write`, and an online backup (copy + zstd + verify) in
//! the middle. Prints write latency without and during the backup, backup
//! throughput, and `sqlite3 .backup` on the same file (idle, and under the
//! same writer) for comparison. Not a test: it reports figures.
//!
//!     cargo run --release --example backup_bench -- [--dir DIR] [--gib 1.0]
//!
//! The database is kept in DIR and reused when it is big enough.

use erlmcp::backup::restore::{self, Target};
use erlmcp::backup::{Backups, snapshot};
use erlmcp::config::Config;
use erlmcp::store::{Store, StoreConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MB: f64 = 1_000_000.0;

struct Args {
    dir: PathBuf,
    gib: f64,
    baseline_secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("/tmp/erlmcp-backup-bench"),
        gib: 1.0,
        baseline_secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_default();
        match k.as_str() {
            "--dir" => a.dir = PathBuf::from(v),
            "--gib" => a.gib = v.parse().expect("--gib N"),
            "--baseline-secs" => a.baseline_secs = v.parse().expect("--baseline-secs N"),
            _ => panic!("unknown argument {k}"),
        }
    }
    a
}

/// Fills the audit log (no FTS triggers: bulk rows build fast) with
/// semi-compressible text until the file reaches `bytes`.
fn build_db(data: &Path, bytes: u64) {
    let db = data.join("erlmcp.db");
    if std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) >= bytes {
        println!("reusing {} ({:.2} GiB)", db.display(), gib(&db));
        return;
    }
    std::fs::create_dir_all(data).unwrap();
    let _ = std::fs::remove_file(&db);
    let mut c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .unwrap();
    erlmcp::store::migrations::to_latest(&mut c).unwrap();
    let words = [
        "alpha", "beta", "gamma", "delta", "tool", "call", "memory", "graph", "entity", "relation",
    ];
    let started = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n = 0u64;
    while std::fs::metadata(&db).unwrap().len() < bytes {
        let tx = c.transaction().unwrap();
        for _ in 0..20_000 {
            let mut detail = String::with_capacity(1100);
            while detail.len() < 1000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                detail.push_str(words[(seed % 10) as usize]);
                detail.push_str(&format!(" {:x} ", seed >> 40));
            }
            tx.execute(
                "INSERT INTO audit_log (at_ms, kind, subject, outcome, detail) VALUES (?1, 'tool', 'bench', 'ok', ?2)",
                rusqlite::params![n as i64, detail],
            )
            .unwrap();
            n += 1;
        }
        tx.commit().unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    println!(
        "built {} ({:.2} GiB, {n} rows) in {:.0} s",
        db.display(),
        gib(&db),
        started.elapsed().as_secs_f64()
    );
}

fn gib(p: &Path) -> f64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / (1u64 << 30) as f64
}

/// Latencies (µs) of writes made every 2 ms until `stop`.
async fn steady_writer(store: Store, stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut lat = Vec::new();
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        store
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO audit_log (at_ms, kind, subject, outcome, detail) VALUES (?1, 'tool', 'steady', 'ok', 'x')",
                    [i],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        lat.push(t.elapsed().as_micros() as u64);
        i += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lat
}

fn summary(name: &str, mut lat: Vec<u64>) {
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{name:<28} writes {:>6}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        lat.len(),
        pct(0.5) as f64 / 1000.0,
        pct(0.99) as f64 / 1000.0,
        lat.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}

/// Runs `f` while the steady writer writes; returns its value and the latencies.
async fn with_writer<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Vec<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(steady_writer(store.clone(), stop.clone()));
    let out = tokio::task::spawn_blocking(f).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    (out, w.await.unwrap())
}

fn sqlite3_backup(db: &Path, dest: &Path, timeout: Duration) -> Option<f64> {
    let _ = std::fs::remove_file(dest);
    let t = Instant::now();
    let mut child = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .arg("sqlite3")
        .arg(db)
        .arg(format!(".backup {}", dest.display()))
        .spawn()
        .expect("sqlite3 (apt-get install sqlite3)");
    let ok = child.wait().unwrap().success();
    ok.then(|| t.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let data = a.dir.join("data");
    build_db(&data, (a.gib * (1u64 << 30) as f64) as u64);
    let db = data.join("erlmcp.db");
    let db_bytes = std::fs::metadata(&db).unwrap().len() as f64;
    let store = Store::open(&data, &StoreConfig::default()).unwrap();
    let c = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    let b = Backups::from_config(&c);
    let _ = std::fs::remove_dir_all(&b.dir);
    println!(
        "backup pacing: {} pages per step, {:?} pause",
        b.pacing.step_pages, b.pacing.pause
    );

    let secs = a.baseline_secs;
    let (_, base) = with_writer(&store, move || {
        std::thread::sleep(Duration::from_secs(secs))
    })
    .await;
    summary("no backup", base);

    let bb = b.clone();
    let t = Instant::now();
    let (created, during) = with_writer(&store, move || snapshot::create(&bb).unwrap()).await;
    let total = t.elapsed().as_secs_f64();
    summary("during erlmcp backup", during);
    let copy_s = created.copy.copy_ms as f64 / 1000.0;
    println!(
        "erlmcp backup: {:.0} MB db -> {:.0} MB zstd; copy {:.1} s = {:.0} MB/s (steps {}, restarts {}); \
         copy+compress {:.1} s = {:.0} MB/s; verify {:.1} s; total {:.1} s = {:.0} MB/s",
        db_bytes / MB,
        created.manifest.compressed_bytes as f64 / MB,
        copy_s,
        db_bytes / MB / copy_s,
        created.copy.steps,
        created.copy.restarts,
        created.manifest.duration_ms as f64 / 1000.0,
        db_bytes / MB / (created.manifest.duration_ms as f64 / 1000.0),
        created.verify_ms as f64 / 1000.0,
        total,
        db_bytes / MB / total
    );

    let dest = a.dir.join("sqlite3-copy.db");
    match sqlite3_backup(&db, &dest, Duration::from_secs(600)) {
        Some(s) => println!(
            "sqlite3 .backup, idle: {s:.1} s = {:.0} MB/s",
            db_bytes / MB / s
        ),
        None => println!("sqlite3 .backup, idle: failed"),
    }
    let limit = Duration::from_secs((copy_s * 4.0).max(30.0) as u64);
    let (d, dest2) = (db.clone(), dest.clone());
    let (r, under) = with_writer(&store, move || sqlite3_backup(&d, &dest2, limit)).await;
    match r {
        Some(s) => println!(
            "sqlite3 .backup, under the same writer: {s:.1} s = {:.0} MB/s",
            db_bytes / MB / s
        ),
        None => println!(
            "sqlite3 .backup, under the same writer: not finished after {} s (it restarts whenever another \
             connection commits)",
            limit.as_secs()
        ),
    }
    summary("during sqlite3 .backup", under);
    let _ = std::fs::remove_file(&dest);

    // Restore through the open store while the writer writes: the verify
    // runs beside it, the swap pauses writes.
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(steady_writer(store.clone(), stop.clone()));
    let t = Instant::now();
    let r = restore::restore_online(&b, &store, Target::Latest, false, || {})
        .await
        .unwrap();
    let online_s = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    summary("during online restore", w.await.unwrap());
    println!(
        "online restore of {} (verify + swap): {online_s:.1} s",
        r.id
    );
    if let Some(p) = &r.previous {
        let _ = std::fs::remove_file(p);
    }

    // Offline: what `erlmcp restore latest` costs with the daemon stopped.
    drop(store);
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = restore::restore_offline(&b, &Target::Latest, false).unwrap();
    println!(
        "offline restore of {} (verify + swap): {:.1} s",
        r.id,
        t.elapsed().as_secs_f64()
    );
    if let Some(p) = &r.previous {
        let _ = std::fs::remove_file(p);
    }
    let t = Instant::now();
    let store = Store::open(&data, &StoreConfig::default()).unwrap();
    store.checkpoint().await.unwrap();
    println!(
        "store open after restore: {:.2} s",
        t.elapsed().as_secs_f64()
    );
}
