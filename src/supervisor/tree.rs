//! Supervisors and their children.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// When a child that ended is started again (OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only if it ended abnormally (error or panic).
    // The whole OTP vocabulary is kept and unit-tested here, even where the
    // daemon's own trees use only part of it today.
    #[allow(dead_code)]
    Transient,
    /// Never.
    Temporary,
}

/// Which children restart when one ends (OTP's strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Only the child that ended.
    OneForOne,
    /// The child that ended and every child started after it.
    #[allow(dead_code)]
    RestForOne,
    /// All children.
    #[allow(dead_code)]
    OneForAll,
}

/// At most `max_restarts` restarts within `within`; one more escalates.
#[derive(Clone, Copy, Debug)]
pub struct Intensity {
    pub max_restarts: usize,
    pub within: Duration,
}

/// How a child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Normal,
    Failed(String),
    Panicked(String),
}

impl Exit {
    fn abnormal(&self) -> bool {
        !matches!(self, Exit::Normal)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Normal => f.write_str("exited normally"),
            Exit::Failed(e) => write!(f, "failed: {e}"),
            Exit::Panicked(e) => write!(f, "panicked: {e}"),
        }
    }
}

/// Why a child failed: any error; the supervisor only logs and counts it.
pub type ChildError = Box<dyn std::error::Error + Send + Sync>;
pub type ChildFuture = BoxFuture<'static, Result<(), ChildError>>;
type StartFn = Arc<dyn Fn(CancellationToken) -> ChildFuture + Send + Sync>;

/// A child: how to start it and when to restart it. The start function gets
/// a token that is cancelled when the child must stop; it returns `Ok` when
/// it finished its work, `Err` when it failed.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub restart: Restart,
    /// When this child ends normally, the whole supervisor stops (OTP's
    /// `significant` child): e.g. the stdio loop at end of input.
    pub ends_tree: bool,
    /// How long it may take to stop before it is aborted.
    pub shutdown: Duration,
    start: StartFn,
}

impl ChildSpec {
    pub fn new<F>(name: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn(CancellationToken) -> ChildFuture + Send + Sync + 'static,
    {
        ChildSpec {
            name: name.into(),
            restart,
            ends_tree: false,
            shutdown: Duration::from_secs(5),
            start: Arc::new(start),
        }
    }

    pub fn ends_tree(mut self) -> Self {
        self.ends_tree = true;
        self
    }

    pub fn shutdown(mut self, d: Duration) -> Self {
        self.shutdown = d;
        self
    }

    /// A child that is itself a supervisor; its escalation is its failure.
    #[allow(dead_code)]
    pub fn supervisor(name: impl Into<String>, restart: Restart, sup: Supervisor) -> Self {
        let sup = Arc::new(sup);
        let shutdown =
            sup.children.iter().map(|c| c.shutdown).sum::<Duration>() + Duration::from_secs(1);
        ChildSpec::new(name, restart, move |stop| {
            let sup = sup.clone();
            async move { Ok(sup.run(stop).await?) }.boxed()
        })
        .shutdown(shutdown)
    }
}

/// A supervisor gave up: a child restarted more often than allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escalation {
    pub supervisor: String,
    pub child: String,
    pub last_exit: String,
    pub restarts: usize,
    pub within: Duration,
}

impl std::fmt::Display for Escalation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "supervisor {} gave up: child {} needed more than {} restarts within {:?} (last: {})",
            self.supervisor, self.child, self.restarts, self.within, self.last_exit
        )
    }
}

impl std::error::Error for Escalation {}

