//! Rows of the `tasks` table: long tool calls answered with a handle, their
//! state while they run and their outcome once they end. Statuses are
//! plain strings here; what they mean belongs to the protocol layer. A row
//! that ended never changes again: every update below is conditional on the
//! task still running.

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::StoreError;

/// The statuses of a task that has not ended.
const UNFINISHED: &str = "('working', 'input_required')";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskRow {
    pub id: String,
    /// The scope the task is visible to.
    pub owner: String,
    /// The persisted session the task ends with, if any.
    pub session_id: Option<String>,
    /// The lease of the process running the task.
    pub runner: String,
    pub protocol_version: String,
    pub method: String,
    /// The request's params (JSON), enough to run the task again.
    pub request: String,
    /// The client's info and capabilities (JSON).
    pub client: String,
    pub status: String,
    pub status_message: Option<String>,
    /// JSON, while the task waits for the client's input.
    pub input_requests: Option<String>,
    /// JSON, once completed.
    pub result: Option<String>,
    /// JSON, once failed.
    pub error: Option<String>,
    pub attempts: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub ttl_ms: i64,
    pub expires_at_ms: i64,
    pub poll_interval_ms: i64,
}

const COLUMNS: &str = "id, owner, session_id, runner, protocol_version, method, request, client,
    status, status_message, input_requests, result, error, attempts, created_at_ms,
    updated_at_ms, ttl_ms, expires_at_ms, poll_interval_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        session_id: r.get(2)?,
        runner: r.get(3)?,
        protocol_version: r.get(4)?,
        method: r.get(5)?,
        request: r.get(6)?,
        client: r.get(7)?,
        status: r.get(8)?,
        status_message: r.get(9)?,
        input_requests: r.get(10)?,
        result: r.get(11)?,
        error: r.get(12)?,
        attempts: r.get(13)?,
        created_at_ms: r.get(14)?,
        updated_at_ms: r.get(15)?,
        ttl_ms: r.get(16)?,
        expires_at_ms: r.get(17)?,
        poll_interval_ms: r.get(18)?,
    })
}

pub fn insert(tx: &Transaction<'_>, t: &TaskRow) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO tasks ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
        ),
        params![
            t.id,
            t.owner,
            t.session_id,
            t.runner,
            t.protocol_version,
            t.method,
            t.request,
            t.client,
            t.status,
            t.status_message,
            t.input_requests,
            t.result,
            t.error,
            t.attempts,
            t.created_at_ms,
            t.updated_at_ms,
            t.ttl_ms,
            t.expires_at_ms,
            t.poll_interval_ms
        ],
    )?;
    Ok(())
}

/// The task `id` of `owner`, unless it expired before `now_ms`.
pub fn load(
    conn: &Connection,
    owner: &str,
    id: &str,
    now_ms: i64,
) -> Result<Option<TaskRow>, StoreError> {
    let row = conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM tasks WHERE id = ?1 AND owner = ?2 AND expires_at_ms > ?3"
            ),
            params![id, owner, now_ms],
            from_row,
        )
        .optional()?;
    Ok(row)
}

/// Any task by id, whoever owns it (the runner's own bookkeeping).
pub fn load_any(conn: &Connection, id: &str) -> Result<Option<TaskRow>, StoreError> {
    let row = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?;
    Ok(row)
}

