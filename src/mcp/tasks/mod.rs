//! Tasks: a tool call answered at once with a handle (`CreateTaskResult`)
//! and finished in the background, its state and outcome kept in SQLite
//! (`store::tasks`) so they outlive the process. Two protocol flavours share
//! one machine: the experimental utility of 2025-11-25 (the client asks with
//! a `task` param; `tasks/get`, `tasks/result`, `tasks/list`,
//! `tasks/cancel`) and the 2026-07-28 `io.modelcontextprotocol/tasks`
//! extension (the server decides; `tasks/get`, `tasks/update`,
//! `tasks/cancel`).
//!
//! - [`launch`]: how a `tools/call` runs: on its request, as a task from
//!   the start, or as a candidate promoted when it runs long;
//! - [`Tasks`]: this process's registry: creation (with the per-owner cap),
//!   lookups scoped to their [`Owner`], the live tasks it runs, pruning;
//! - [`live`]: a task running here (cancellation, input from the client,
//!   the end its waiters wait for);
//! - [`slot`]: how a call running on a request becomes a task;
//! - [`runner`]: running a tool as a task and recording its end;
//! - [`recovery`]: taking over tasks whose process died (fail them, or run
//!   them once more);
//! - [`watch`]: 2026-07-28 status notifications on `subscriptions/listen`;
//! - [`wire`]: the JSON of each flavour.

pub mod launch;
pub mod live;
pub mod recovery;
pub mod runner;
pub mod slot;
pub mod watch;
pub mod wire;

use dashmap::DashMap;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::client::ClientInfo;
use super::context::RequestContext;
use super::error::McpError;
use super::outbound::Peer;
use super::version::ProtocolVersion;
use crate::config::TasksConfig;
use crate::store::lease::Lease;
use crate::store::tasks::{self as rows, TaskRow};
use crate::store::{Store, StoreError};
use live::LiveTask;
use watch::Watchers;

/// The extension's identifier (2026-07-28).
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// The `_meta` key tying a message to its task (2025-11-25).
pub const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// The settings a reload may change.
#[derive(Clone, Debug)]
pub struct TaskSettings {
    pub default_ttl_ms: i64,
    pub max_ttl_ms: i64,
    pub poll_interval_ms: i64,
    pub promote_after: Duration,
    pub max_live_per_owner: usize,
    pub max_result_bytes: usize,
}

impl TaskSettings {
    pub fn from_config(c: &TasksConfig) -> TaskSettings {
        TaskSettings {
            default_ttl_ms: (c.default_ttl_secs as i64).saturating_mul(1000),
            max_ttl_ms: (c.max_ttl_secs as i64).saturating_mul(1000),
            poll_interval_ms: c.poll_interval_ms as i64,
            promote_after: Duration::from_millis(c.promote_after_ms),
            max_live_per_owner: c.max_live_per_owner,
            max_result_bytes: c.max_result_bytes,
        }
    }

    /// Task creation is off when no task may be live.
    pub fn enabled(&self) -> bool {
        self.max_live_per_owner > 0
    }

    /// The ttl a task gets: what the client asked for (2025-11-25) within
    /// [1 s, max], else the default.
    pub fn ttl_ms(&self, requested: Option<i64>) -> i64 {
        match requested {
            Some(t) => t.clamp(1000, self.max_ttl_ms.max(1000)),
            None => self.default_ttl_ms,
        }
    }
}

/// Who may see a task: a legacy session, or a principal (modern requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The scope every lookup is confined to.
    pub key: String,
    /// The persisted session the task ends with (HTTP sessions).
    pub session_id: Option<String>,
}

impl Owner {
    /// The owner of a modern request's tasks.
    pub fn principal(p: &str) -> Owner {
        Owner {
            key: format!("principal:{p}"),
            session_id: None,
        }
    }

    /// The owner of what `ctx`'s request creates or looks up. `persisted`
    /// tells whether a legacy session lives in the database (HTTP) or only
    /// in its stdio process.
    pub fn of(ctx: &RequestContext, persisted: impl Fn(&str) -> bool) -> Owner {
        match (&ctx.session, &ctx.principal) {
            (Some(s), _) if persisted(&s.id) => Owner {
                key: format!("session:{}", s.id),
                session_id: Some(s.id.to_string()),
            },
            (Some(s), _) => Owner {
                key: format!("connection:{}", s.id),
                session_id: None,
            },
            (None, Some(p)) => Owner::principal(p),
            (None, None) => Owner::principal("anonymous"),
        }
    }
}

#[derive(Debug, Error)]
pub enum TaskError {
    #[error(
        "too many unfinished tasks: {limit} already run for this client (tasks.max_live_per_owner); \
         wait for one to end or cancel one"
    )]
    TooMany { limit: usize },
    #[error("tasks are turned off on this server (tasks.max_live_per_owner = 0)")]
    Disabled,
    #[error("cannot record the task: {0}")]
    Store(#[from] StoreError),
}

