//! Tasks: a tool call answered at once with a handle and finished in the
//! background, its state and outcome in SQLite. Against the real binary
//! (`--fixture conformance`, whose task tools are `slow_compute`, safe to
//! run again, and `slow_once`, not), real sockets and real database files:
//! the 2025-11-25 flow (task-augmented tools/call, tasks/get, tasks/result
//! blocking, tasks/list, tasks/cancel), the 2026-07-28 extension, scoping,
//! kill -9 and restarts, expiry, limits.

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const FIXTURE: &[&str] = &["--fixture", "conformance"];

fn legacy(server: &Server) -> Session {
    Session::open(&server.url(), "2025-11-25").0
}

/// Starts `tool` as a 2025-11-25 task; its id.
fn start(s: &mut Session, tool: &str, args: Value, task: Value) -> String {
    let r = s.request(
        "tools/call",
        json!({ "name": tool, "arguments": args, "task": task }),
    );
    r.result()["task"]["taskId"]
        .as_str()
        .unwrap_or_else(|| panic!("no task created: {}", r.body))
        .to_owned()
}

fn get(s: &mut Session, id: &str) -> Reply {
    s.request("tasks/get", json!({ "taskId": id }))
}

/// Polls until `done` holds for the task, within a generous deadline (no
/// speed is asserted; the deadline only stops a hung test).
fn wait_for(s: &mut Session, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(s, id);
        let v = r.response().clone();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "task {id} never got there: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(v: &Value) -> &str {
    v["result"]["status"].as_str().unwrap_or("")
}

fn db(server: &Server) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        server.data.join("erlmcp.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// Polls the database until `query` (one row, one text column) answers.
fn wait_db(server: &Server, query: &str, id: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Option<String> = db(server).query_row(query, [id], |r| r.get(0)).ok();
        if got.is_some() || Instant::now() >= deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_task_is_created_polled_and_its_result_fetched_once_it_ends() {
    let server = Server::start(FIXTURE);
    let (mut s, init) = Session::open(&server.url(), "2025-11-25");
    let caps = &init.result()["capabilities"]["tasks"];
    assert!(caps["requests"]["tools"]["call"].is_object(), "{caps}");
    assert!(caps["list"].is_object() && caps["cancel"].is_object());

    let r = s.request(
        "tools/call",
        json!({ "name": "slow_compute", "arguments": { "seconds": 1, "label": "one" },
                "task": { "ttl": 60000 } }),
    );
    let task = &r.result()["task"];
    assert_eq!(task["ttl"], 60000);
    assert!(task["pollInterval"].as_i64().unwrap() > 0);
    let id = task["taskId"].as_str().unwrap().to_owned();
    // Durable before its id was handed out: found at once.
    assert!(get(&mut s, &id).result()["status"].is_string());

    // tasks/result blocks until the task ends, then answers what the call
    // would have, tied to its task.
    let payload = s.request("tasks/result", json!({ "taskId": id }));
    let result = payload.result();
    assert_eq!(result["content"][0]["text"], "Computed one in 1 seconds");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        json!(id)
    );
    assert_eq!(get(&mut s, &id).result()["status"], "completed");

    let other = start(&mut s, "slow_compute", json!({ "seconds": 0 }), json!({}));
    let listed = s.request("tasks/list", json!({}));
    let ids: Vec<&str> = listed.result()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["taskId"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str(), other.as_str()], "oldest first");
}

#[test]
fn cancelling_a_running_task_stops_its_handler() {
    let server = Server::start(FIXTURE);
    let mut s = legacy(&server);
    let id = start(&mut s, "slow_compute", json!({ "seconds": 600 }), json!({}));
    assert_eq!(get(&mut s, &id).result()["status"], "working");

    let r = s.request("tasks/cancel", json!({ "taskId": id }));
    assert_eq!(r.result()["status"], "cancelled", "{}", r.body);
    assert_eq!(get(&mut s, &id).result()["status"], "cancelled");
    assert_eq!(
        s.request("tasks/result", json!({ "taskId": id }))
            .error_code(),
        -32800
    );
    let again = s.request("tasks/cancel", json!({ "taskId": id }));
    assert_eq!(again.error_code(), -32602);
    assert!(
        again.body.contains("terminal status 'cancelled'"),
        "{}",
        again.body
    );

    // The handler saw its cancellation token fire and returned (the audit
    // log records its outcome); it would otherwise still be sleeping.
    let outcome = wait_db(
        &server,
        "SELECT outcome FROM audit_log WHERE subject = ?1 ORDER BY id DESC LIMIT 1",
        "slow_compute",
    );
    assert_eq!(outcome.as_deref(), Some("cancelled"));
}

