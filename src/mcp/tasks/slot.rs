//! How a call running on a request becomes a task. On a 2026-07-28 request
//! the server decides: a tool that may run as a task starts on the request
//! as a *candidate*; if it is still running after `tasks.promote_after_ms`,
//! or asks for it itself ([`crate::mcp::context::RequestContext::promote`]:
//! before a long step, before waiting on the user), the dispatcher records
//! a task and answers the request with its handle while the handler goes
//! on. A 2025-11-25 call is a task from the start or never.

use std::sync::Arc;
use tokio::sync::watch;

use super::live::LiveTask;

#[derive(Clone)]
enum State {
    /// Running on its request; may still become a task.
    Candidate,
    /// The handler asked to become a task; the dispatcher is on it.
    Requested,
    /// It is a task now.
    Task(Arc<LiveTask>),
    /// It will finish on its request (tasks are off, or at their limit).
    Refused,
}

pub struct Slot {
    state: watch::Sender<State>,
}

impl Slot {
    pub fn candidate() -> Arc<Slot> {
        Arc::new(Slot {
            state: watch::channel(State::Candidate).0,
        })
    }

    pub fn task(live: Arc<LiveTask>) -> Arc<Slot> {
        Arc::new(Slot {
            state: watch::channel(State::Task(live)).0,
        })
    }

    /// The task, once the call is one.
    pub fn live(&self) -> Option<Arc<LiveTask>> {
        match &*self.state.borrow() {
            State::Task(live) => Some(live.clone()),
            _ => None,
        }
    }

    /// The handler's side: become a task now if possible; true once it is.
    pub async fn promote(&self) -> bool {
        self.state.send_if_modified(|s| {
            let ask = matches!(s, State::Candidate);
            if ask {
                *s = State::Requested;
            }
            ask
        });
        let mut rx = self.state.subscribe();
        let settled = rx
            .wait_for(|s| matches!(s, State::Task(_) | State::Refused))
            .await;
        matches!(settled.as_deref(), Ok(State::Task(_)))
    }

    /// The dispatcher's side: resolves when the handler asks to be promoted.
    pub async fn requested(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|s| matches!(s, State::Requested)).await;
    }

    /// The dispatcher's decision: the task it became, or `None` (refused).
    pub fn settle(&self, live: Option<Arc<LiveTask>>) {
        self.state.send_replace(match live {
            Some(l) => State::Task(l),
            None => State::Refused,
        });
    }
}