/// What every supervisor in a tree reports about its children; read by
/// `/status` and the metrics.
#[derive(Clone, Default)]
pub struct TreeStatus {
    children: Arc<Mutex<BTreeMap<String, ChildState>>>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChildState {
    pub running: bool,
    pub restarts: u64,
    pub last_exit: Option<String>,
}

impl TreeStatus {
    fn update(&self, name: &str, f: impl FnOnce(&mut ChildState)) {
        let mut m = self.children.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(name.to_owned()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<String, ChildState> {
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub struct Supervisor {
    pub name: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    pub children: Vec<ChildSpec>,
    pub status: TreeStatus,
}

struct Running {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Supervisor {
    pub fn new(name: impl Into<String>, strategy: Strategy, intensity: Intensity) -> Self {
        Supervisor {
            name: name.into(),
            strategy,
            intensity,
            children: Vec::new(),
            status: TreeStatus::default(),
        }
    }

    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    pub fn with_status(mut self, status: TreeStatus) -> Self {
        self.status = status;
        self
    }

    /// Runs until `stop` (children stopped in reverse order; `Ok`), until a
    /// child marked `ends_tree` ends normally (`Ok`), or until the intensity
    /// limit is exceeded (`Err`).
    pub async fn run(&self, stop: CancellationToken) -> Result<(), Escalation> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let n = self.children.len();
        let mut running: Vec<Option<Running>> = (0..n).map(|_| None).collect();
        let mut generation = vec![0u64; n];
        let mut restarts: VecDeque<Instant> = VecDeque::new();
        for i in 0..n {
            // At zero from the start: a first restart then shows as an increase.
            metrics::counter!("erlmcp_child_restarts_total", "child" => self.children[i].name.clone())
                .increment(0);
            running[i] = Some(self.start(i, generation[i], &stop, &tx));
        }
        loop {
            let (i, epoch, exit) = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.stop_range(&mut running, &mut generation, 0..n).await;
                    return Ok(());
                }
                Some(m) = rx.recv() => m,
            };
            if stop.is_cancelled() {
                // Children see the stop through their own tokens and may end
                // before this loop does: that is shutdown, not a failure.
                self.stop_range(&mut running, &mut generation, 0..n).await;
                return Ok(());
            }
            if epoch != generation[i] {
                continue; // a child we stopped on purpose
            }
            running[i] = None;
            let spec = &self.children[i];
            self.report_exit(spec, &exit);
            if spec.ends_tree && !exit.abnormal() {
                self.stop_range(&mut running, &mut generation, 0..n).await;
                return Ok(());
            }
            let restart = match spec.restart {
                Restart::Permanent => true,
                Restart::Transient => exit.abnormal(),
                Restart::Temporary => false,
            };
            if !restart {
                continue;
            }
            let now = Instant::now();
            restarts.push_back(now);
            while restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.intensity.within)
            {
                restarts.pop_front();
            }
            if restarts.len() > self.intensity.max_restarts {
                tracing::error!(supervisor = %self.name, child = %spec.name, "restart intensity exceeded; escalating");
                self.stop_range(&mut running, &mut generation, 0..n).await;
                return Err(Escalation {
                    supervisor: self.name.clone(),
                    child: spec.name.clone(),
                    last_exit: exit.to_string(),
                    restarts: self.intensity.max_restarts,
                    within: self.intensity.within,
                });
            }
            let affected = match self.strategy {
                Strategy::OneForOne => i..i + 1,
                Strategy::RestForOne => i..n,
                Strategy::OneForAll => 0..n,
            };
            self.stop_range(&mut running, &mut generation, affected.clone())
                .await;
            for j in affected {
                generation[j] += 1;
                self.status
                    .update(&self.children[j].name, |s| s.restarts += 1);
                metrics::counter!("erlmcp_child_restarts_total", "child" => self.children[j].name.clone())
                    .increment(1);
                tracing::info!(supervisor = %self.name, child = %self.children[j].name, "restarting child");
                running[j] = Some(self.start(j, generation[j], &stop, &tx));
            }
        }
    }

    fn report_exit(&self, spec: &ChildSpec, exit: &Exit) {
        self.status.update(&spec.name, |s| {
            s.running = false;
            s.last_exit = Some(exit.to_string());
        });
        match exit {
            Exit::Normal => {
                tracing::info!(supervisor = %self.name, child = %spec.name, "child exited normally")
            }
            other => {
                tracing::error!(supervisor = %self.name, child = %spec.name, cause = %other, "child ended abnormally")
            }
        }
    }

    fn start(
        &self,
        i: usize,
        epoch: u64,
        parent: &CancellationToken,
        tx: &mpsc::UnboundedSender<(usize, u64, Exit)>,
    ) -> Running {
        let spec = &self.children[i];
        let stop = parent.child_token();
        let fut = (spec.start)(stop.clone());
        let tx = tx.clone();
        let handle = tokio::spawn(async move {
            let exit = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(())) => Exit::Normal,
                Ok(Err(e)) => Exit::Failed(e.to_string()),
                Err(p) => Exit::Panicked(panic_message(p.as_ref())),
            };
            let _ = tx.send((i, epoch, exit));
        });
        self.status.update(&spec.name, |s| s.running = true);
        Running { stop, handle }
    }