#[test]
fn a_task_is_visible_only_to_the_session_or_principal_that_made_it() {
    let server = Server::start(FIXTURE);
    let mut alice = legacy(&server);
    let mut mallory = legacy(&server);
    let id = start(
        &mut alice,
        "slow_compute",
        json!({ "seconds": 600 }),
        json!({}),
    );

    // Mallory gets exactly the answer for a task that does not exist.
    let nonexistent = "00000000-0000-0000-0000-000000000000";
    for method in ["tasks/get", "tasks/result", "tasks/cancel"] {
        let theirs = mallory.request(method, json!({ "taskId": id }));
        let none = mallory.request(method, json!({ "taskId": nonexistent }));
        assert_eq!(theirs.error_code(), -32602, "{method}: {}", theirs.body);
        assert_eq!(
            theirs.response()["error"]["message"]
                .as_str()
                .unwrap()
                .replace(&id, nonexistent),
            none.response()["error"]["message"].as_str().unwrap(),
            "{method}"
        );
    }
    let listed = mallory.request("tasks/list", json!({}));
    assert_eq!(listed.result()["tasks"], json!([]));
    assert_eq!(get(&mut alice, &id).result()["status"], "working");

    // Modern requests: the principal is the credential a proxy checked.
    let url = server.url();
    let call = json!({ "name": "slow_compute", "arguments": { "seconds": 600 } });
    let bearer = |who: &'static str| [("Authorization", who)];
    let r = modern_with(
        &url,
        1,
        "tools/call",
        call,
        tasks_caps(),
        &bearer("Bearer alice"),
    );
    let mid = r.result()["taskId"].as_str().unwrap().to_owned();
    let ask = |id: u64, h: &[(&str, &str)]| {
        modern_with(
            &url,
            id,
            "tasks/get",
            json!({ "taskId": mid }),
            tasks_caps(),
            h,
        )
    };
    assert_eq!(
        ask(2, &bearer("Bearer alice")).result()["status"],
        "working"
    );
    assert_eq!(ask(3, &bearer("Bearer mallory")).error_code(), -32602);
    assert_eq!(
        ask(4, &[]).error_code(),
        -32602,
        "anonymous is someone else"
    );
    let cancel = json!({ "taskId": mid });
    modern_with(
        &url,
        5,
        "tasks/cancel",
        cancel,
        tasks_caps(),
        &bearer("Bearer alice"),
    );
    alice.request("tasks/cancel", json!({ "taskId": id }));
}

#[test]
fn a_finished_task_is_served_after_kill_9() {
    let mut server = Server::start(FIXTURE);
    let mut s = legacy(&server);
    let id = start(
        &mut s,
        "slow_compute",
        json!({ "seconds": 0, "label": "kept" }),
        json!({}),
    );
    let before = s.request("tasks/result", json!({ "taskId": id }));
    let url = server.url();
    let modern_call =
        json!({ "name": "slow_compute", "arguments": { "seconds": 1, "label": "m" } });
    let created = modern_with(&url, 1, "tools/call", modern_call, tasks_caps(), &[]);
    let mid = created.result()["taskId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while modern_with(
        &url,
        2,
        "tasks/get",
        json!({ "taskId": mid }),
        tasks_caps(),
        &[],
    )
    .result()["status"]
        != "completed"
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }

    server.crash_and_restart();

    assert_eq!(get(&mut s, &id).result()["status"], "completed");
    let after = s.request("tasks/result", json!({ "taskId": id }));
    assert_eq!(after.result(), before.result());
    let got = modern_with(
        &url,
        3,
        "tasks/get",
        json!({ "taskId": mid }),
        tasks_caps(),
        &[],
    );
    assert_eq!(got.result()["status"], "completed");
    assert_eq!(
        got.result()["result"]["content"][0]["text"],
        "Computed m in 1 seconds"
    );
}