/// How many of `owner`'s tasks are still running (and not expired).
pub fn count_unfinished(
    tx: &Transaction<'_>,
    owner: &str,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let n: i64 = tx.query_row(
        &format!(
            "SELECT count(*) FROM tasks
             WHERE owner = ?1 AND status IN {UNFINISHED} AND expires_at_ms > ?2"
        ),
        params![owner, now_ms],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Moves a running task to another running status (`working`,
/// `input_required`) with its message and pending input requests; false if
/// the task had already ended.
pub fn set_running_status(
    tx: &Transaction<'_>,
    id: &str,
    status: &str,
    message: Option<&str>,
    input_requests: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        &format!(
            "UPDATE tasks SET status = ?2, status_message = ?3, input_requests = ?4,
                              updated_at_ms = ?5
             WHERE id = ?1 AND status IN {UNFINISHED}"
        ),
        params![id, status, message, input_requests, now_ms],
    )?;
    Ok(n > 0)
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    pub message: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// Ends a running task; false if it had already ended (a cancelled task
/// keeps its status when the work finishes anyway).
pub fn finish(
    tx: &Transaction<'_>,
    id: &str,
    ending: &Ending,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        &format!(
            "UPDATE tasks SET status = ?2, status_message = ?3, result = ?4, error = ?5,
                              input_requests = NULL, updated_at_ms = ?6
             WHERE id = ?1 AND status IN {UNFINISHED}"
        ),
        params![
            id,
            ending.status,
            ending.message,
            ending.result,
            ending.error,
            now_ms
        ],
    )?;
    Ok(n > 0)
}

/// Ends a task of a runner that died; false if it ended meanwhile or
/// another process took it over first.
pub fn finish_abandoned(
    tx: &Transaction<'_>,
    id: &str,
    runner: &str,
    ending: &Ending,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        &format!(
            "UPDATE tasks SET status = ?3, status_message = ?4, result = ?5, error = ?6,
                              input_requests = NULL, updated_at_ms = ?7
             WHERE id = ?1 AND runner = ?2 AND status IN {UNFINISHED}"
        ),
        params![
            id,
            runner,
            ending.status,
            ending.message,
            ending.result,
            ending.error,
            now_ms
        ],
    )?;
    Ok(n > 0)
}

/// Hands a running task to another runner for another attempt; false if
/// it ended or another process took it first.
pub fn claim(
    tx: &Transaction<'_>,
    id: &str,
    from_runner: &str,
    to_runner: &str,
    message: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = tx.execute(
        &format!(
            "UPDATE tasks SET runner = ?3, attempts = attempts + 1, status = 'working',
                              status_message = ?4, input_requests = NULL, updated_at_ms = ?5
             WHERE id = ?1 AND runner = ?2 AND status IN {UNFINISHED}"
        ),
        params![id, from_runner, to_runner, message, now_ms],
    )?;
    Ok(n > 0)
}

/// A page of `owner`'s tasks, oldest first, after the `(created_at_ms, id)`
/// of the last one seen.
pub fn page(
    conn: &Connection,
    owner: &str,
    after: Option<(i64, &str)>,
    limit: usize,
    now_ms: i64,
) -> Result<Vec<TaskRow>, StoreError> {
    let (at, id) = after.unwrap_or((i64::MIN, ""));
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks
         WHERE owner = ?1 AND expires_at_ms > ?2 AND (created_at_ms, id) > (?3, ?4)
         ORDER BY created_at_ms, id LIMIT ?5"
    ))?;
    let rows = stmt
        .query_map(params![owner, now_ms, at, id, limit as i64], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The runners that have tasks still running, each once.
pub fn runners_with_unfinished(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT DISTINCT runner FROM tasks WHERE status IN {UNFINISHED}"
    ))?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