    /// Stops the children in `range`, last started first, each within its
    /// shutdown time (then aborted).
    async fn stop_range(
        &self,
        running: &mut [Option<Running>],
        generation: &mut [u64],
        range: std::ops::Range<usize>,
    ) {
        for j in range.rev() {
            generation[j] += 1;
            let Some(r) = running[j].take() else { continue };
            r.stop.cancel();
            let abort = r.handle.abort_handle();
            if tokio::time::timeout(self.children[j].shutdown, r.handle)
                .await
                .is_err()
            {
                tracing::warn!(supervisor = %self.name, child = %self.children[j].name, "child did not stop in time; aborted");
                abort.abort();
            }
            self.status
                .update(&self.children[j].name, |s| s.running = false);
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn intensity(n: usize) -> Intensity {
        Intensity {
            max_restarts: n,
            within: Duration::from_secs(10),
        }
    }

    /// A child that counts its starts and fails `fails` times, then runs
    /// until stopped.
    fn flaky(name: &str, starts: Arc<AtomicUsize>, fails: usize, restart: Restart) -> ChildSpec {
        ChildSpec::new(name, restart, move |stop| {
            let starts = starts.clone();
            async move {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                if n < fails {
                    return Err(format!("failure {n}").into());
                }
                stop.cancelled().await;
                Ok(())
            }
            .boxed()
        })
    }

    fn forever(name: &str, starts: Arc<AtomicUsize>) -> ChildSpec {
        flaky(name, starts, 0, Restart::Permanent)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn one_for_one_restarts_only_the_failed_child() {
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let sup = Supervisor::new("t", Strategy::OneForOne, intensity(5))
            .child(flaky("a", a.clone(), 2, Restart::Permanent))
            .child(forever("b", b.clone()));
        let status = sup.status.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { sup.run(stop).await }
        });
        settle().await;
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (3, 1));
        assert_eq!(status.snapshot()["a"].restarts, 2);
        stop.cancel();
        assert_eq!(task.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn rest_for_one_restarts_later_children_too() {
        let (a, b, c) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let sup = Supervisor::new("t", Strategy::RestForOne, intensity(5))
            .child(forever("a", a.clone()))
            .child(flaky("b", b.clone(), 1, Restart::Permanent))
            .child(forever("c", c.clone()));
        let stop = CancellationToken::new();
        let t = tokio::spawn({
            let s = stop.clone();
            async move { sup.run(s).await }
        });
        settle().await;
        assert_eq!(
            (
                a.load(Ordering::SeqCst),
                b.load(Ordering::SeqCst),
                c.load(Ordering::SeqCst)
            ),
            (1, 2, 2)
        );
        stop.cancel();
        t.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn one_for_all_restarts_everyone() {
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let sup = Supervisor::new("t", Strategy::OneForAll, intensity(5))
            .child(forever("a", a.clone()))
            .child(flaky("b", b.clone(), 1, Restart::Permanent));
        let stop = CancellationToken::new();
        let t = tokio::spawn({
            let s = stop.clone();
            async move { sup.run(s).await }
        });
        settle().await;
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (2, 2));
        stop.cancel();
        t.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn panics_are_failures_and_too_many_escalate() {
        let sup = Supervisor::new("root", Strategy::OneForOne, intensity(3)).child(ChildSpec::new(
            "bomb",
            Restart::Permanent,
            |_| async { panic!("boom") }.boxed(),
        ));
        let e = sup.run(CancellationToken::new()).await.unwrap_err();
        assert_eq!(e.child, "bomb");
        assert!(e.last_exit.contains("boom"), "{e}");
    }

    #[tokio::test]
    async fn transient_and_temporary_children() {
        let t_starts = Arc::new(AtomicUsize::new(0));
        let tmp_starts = Arc::new(AtomicUsize::new(0));
        let ts = t_starts.clone();
        let sup = Supervisor::new("t", Strategy::OneForOne, intensity(5))
            .child(ChildSpec::new("done", Restart::Transient, move |_| {
                ts.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }.boxed()
            }))
            .child(flaky("once", tmp_starts.clone(), 1, Restart::Temporary));
        let stop = CancellationToken::new();
        let t = tokio::spawn({
            let s = stop.clone();
            async move { sup.run(s).await }
        });
        settle().await;
        assert_eq!(
            t_starts.load(Ordering::SeqCst),
            1,
            "a normal exit is not restarted"
        );
        assert_eq!(
            tmp_starts.load(Ordering::SeqCst),
            1,
            "temporary is never restarted"
        );
        stop.cancel();
        t.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_nested_supervisor_escalates_as_a_failed_child() {
        let inner = Supervisor::new("inner", Strategy::OneForOne, intensity(1)).child(
            ChildSpec::new("bad", Restart::Permanent, |_| {
                async { Err("always".into()) }.boxed()
            }),
        );
        let outer = Supervisor::new("outer", Strategy::OneForOne, intensity(2))
            .child(ChildSpec::supervisor("inner", Restart::Permanent, inner));
        let e = outer.run(CancellationToken::new()).await.unwrap_err();
        assert_eq!(e.child, "inner");
        assert!(e.last_exit.contains("supervisor inner gave up"), "{e}");
    }

    #[tokio::test]
    async fn an_ends_tree_child_stops_the_supervisor() {
        let other = Arc::new(AtomicUsize::new(0));
        let sup = Supervisor::new("t", Strategy::OneForOne, intensity(1))
            .child(forever("other", other.clone()))
            .child(
                ChildSpec::new("main", Restart::Transient, |_| {
                    async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(())
                    }
                    .boxed()
                })
                .ends_tree(),
            );
        assert_eq!(sup.run(CancellationToken::new()).await, Ok(()));
    }
}
