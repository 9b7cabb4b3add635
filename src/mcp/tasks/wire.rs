//! A stored task as each flavour writes it. 2025-11-25: `ttl` and
//! `pollInterval`; a tool result with `isError` makes the task `failed`;
//! the result itself comes from `tasks/result`. 2026-07-28 (the extension):
//! `ttlMs` and `pollIntervalMs`; a tool result with `isError` is
//! `completed`; `tasks/get` inlines `inputRequests`, `result` or `error`.

use serde_json::{Map, Value, json};

use crate::store::tasks::TaskRow;

fn parse(text: Option<&str>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

fn is_tool_error(row: &TaskRow) -> bool {
    row.status == "completed"
        && parse(row.result.as_deref())
            .is_some_and(|r| r.get("isError") == Some(&Value::Bool(true)))
}

/// The fields both flavours share, named the 2025-11-25 way or not.
fn common(row: &TaskRow, status: &str, legacy: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("taskId".into(), json!(row.id));
    m.insert("status".into(), json!(status));
    if let Some(msg) = &row.status_message {
        m.insert("statusMessage".into(), json!(msg));
    }
    m.insert(
        "createdAt".into(),
        json!(crate::clock::rfc3339_millis(row.created_at_ms)),
    );
    m.insert(
        "lastUpdatedAt".into(),
        json!(crate::clock::rfc3339_millis(row.updated_at_ms)),
    );
    let (ttl, poll) = if legacy {
        ("ttl", "pollInterval")
    } else {
        ("ttlMs", "pollIntervalMs")
    };
    m.insert(ttl.into(), json!(row.ttl_ms));
    m.insert(poll.into(), json!(row.poll_interval_ms));
    m
}

/// The 2025-11-25 status: a tool error is a failed task there.
pub fn legacy_status(row: &TaskRow) -> &str {
    if is_tool_error(row) {
        "failed"
    } else {
        &row.status
    }
}

/// A 2025-11-25 `Task`.
pub fn legacy_task(row: &TaskRow) -> Value {
    let mut m = common(row, legacy_status(row), true);
    if is_tool_error(row) && row.status_message.is_none() {
        m.insert("statusMessage".into(), json!("The tool reported an error"));
    }
    if row.status == "failed"
        && row.status_message.is_none()
        && let Some(msg) = parse(row.error.as_deref())
            .and_then(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
    {
        m.insert("statusMessage".into(), json!(msg));
    }
    Value::Object(m)
}

/// A 2026-07-28 `Task` (the fields of `CreateTaskResult`).
pub fn modern_task(row: &TaskRow) -> Value {
    Value::Object(common(row, &row.status, false))
}

/// A 2026-07-28 `DetailedTask`: the task with what its status carries.
pub fn modern_detailed(row: &TaskRow) -> Value {
    let mut m = common(row, &row.status, false);
    let extra = match row.status.as_str() {
        "input_required" => Some((
            "inputRequests",
            parse(row.input_requests.as_deref()).unwrap_or_else(|| json!({})),
        )),
        "completed" => parse(row.result.as_deref()).map(|r| ("result", r)),
        "failed" => parse(row.error.as_deref()).map(|e| ("error", e)),
        _ => None,
    };
    if let Some((k, v)) = extra {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str) -> TaskRow {
        TaskRow {
            id: "t".into(),
            status: status.into(),
            created_at_ms: 0,
            updated_at_ms: 1500,
            ttl_ms: 60_000,
            poll_interval_ms: 500,
            ..Default::default()
        }
    }

    #[test]
    fn each_flavour_names_its_fields() {
        let legacy = legacy_task(&row("working"));
        assert_eq!(legacy["ttl"], 60_000);
        assert_eq!(legacy["pollInterval"], 500);
        assert_eq!(legacy["createdAt"], "1970-01-01T00:00:00.000Z");
        let modern = modern_task(&row("working"));
        assert_eq!(modern["ttlMs"], 60_000);
        assert!(modern.get("ttl").is_none());
    }

    #[test]
    fn a_tool_error_is_failed_in_2025_and_completed_in_2026() {
        let mut r = row("completed");
        r.result = Some(r#"{"content":[],"isError":true}"#.into());
        assert_eq!(legacy_task(&r)["status"], "failed");
        let d = modern_detailed(&r);
        assert_eq!(d["status"], "completed");
        assert_eq!(d["result"]["isError"], true);
    }
}