/// The tasks `runner` had not finished.
pub fn unfinished_of(conn: &Connection, runner: &str) -> Result<Vec<TaskRow>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE runner = ?1 AND status IN {UNFINISHED}"
    ))?;
    let rows = stmt
        .query_map([runner], from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes tasks that expired before `now_ms`; returns their ids.
pub fn prune_expired(tx: &Transaction<'_>, now_ms: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare("DELETE FROM tasks WHERE expires_at_ms <= ?1 RETURNING id")?;
    let ids = stmt
        .query_map([now_ms], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

/// Deletes the tasks of persisted sessions that no longer exist (nobody
/// else may see them); returns their ids.
pub fn prune_orphans(tx: &Transaction<'_>) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare(
        "DELETE FROM tasks WHERE session_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM sessions WHERE sessions.id = tasks.session_id)
         RETURNING id",
    )?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::migrations::to_latest(&mut c).unwrap();
        (dir, c)
    }

    fn row(id: &str, owner: &str, created: i64, ttl: i64) -> TaskRow {
        TaskRow {
            id: id.into(),
            owner: owner.into(),
            runner: "r1".into(),
            protocol_version: "2025-11-25".into(),
            method: "tools/call".into(),
            request: "{}".into(),
            client: "{}".into(),
            status: "working".into(),
            attempts: 1,
            created_at_ms: created,
            updated_at_ms: created,
            ttl_ms: ttl,
            expires_at_ms: created + ttl,
            poll_interval_ms: 500,
            ..Default::default()
        }
    }

    #[test]
    fn owners_see_only_their_unexpired_tasks() {
        let (_d, mut c) = db();
        let tx = c.transaction().unwrap();
        insert(&tx, &row("a", "p:1", 1000, 100)).unwrap();
        insert(&tx, &row("b", "p:2", 1000, 100)).unwrap();
        tx.commit().unwrap();
        assert!(load(&c, "p:1", "a", 1050).unwrap().is_some());
        assert!(load(&c, "p:2", "a", 1050).unwrap().is_none(), "not p:2's");
        assert!(load(&c, "p:1", "a", 1100).unwrap().is_none(), "expired");
        let tx = c.transaction().unwrap();
        assert_eq!(prune_expired(&tx, 1100).unwrap().len(), 2);
        tx.commit().unwrap();
        assert!(load_any(&c, "a").unwrap().is_none());
    }

    #[test]
    fn an_ended_task_never_changes_again() {
        let (_d, mut c) = db();
        let tx = c.transaction().unwrap();
        insert(&tx, &row("a", "p:1", 1000, 10_000)).unwrap();
        let cancelled = Ending {
            status: "cancelled".into(),
            message: None,
            result: None,
            error: None,
        };
        assert!(finish(&tx, "a", &cancelled, 1001).unwrap());
        let done = Ending {
            status: "completed".into(),
            result: Some("{}".into()),
            ..cancelled.clone()
        };
        assert!(!finish(&tx, "a", &done, 1002).unwrap());
        assert!(!set_running_status(&tx, "a", "working", None, None, 1003).unwrap());
        assert!(!claim(&tx, "a", "r1", "r2", "again", 1004).unwrap());
        assert_eq!(count_unfinished(&tx, "p:1", 1005).unwrap(), 0);
        tx.commit().unwrap();
        assert_eq!(load_any(&c, "a").unwrap().unwrap().status, "cancelled");
    }

    #[test]
    fn pages_cover_an_owners_tasks_once_in_order() {
        let (_d, mut c) = db();
        let tx = c.transaction().unwrap();
        for i in 0..7 {
            insert(&tx, &row(&format!("t{i}"), "p:1", 1000 + i / 2, 10_000)).unwrap();
        }
        insert(&tx, &row("other", "p:2", 1000, 10_000)).unwrap();
        tx.commit().unwrap();
        let mut seen = Vec::new();
        let mut after: Option<(i64, String)> = None;
        loop {
            let p = page(
                &c,
                "p:1",
                after.as_ref().map(|(a, i)| (*a, i.as_str())),
                3,
                1500,
            )
            .unwrap();
            if p.is_empty() {
                break;
            }
            let last = p.last().unwrap();
            after = Some((last.created_at_ms, last.id.clone()));
            seen.extend(p.into_iter().map(|t| t.id));
        }
        assert_eq!(seen, (0..7).map(|i| format!("t{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn unfinished_tasks_are_found_by_runner_and_claimed_once() {
        let (_d, mut c) = db();
        let tx = c.transaction().unwrap();
        insert(&tx, &row("a", "p:1", 1000, 10_000)).unwrap();
        tx.commit().unwrap();
        assert_eq!(runners_with_unfinished(&c).unwrap(), vec!["r1".to_owned()]);
        assert_eq!(unfinished_of(&c, "r1").unwrap().len(), 1);
        let tx = c.transaction().unwrap();
        assert!(claim(&tx, "a", "r1", "r2", "again", 1001).unwrap());
        assert!(!claim(&tx, "a", "r1", "r3", "again", 1001).unwrap());
        tx.commit().unwrap();
        let t = load_any(&c, "a").unwrap().unwrap();
        assert_eq!((t.runner.as_str(), t.attempts), ("r2", 2));
    }
}
