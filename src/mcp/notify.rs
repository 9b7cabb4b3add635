//! Change notifications: a toolset reports that a resource or a list
//! changed, and the hub tells every interested client — legacy sessions
//! (subscribed resources, list changes), stdio connections, and modern
//! `subscriptions/listen` streams. List changes are coalesced so a burst of
//! writes sends one notification.

use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    ResourceUpdated(String),
    ToolsListChanged,
    PromptsListChanged,
    ResourcesListChanged,
}

impl Change {
    pub fn method(&self) -> &'static str {
        match self {
            Change::ResourceUpdated(_) => "notifications/resources/updated",
            Change::ToolsListChanged => "notifications/tools/list_changed",
            Change::PromptsListChanged => "notifications/prompts/list_changed",
            Change::ResourcesListChanged => "notifications/resources/list_changed",
        }
    }
}

/// Something that wants to hear about changes.
pub trait Subscriber: Send + Sync {
    fn deliver(&self, change: &Change);
}

/// How long list changes are gathered before one notification goes out.
const COALESCE: Duration = Duration::from_millis(200);

#[derive(Default)]
pub struct Hub {
    subs: DashMap<u64, Arc<dyn Subscriber>>,
    next: AtomicU64,
    pending: [AtomicBool; 3],
    flush_scheduled: AtomicBool,
}

/// Removes its subscriber from the hub when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.subs.remove(&self.id);
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    pub fn register(self: &Arc<Self>, sub: Arc<dyn Subscriber>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.subs.insert(id, sub);
        Registration {
            hub: self.clone(),
            id,
        }
    }

    /// Reports a change. Resource updates go out at once; list changes are
    /// coalesced (needs a tokio runtime; without one they go out at once).
    pub fn publish(self: &Arc<Self>, change: Change) {
        let slot = match change {
            Change::ResourceUpdated(_) => return self.deliver(&change),
            Change::ToolsListChanged => 0,
            Change::PromptsListChanged => 1,
            Change::ResourcesListChanged => 2,
        };
        self.pending[slot].store(true, Ordering::Release);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return self.flush();
        };
        if !self.flush_scheduled.swap(true, Ordering::AcqRel) {
            let hub = self.clone();
            rt.spawn(async move {
                tokio::time::sleep(COALESCE).await;
                hub.flush_scheduled.store(false, Ordering::Release);
                hub.flush();
            });
        }
    }

    fn flush(&self) {
        let kinds = [
            Change::ToolsListChanged,
            Change::PromptsListChanged,
            Change::ResourcesListChanged,
        ];
        for (slot, change) in kinds.iter().enumerate() {
            if self.pending[slot].swap(false, Ordering::AcqRel) {
                self.deliver(change);
            }
        }
    }

    fn deliver(&self, change: &Change) {
        let subs: Vec<Arc<dyn Subscriber>> = self.subs.iter().map(|e| e.value().clone()).collect();
        for s in subs {
            s.deliver(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Rec(Mutex<Vec<Change>>);
    impl Subscriber for Rec {
        fn deliver(&self, change: &Change) {
            self.0.lock().unwrap().push(change.clone());
        }
    }

    #[tokio::test]
    async fn list_changes_are_coalesced_and_registration_ends_on_drop() {
        let hub = Hub::new();
        let rec = Arc::new(Rec(Mutex::new(Vec::new())));
        let reg = hub.register(rec.clone());
        for _ in 0..50 {
            hub.publish(Change::ResourcesListChanged);
        }
        hub.publish(Change::ResourceUpdated("x://1".into()));
        tokio::time::sleep(COALESCE * 3).await;
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                Change::ResourceUpdated("x://1".into()),
                Change::ResourcesListChanged
            ]
        );
        drop(reg);
        assert!(
            hub.subs.is_empty(),
            "dropping the registration unsubscribes"
        );
    }
}
