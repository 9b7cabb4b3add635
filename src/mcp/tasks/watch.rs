//! 2026-07-28 task status notifications: a `subscriptions/listen` stream
//! that asked for `taskIds` (and was agreed them) gets a
//! `notifications/tasks` carrying the whole `DetailedTask` each time one of
//! them changes, as `tasks/get` would show it then.

use dashmap::DashMap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wire;
use crate::mcp::jsonrpc;
use crate::mcp::meta::SUBSCRIPTION_ID;
use crate::mcp::outbound::SharedSink;
use crate::store::tasks::TaskRow;

struct Watcher {
    subscription_id: Value,
    sink: SharedSink,
}

/// Who watches which task.
#[derive(Default)]
pub struct Watchers {
    by_task: DashMap<String, DashMap<u64, Arc<Watcher>>>,
    next: AtomicU64,
}

/// A subscription's watch on its tasks; ends when dropped.
pub struct Watching {
    watchers: Arc<Watchers>,
    key: u64,
    ids: Vec<String>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        for id in &self.ids {
            if let Some(w) = self.watchers.by_task.get(id) {
                w.remove(&self.key);
            }
            self.watchers.by_task.remove_if(id, |_, w| w.is_empty());
        }
    }
}

impl Watchers {
    /// Starts telling `sink` about the tasks `ids`.
    pub fn watch(
        self: &Arc<Self>,
        ids: Vec<String>,
        subscription_id: Value,
        sink: SharedSink,
    ) -> Watching {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let watcher = Arc::new(Watcher {
            subscription_id,
            sink,
        });
        for id in &ids {
            self.by_task
                .entry(id.clone())
                .or_default()
                .insert(key, watcher.clone());
        }
        Watching {
            watchers: self.clone(),
            key,
            ids,
        }
    }

    /// Tells every watcher of `row`'s task its state now.
    pub fn tell(&self, row: &TaskRow) {
        let Some(watchers) = self.by_task.get(&row.id) else {
            return;
        };
        let watchers: Vec<Arc<Watcher>> = watchers.iter().map(|e| e.value().clone()).collect();
        let task = wire::modern_detailed(row);
        for w in watchers {
            let mut params = task.clone();
            params["_meta"] = json!({ SUBSCRIPTION_ID: w.subscription_id });
            w.sink
                .send(jsonrpc::notification("notifications/tasks", &params));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::outbound::Sink;
    use std::sync::Mutex;

    struct Rec(Mutex<Vec<Value>>);
    impl Sink for Rec {
        fn send(&self, m: Vec<u8>) -> bool {
            self.0
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&m).unwrap());
            true
        }
    }

    #[test]
    fn watchers_hear_their_tasks_until_they_stop_watching() {
        let w = Arc::new(Watchers::default());
        let rec = Arc::new(Rec(Mutex::new(Vec::new())));
        let watching = w.watch(vec!["a".into()], json!(7), rec.clone());
        let row = |id: &str| TaskRow {
            id: id.into(),
            status: "working".into(),
            ..Default::default()
        };
        w.tell(&row("a"));
        w.tell(&row("b"));
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["method"], "notifications/tasks");
        assert_eq!(got[0]["params"]["taskId"], "a");
        assert_eq!(got[0]["params"]["_meta"][SUBSCRIPTION_ID], 7);
        drop(watching);
        w.tell(&row("a"));
        assert_eq!(rec.0.lock().unwrap().len(), 1);
        assert!(w.by_task.is_empty());
    }
}