#[test]
fn a_running_task_fails_with_the_reason_after_kill_9() {
    let mut server = Server::start(FIXTURE);
    let mut s = legacy(&server);
    let id = start(&mut s, "slow_once", json!({ "seconds": 600 }), json!({}));
    assert_eq!(get(&mut s, &id).result()["status"], "working");

    server.crash_and_restart();

    let task = get(&mut s, &id);
    let task = task.result();
    assert_eq!(task["status"], "failed");
    let why = task["statusMessage"].as_str().unwrap();
    assert!(
        why.contains("ended") && why.contains("not marked safe to run again"),
        "{why}"
    );
    let r = s.request("tasks/result", json!({ "taskId": id }));
    assert_eq!(r.error_code(), -32603);
    assert!(
        r.body.contains("not marked safe to run again"),
        "{}",
        r.body
    );
}

#[test]
fn a_task_safe_to_rerun_runs_once_more_after_kill_9_but_not_twice() {
    let mut server = Server::start(FIXTURE);
    let mut s = legacy(&server);
    let short = start(
        &mut s,
        "slow_compute",
        json!({ "seconds": 5, "label": "again" }),
        json!({}),
    );
    let long = start(&mut s, "slow_compute", json!({ "seconds": 600 }), json!({}));

    server.crash_and_restart();

    // Run again from the start, and finished this time.
    let r = s.request("tasks/result", json!({ "taskId": short }));
    assert_eq!(
        r.result()["content"][0]["text"],
        "Computed again in 5 seconds"
    );
    let attempts: i64 = db(&server)
        .query_row("SELECT attempts FROM tasks WHERE id = ?1", [&short], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(attempts, 2);
    let task = get(&mut s, &long);
    assert_eq!(task.result()["status"], "working");
    let msg = task.result()["statusMessage"].as_str().unwrap();
    assert!(msg.contains("running it again (attempt 2)"), "{msg}");

    server.crash_and_restart();

    let task = get(&mut s, &long);
    assert_eq!(task.result()["status"], "failed");
    let why = task.result()["statusMessage"].as_str().unwrap();
    assert!(why.contains("already been run again once"), "{why}");
}

#[test]
fn tasks_expire_after_their_ttl_and_maintenance_deletes_them() {
    let mut server = Server::start(FIXTURE);
    let mut s = legacy(&server);
    let id = start(
        &mut s,
        "slow_compute",
        json!({ "seconds": 0 }),
        json!({ "ttl": 1000 }),
    );
    let created = get(&mut s, &id);
    assert_eq!(created.result()["ttl"], 1000);
    let gone = wait_for(&mut s, &id, |v| v.get("error").is_some());
    assert_eq!(gone["error"]["code"], -32602);
    assert!(s.request("tasks/list", json!({})).result()["tasks"] == json!([]));
    let row = |server: &Server| -> i64 {
        db(server)
            .query_row("SELECT count(*) FROM tasks WHERE id = ?1", [&id], |r| {
                r.get(0)
            })
            .unwrap()
    };

    // Housekeeping runs at start (and every 30 s): the row is deleted.
    server.crash_and_restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while row(&server) > 0 {
        assert!(
            Instant::now() < deadline,
            "the expired task was never pruned"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn live_tasks_and_result_sizes_are_capped() {
    let server = Server::start_env(
        FIXTURE,
        &[
            ("ERLMCP_TASKS__MAX_LIVE_PER_OWNER", "1"),
            ("ERLMCP_TASKS__MAX_RESULT_BYTES", "1024"),
        ],
    );
    let mut a = legacy(&server);
    let mut b = legacy(&server);
    let first = start(&mut a, "slow_compute", json!({ "seconds": 600 }), json!({}));
    let refused = a.request(
        "tools/call",
        json!({ "name": "slow_compute", "arguments": { "seconds": 600 }, "task": {} }),
    );
    assert_eq!(refused.error_code(), -32000);
    assert!(
        refused.body.contains("tasks.max_live_per_owner"),
        "{}",
        refused.body
    );
    // The cap is per owner: another session still gets one.
    let theirs = start(&mut b, "slow_compute", json!({ "seconds": 600 }), json!({}));
    a.request("tasks/cancel", json!({ "taskId": first }));
    b.request("tasks/cancel", json!({ "taskId": theirs }));

    let big = "x".repeat(2000);
    let entities =
        json!({ "entities": [{ "name": "Big", "entityType": "t", "observations": [big] }] });
    let id = start(&mut a, "create_entities", entities, json!({}));
    let failed = wait_for(&mut a, &id, |v| status(v) == "failed");
    let why = failed["result"]["statusMessage"].as_str().unwrap();
    assert!(why.contains("tasks.max_result_bytes"), "{why}");
    let r = a.request("tasks/result", json!({ "taskId": id }));
    assert_eq!(r.error_code(), -32603);
}

#[test]
fn tasks_result_carries_the_tasks_questions_and_then_its_answer() {
    let server = Server::start(FIXTURE);
    let mut s = legacy(&server);
    let id = start(
        &mut s,
        "confirm_delete",
        json!({ "filename": "a.txt" }),
        json!({}),
    );
    wait_for(&mut s, &id, |v| status(v) == "input_required");

    let seen = s.request_answering(
        91,
        "tasks/result",
        json!({ "taskId": id }),
        |method, params| {
            assert_eq!(method, "elicitation/create");
            assert_eq!(
                params["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
                json!(id)
            );
            json!({ "action": "accept", "content": { "confirm": true } })
        },
    );
    let asked = seen
        .iter()
        .filter(|m| m["method"] == "elicitation/create")
        .count();
    assert_eq!(asked, 1, "{seen:?}");
    let answer = seen.last().unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"], "Deleted a.txt",
        "{answer}"
    );
    assert_eq!(get(&mut s, &id).result()["status"], "completed");
}

#[test]
fn modern_calls_become_tasks_only_when_they_run_long_and_the_client_takes_them() {
    let server = Server::start(FIXTURE);
    let url = server.url();
    let call = |id: u64, seconds: u64, caps: Value| {
        let args = json!({ "name": "slow_compute", "arguments": { "seconds": seconds } });
        modern_with(&url, id, "tools/call", args, caps, &[])
    };
    let quick = call(1, 0, tasks_caps());
    assert_eq!(quick.result()["resultType"], "complete");
    assert!(quick.result()["content"].is_array());

    let long = call(2, 2, tasks_caps());
    let created = long.result();
    assert_eq!(created["resultType"], "task");
    assert!(created["ttlMs"].as_i64().unwrap() > 0);
    assert!(created.get("ttl").is_none() && created.get("task").is_none());
    let id = created["taskId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let got = modern_with(
            &url,
            3,
            "tasks/get",
            json!({ "taskId": id }),
            tasks_caps(),
            &[],
        );
        if got.result()["status"] == "completed" {
            break got;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        done.result()["result"]["content"][0]["text"],
        "Computed job in 2 seconds"
    );

    // A client without the extension waits for its result, and is refused
    // what can only be a task, and the task methods.
    let plain = json!({ "elicitation": {} });
    assert_eq!(call(4, 1, plain.clone()).result()["resultType"], "complete");
    let required = modern_with(
        &url,
        5,
        "tools/call",
        json!({ "name": "failing_job" }),
        plain.clone(),
        &[],
    );
    assert_eq!(required.error_code(), -32021);
    let data = &required.response()["error"]["data"];
    assert!(
        data["requiredCapabilities"]["extensions"]["io.modelcontextprotocol/tasks"].is_object()
    );
    let get = modern_with(&url, 6, "tasks/get", json!({ "taskId": id }), plain, &[]);
    assert_eq!(get.error_code(), -32021);
}

#[test]
fn tasks_list_pages_through_a_sessions_tasks_once_each() {
    let server = Server::start_env(FIXTURE, &[("ERLMCP_MCP__PAGE_SIZE", "2")]);
    let mut s = legacy(&server);
    let made: Vec<String> = (0..5)
        .map(|_| start(&mut s, "slow_compute", json!({ "seconds": 0 }), json!({})))
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let page = s.request("tasks/list", params);
        let page = page.result();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 2);
        seen.extend(
            tasks
                .iter()
                .map(|t| t["taskId"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, made);
    let bad = s.request("tasks/list", json!({ "cursor": "not-a-cursor" }));
    assert_eq!(bad.error_code(), -32602);
}

/// Opens a modern `subscriptions/listen` stream asking about `task_ids`.
fn listen(url: &str, task_ids: &[&str], caps: Value) -> std::sync::mpsc::Receiver<Value> {
    let body = json!({ "jsonrpc": "2.0", "id": "listen", "method": "subscriptions/listen",
        "params": { "notifications": { "taskIds": task_ids }, "_meta": modern_meta(caps) } });
    let headers = [
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "subscriptions/listen"),
    ];
    stream_messages(url, &headers, &body)
}

fn next(rx: &std::sync::mpsc::Receiver<Value>) -> Value {
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a message on the stream")
}

#[test]
fn a_subscription_hears_how_its_tasks_change() {
    let server = Server::start(FIXTURE);
    let url = server.url();
    let asked = json!({ "name": "confirm_delete", "arguments": { "filename": "b.txt" } });
    let created = modern_with(&url, 1, "tools/call", asked, tasks_caps(), &[]);
    let id = created.result()["taskId"].as_str().unwrap().to_owned();

    let rx = listen(&url, &[&id, "not-mine"], tasks_caps());
    let ack = next(&rx);
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["notifications"]["taskIds"],
        json!([id]),
        "only its own task"
    );

    // The task waits for input; answering it moves it on, then it ends.
    let waiting = loop {
        let got = modern_with(
            &url,
            2,
            "tasks/get",
            json!({ "taskId": id }),
            tasks_caps(),
            &[],
        );
        if got.result()["status"] == "input_required" {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let key = waiting.result()["inputRequests"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let answer = json!({ "taskId": id, "inputResponses": { key: { "action": "accept", "content": { "confirm": true } } } });
    modern_with(&url, 3, "tasks/update", answer, tasks_caps(), &[]);
    let done = loop {
        let n = next(&rx);
        assert_eq!(n["method"], "notifications/tasks", "{n}");
        assert_eq!(n["params"]["taskId"], json!(id));
        assert_eq!(
            n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
            "listen"
        );
        if n["params"]["status"] == "completed" {
            break n;
        }
    };
    assert_eq!(
        done["params"]["result"]["content"][0]["text"],
        "Deleted b.txt"
    );

    // Asking about tasks without the extension is refused.
    let refused = listen(&url, &[&id], json!({}));
    assert_eq!(next(&refused)["error"]["code"], -32021);
}

#[test]
fn tasks_are_served_and_taken_over_by_the_new_primary_after_a_failover() {
    use common::pair::*;
    let tmp = TestDir::new();
    let fixture = "[toolsets.conformance]\nenabled = true";
    let (mut a, mut b) = pair(tmp.path(), fixture);
    a.start();
    b.start();
    wait_in_sync(&a, &b, Duration::from_secs(20));
    let mut s = Session::open(&a.url(), "2025-11-25").0;
    let done = start(
        &mut s,
        "slow_compute",
        json!({ "seconds": 0, "label": "d" }),
        json!({}),
    );
    let before = s.request("tasks/result", json!({ "taskId": done }));
    let once = start(&mut s, "slow_once", json!({ "seconds": 600 }), json!({}));
    let again = start(&mut s, "slow_compute", json!({ "seconds": 600 }), json!({}));
    wait_in_sync(&a, &b, Duration::from_secs(20));

    a.kill9();
    wait_for("b to be promoted", Duration::from_secs(10), || {
        b.role("primary", false).0 == 0
    });

    // Same session, same tasks, on the new primary (once it serves).
    s.url = b.url();
    wait_for("b to serve", Duration::from_secs(20), || {
        get(&mut s, &done).response().get("result").is_some()
    });
    let after = s.request("tasks/result", json!({ "taskId": done }));
    assert_eq!(after.result(), before.result());
    let failed = get(&mut s, &once);
    assert_eq!(failed.result()["status"], "failed", "{}", failed.body);
    let rerun = get(&mut s, &again);
    assert_eq!(rerun.result()["status"], "working");
    let msg = rerun.result()["statusMessage"].as_str().unwrap();
    assert!(msg.contains("running it again"), "{msg}");
    s.request("tasks/cancel", json!({ "taskId": again }));
}