/// JSON-RPC server error for a refused task (implementation-defined range).
pub const TOO_MANY_TASKS: i64 = -32000;

impl From<TaskError> for McpError {
    fn from(e: TaskError) -> McpError {
        match e {
            TaskError::TooMany { limit } => McpError::new(TOO_MANY_TASKS, e.to_string())
                .with_data(json!({ "maxLivePerOwner": limit })),
            TaskError::Disabled => McpError::new(TOO_MANY_TASKS, e.to_string()),
            TaskError::Store(_) => McpError::internal(e),
        }
    }
}

/// The answer for a task that does not exist, has expired, or belongs to
/// someone else: the same in all three cases, so nothing leaks.
pub fn not_found(id: &str) -> McpError {
    McpError::invalid_params(format!(
        "Failed to retrieve task: no task {id:?} (unknown, or expired)"
    ))
}

/// What a new task records about its call.
pub struct NewTask {
    pub owner: Owner,
    pub method: &'static str,
    /// The params, to run it again after a crash.
    pub request: Value,
    pub ttl_ms: i64,
    pub version: ProtocolVersion,
    pub client: Arc<ClientInfo>,
    /// The session of a 2025-11-25 task.
    pub peer: Option<Arc<Peer>>,
    /// The token the handler watches: cancelling the task fires it.
    pub cancel: CancellationToken,
}

/// This process's tasks: the ones it runs, and access to all in the store.
pub struct Tasks {
    pub(crate) store: Store,
    data_dir: PathBuf,
    lease: Lease,
    live: DashMap<String, Arc<LiveTask>>,
    pub watchers: Arc<Watchers>,
}

impl Tasks {
    pub fn new(store: Store) -> Result<Tasks, StoreError> {
        let data_dir = store.path().parent().map(PathBuf::from).unwrap_or_default();
        let lease = Lease::take(&data_dir)?;
        Ok(Tasks {
            store,
            data_dir,
            lease,
            live: DashMap::new(),
            watchers: Default::default(),
        })
    }

    /// This process's runner id.
    pub fn runner(&self) -> &str {
        self.lease.id()
    }

    /// Records a new task durably (a `tasks/get` for it resolves before its
    /// id is handed out) and registers it as running here.
    pub async fn create(
        &self,
        new: NewTask,
        settings: &TaskSettings,
    ) -> Result<(Arc<LiveTask>, TaskRow), TaskError> {
        if !settings.enabled() {
            return Err(TaskError::Disabled);
        }
        let row = self.new_row(&new, settings);
        let (limit, now) = (settings.max_live_per_owner, row.created_at_ms);
        let stored = row.clone();
        let admitted = self
            .store
            .write(move |tx| {
                if rows::count_unfinished(tx, &stored.owner, now)? >= limit {
                    return Ok(false);
                }
                rows::insert(tx, &stored)?;
                Ok(true)
            })
            .await?;
        if !admitted {
            return Err(TaskError::TooMany { limit });
        }
        metrics::counter!("erlmcp_tasks_created_total").increment(1);
        let live = self.adopt(&row, new.peer, new.cancel);
        Ok((live, row))
    }

    /// The row of a task just created, `working`.
    fn new_row(&self, new: &NewTask, settings: &TaskSettings) -> TaskRow {
        let now = crate::clock::now_millis();
        TaskRow {
            id: uuid_like(),
            owner: new.owner.key.clone(),
            session_id: new.owner.session_id.clone(),
            runner: self.runner().to_owned(),
            protocol_version: new.version.as_str().to_owned(),
            method: new.method.to_owned(),
            request: new.request.to_string(),
            client: json!({ "info": new.client.info, "capabilities": new.client.capabilities })
                .to_string(),
            status: "working".into(),
            attempts: 1,
            created_at_ms: now,
            updated_at_ms: now,
            ttl_ms: new.ttl_ms,
            expires_at_ms: now.saturating_add(new.ttl_ms),
            poll_interval_ms: settings.poll_interval_ms,
            ..Default::default()
        }
    }

    /// Registers `row` as running in this process, stopped by `cancel`.
    pub(crate) fn adopt(
        &self,
        row: &TaskRow,
        peer: Option<Arc<Peer>>,
        cancel: CancellationToken,
    ) -> Arc<LiveTask> {
        let live = Arc::new(LiveTask::new(
            row,
            peer,
            cancel,
            self.store.clone(),
            self.watchers.clone(),
        ));
        self.live.insert(row.id.clone(), live.clone());
        metrics::gauge!("erlmcp_tasks_running").set(self.live.len() as f64);
        live
    }

    /// The task `id` if it runs in this process.
    pub fn live(&self, id: &str) -> Option<Arc<LiveTask>> {
        self.live.get(id).map(|e| e.value().clone())
    }

    /// Forgets a task that ended (or expired).
    pub(crate) fn forget(&self, id: &str) {
        self.live.remove(id);
        metrics::gauge!("erlmcp_tasks_running").set(self.live.len() as f64);
    }

    /// Stops every task running here (this node became a replication
    /// standby: it may no longer write their ends, and the primary takes
    /// them over). Returns how many there were.
    pub fn stop_all(&self) -> usize {
        let ids: Vec<String> = self.live.iter().map(|e| e.key().clone()).collect();
        for id in &ids {
            if let Some(live) = self.live(id) {
                live.cancel.cancel();
            }
            self.forget(id);
        }
        ids.len()
    }

    /// The stored task `id`, if `owner` may see it.
    pub async fn load(&self, owner: &Owner, id: &str) -> Result<Option<TaskRow>, StoreError> {
        let (key, id) = (owner.key.clone(), id.to_owned());
        let now = crate::clock::now_millis();
        self.store
            .read(move |c| rows::load(c, &key, &id, now))
            .await
    }

    /// A page of `owner`'s tasks after the cursor position.
    pub async fn page(
        &self,
        owner: &Owner,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<TaskRow>, StoreError> {
        let key = owner.key.clone();
        let now = crate::clock::now_millis();
        self.store
            .read(move |c| {
                let after = after.as_ref().map(|(at, id)| (*at, id.as_str()));
                rows::page(c, &key, after, limit, now)
            })
            .await
    }

    /// Deletes expired tasks and those of ended sessions, stopping any of
    /// them still running here. Returns how many went.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let now = crate::clock::now_millis();
        let gone = self
            .store
            .write(move |tx| {
                let mut ids = rows::prune_expired(tx, now)?;
                ids.extend(rows::prune_orphans(tx)?);
                Ok(ids)
            })
            .await?;
        for id in &gone {
            if let Some(live) = self.live(id) {
                live.cancel.cancel();
                self.forget(id);
            }
        }
        Ok(gone.len())
    }

    /// Unfinished tasks under this process's lease that it does not run,
    /// untouched for a minute (so a task whose row is committed but not yet
    /// registered is never mistaken for one): rows a restore brought back.
    pub async fn own_orphans(&self) -> Result<Vec<TaskRow>, StoreError> {
        let me = self.runner().to_owned();
        let mine = self
            .store
            .read(move |c| rows::unfinished_of(c, &me))
            .await?;
        let before = crate::clock::now_millis() - 60_000;
        Ok(mine
            .into_iter()
            .filter(|r| r.updated_at_ms < before && !self.live.contains_key(&r.id))
            .collect())
    }

    /// Runners other than this process that have unfinished tasks and no
    /// longer hold their lease: their tasks have nobody running them.
    pub async fn abandoned_runners(&self) -> Result<Vec<String>, StoreError> {
        let runners = self.store.read(rows::runners_with_unfinished).await?;
        Ok(runners
            .into_iter()
            .filter(|r| r != self.runner())
            .filter(|r| crate::store::lease::is_abandoned(&self.data_dir, r))
            .collect())
    }
}

/// A task id: 128 random bits in the familiar 8-4-4-4-12 hex form.
/// Unguessable, so an id alone reveals nothing to another client.
fn uuid_like() -> String {
    let h = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped_and_defaulted() {
        let s = TaskSettings::from_config(&TasksConfig::default());
        assert_eq!(s.ttl_ms(None), 3_600_000);
        assert_eq!(s.ttl_ms(Some(5)), 1000);
        assert_eq!(s.ttl_ms(Some(i64::MAX)), s.max_ttl_ms);
    }

    #[tokio::test]
    async fn rows_under_this_lease_that_nothing_runs_are_orphans_once_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        let tasks = Tasks::new(store.clone()).unwrap();
        let old = crate::clock::now_millis() - 120_000;
        let row = |id: &str, updated: i64| TaskRow {
            id: id.into(),
            owner: "principal:p".into(),
            runner: tasks.runner().to_owned(),
            protocol_version: "2026-07-28".into(),
            status: "working".into(),
            created_at_ms: old,
            updated_at_ms: updated,
            ttl_ms: 3_600_000,
            expires_at_ms: old + 3_600_000,
            ..Default::default()
        };
        let (restored, fresh, running) = (
            row("restored", old),
            row("fresh", old + 119_000),
            row("running", old),
        );
        let stored = [restored.clone(), fresh, running.clone()];
        store
            .write(move |tx| stored.iter().try_for_each(|r| rows::insert(tx, r)))
            .await
            .unwrap();
        tasks.adopt(&running, None, CancellationToken::new());
        let orphans: Vec<String> = tasks
            .own_orphans()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(orphans, vec!["restored".to_owned()]);
    }

    #[test]
    fn task_ids_are_distinct_and_well_formed() {
        let a = uuid_like();
        assert_eq!(a.len(), 36);
        assert_ne!(a, uuid_like());
    }
}
