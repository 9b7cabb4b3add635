//! Server-sent event streams of legacy sessions, resumable with
//! `Last-Event-ID`.
//!
//! A *stream* is logical: it belongs to a session, numbers its events, keeps
//! recent ones in memory and writes every one to the event log in SQLite.
//! An HTTP *connection* may be attached to it (the POST that opened it, or a
//! GET that resumed it). When the connection drops, events keep being logged
//! and a later GET with `Last-Event-ID` replays them — also after a restart.
//!
//! Event ids are `{kind}{stream}_{seq}`: kind `r` for a request's stream,
//! `g` for the session's standalone (GET) stream.
//!
//! Writing every event to SQLite costs a row per message, so a request's
//! stream logs lazily: a request answered in one small piece (the common
//! case: priming event and response in one write) is delivered whole or
//! not at all, and a client without the priming event has nothing to
//! resume from; its events stay in memory only. Once a stream streams
//! (something went out before the answer), grows large, or loses its
//! connection, everything it holds is logged, and every later event too.
//! Standalone streams log from the start.

use bytes::{Bytes, BytesMut};
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::mcp::outbound::Sink;
use crate::store::{self, Store};

/// How many events a stream keeps in memory for fast replay; older ones
/// are read back from the database.
const RECENT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Request,
    Standalone,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::Request => 'r',
            Kind::Standalone => 'g',
        }
    }
}

/// One piece of an SSE body.
#[derive(Debug)]
pub enum Frame {
    Event {
        id: Option<String>,
        data: Bytes,
    },
    /// Tell the client when to reconnect, then end the connection.
    Close {
        retry_ms: u64,
    },
}

/// A parsed `Last-Event-ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventId {
    pub kind: Kind,
    pub stream: u64,
    pub seq: u64,
}

impl EventId {
    pub fn parse(s: &str) -> Option<EventId> {
        let kind = match s.as_bytes().first()? {
            b'r' => Kind::Request,
            b'g' => Kind::Standalone,
            _ => return None,
        };
        let (stream, seq) = s[1..].split_once('_')?;
        Some(EventId {
            kind,
            stream: stream.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub fn format(kind: Kind, stream: u64, seq: u64) -> String {
        format!("{}{stream}_{seq}", kind.letter())
    }
}

struct Inner {
    recent: VecDeque<(u64, Bytes)>,
    conn: Option<mpsc::UnboundedSender<Frame>>,
    /// The last event was handed to an attached connection.
    delivered_attached: bool,
    /// No more events will come (the request was answered), since when.
    done: bool,
    done_at: Option<std::time::Instant>,
    /// Events are written to the log (see the module docs).
    logging: bool,
    /// The highest seq written to the log.
    logged_upto: u64,
}

pub struct SseStream {
    pub session_id: Arc<str>,
    pub id: u64,
    pub kind: Kind,
    next_seq: AtomicU64,
    inner: Mutex<Inner>,
    store: Option<Store>,
}

impl SseStream {
    /// `first_seq` is the seq of the first event (1 for a new stream).
    pub fn new(
        session_id: Arc<str>,
        id: u64,
        kind: Kind,
        first_seq: u64,
        store: Option<Store>,
    ) -> Self {
        SseStream {
            session_id,
            id,
            kind,
            next_seq: AtomicU64::new(first_seq),
            inner: Mutex::new(Inner {
                recent: VecDeque::new(),
                conn: None,
                delivered_attached: false,
                done: false,
                done_at: None,
                logging: kind == Kind::Standalone,
                logged_upto: 0,
            }),
            store,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The priming event: an id and empty data, so a client can resume
    /// from the very start, and the reconnect delay, so a client whose
    /// stream drops (a restart) waits that long rather than its own default.
    pub fn priming(&self, retry_ms: u64) -> Bytes {
        let id = EventId::format(self.kind, self.id, 0);
        Bytes::from(format!("id: {id}\nretry: {retry_ms}\ndata: \n\n"))
    }

    /// Attaches a new connection; events after `after_seq` still in memory
    /// are queued to it first. Returns the receiver for the HTTP body and the
    /// first seq memory could replay (events between `after_seq` and it must
    /// come from the database). A finished stream only replays, then ends.
    pub fn attach(&self, after_seq: u64) -> (mpsc::UnboundedReceiver<Frame>, u64) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let from_memory = inner
            .recent
            .front()
            .map(|(s, _)| *s)
            .unwrap_or_else(|| self.next_seq.load(Ordering::Relaxed));
        for (seq, data) in inner.recent.iter().filter(|(s, _)| *s > after_seq) {
            let _ = tx.send(Frame::Event {
                id: Some(EventId::format(self.kind, self.id, *seq)),
                data: data.clone(),
            });
        }
        if !inner.done {
            inner.conn = Some(tx);
        }
        (rx, from_memory.max(after_seq + 1))
    }

    /// Attaches a connection that wants only events from now on.
    pub fn attach_fresh(&self) -> mpsc::UnboundedReceiver<Frame> {
        let last = self.next_seq.load(Ordering::Relaxed).saturating_sub(1);
        self.attach(last).0
    }

    /// True while an HTTP connection is attached.
    pub fn is_attached(&self) -> bool {
        self.lock().conn.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Detaches the connection (the body ends once its queue drains).
    /// Returns whether the last event went to an attached connection.
    pub fn finish(&self) -> bool {
        let mut inner = self.lock();
        inner.conn = None;
        inner.done = true;
        inner.done_at.get_or_insert_with(std::time::Instant::now);
        inner.delivered_attached
    }

    /// True once the stream finished more than `d` ago.
    pub fn finished_longer_than(&self, d: Duration) -> bool {
        self.lock().done_at.is_some_and(|t| t.elapsed() > d)
    }
}

impl SseStream {
    /// Logs everything held in memory not logged yet, and every event from
    /// now on.
    pub fn log_from_now(&self) {
        let mut inner = self.lock();
        inner.logging = true;
        self.log_pending(&mut inner);
    }

    fn log_pending(&self, inner: &mut Inner) {
        let Some(store) = &self.store else { return };
        let from = inner.logged_upto;
        for (seq, data) in inner.recent.iter().filter(|(s, _)| *s > from) {
            let (sid, stream, seq, text) = (self.session_id.clone(), self.id, *seq, data.clone());
            let at = crate::clock::now_secs();
            store.write_batched(move |tx| {
                // Our own serialized JSON: valid UTF-8.
                let text = std::str::from_utf8(&text).unwrap_or_default();
                store::events::append(tx, &sid, stream, seq, text, at)
            });
        }
        if let Some((last, _)) = inner.recent.back() {
            inner.logged_upto = inner.logged_upto.max(*last);
        }
    }
}

impl Sink for SseStream {
    fn send(&self, message: Vec<u8>) -> bool {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let data = Bytes::from(message);
        let mut inner = self.lock();
        if inner.recent.len() == RECENT && !inner.logging {
            // About to forget an event: from here on the log must hold them.
            inner.logging = true;
            self.log_pending(&mut inner);
        }
        inner.recent.push_back((seq, data.clone()));
        if inner.recent.len() > RECENT {
            inner.recent.pop_front();
        }
        let frame = Frame::Event {
            id: Some(EventId::format(self.kind, self.id, seq)),
            data,
        };
        let sent = inner.conn.as_ref().is_some_and(|c| c.send(frame).is_ok());
        if !sent {
            // No live connection: the client will need this from the log.
            inner.conn = None;
            inner.logging = true;
        }
        inner.delivered_attached = sent;
        if inner.logging {
            self.log_pending(&mut inner);
        }
        true
    }

    fn close_connection(&self, retry_ms: u64) {
        let mut inner = self.lock();
        inner.logging = true;
        self.log_pending(&mut inner);
        if let Some(conn) = inner.conn.take() {
            let _ = conn.send(Frame::Close { retry_ms });
        }
    }
}

/// A sink for modern (2026-07-28) SSE responses: no ids, no replay.
pub struct PlainSse(pub mpsc::UnboundedSender<Frame>);

impl Sink for PlainSse {
    fn send(&self, message: Vec<u8>) -> bool {
        self.0
            .send(Frame::Event {
                id: None,
                data: Bytes::from(message),
            })
            .is_ok()
    }
}

/// Writes one frame in SSE syntax.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Event { id, data } => {
            if let Some(id) = id {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(b"\n");
            }
            if !data.is_empty() {
                out.extend_from_slice(b"event: message\n");
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\n\n");
        }
        Frame::Close { retry_ms } => {
            out.extend_from_slice(format!("retry: {retry_ms}\n\n").as_bytes());
        }
    }
}

/// The body of an SSE response: queued frames as they come, keep-alive
/// comments while idle, and a `retry` hint when the server shuts down.
pub struct SseBody {
    prelude: Option<Bytes>,
    rx: mpsc::UnboundedReceiver<Frame>,
    keepalive: Option<tokio::time::Interval>,
    shutdown: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    retry_ms: u64,
    ended: bool,
    _on_drop: Option<DropGuard>,
}

impl SseBody {
    pub fn new(
        prelude: Bytes,
        rx: mpsc::UnboundedReceiver<Frame>,
        keepalive: Option<Duration>,
        shutdown: CancellationToken,
        retry_ms: u64,
        on_drop: Option<CancellationToken>,
    ) -> Self {
        SseBody {
            prelude: (!prelude.is_empty()).then_some(prelude),
            rx,
            keepalive: keepalive.map(|d| {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            }),
            shutdown: Box::pin(shutdown.cancelled_owned()),
            retry_ms,
            ended: false,
            _on_drop: on_drop.map(|t| t.drop_guard()),
        }
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(p) = self.prelude.take() {
            return Poll::Ready(Some(Ok(p)));
        }
        let mut out = BytesMut::new();
        // Everything queued goes out as one chunk.
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    let close = matches!(frame, Frame::Close { .. });
                    encode(&frame, &mut out);
                    if close {
                        self.ended = true;
                        break;
                    }
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(out.freeze())));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            self.ended = true;
            let retry = self.retry_ms;
            return Poll::Ready(Some(Ok(Bytes::from(format!("retry: {retry}\n\n")))));
        }
        if let Some(k) = self.keepalive.as_mut()
            && k.poll_tick(cx).is_ready()
        {
            return Poll::Ready(Some(Ok(Bytes::from_static(b": keepalive\n\n"))));
        }
        Poll::Pending
    }
}

use std::future::Future;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let s = EventId::format(Kind::Request, 42, 7);
        assert_eq!(s, "r42_7");
        assert_eq!(
            EventId::parse(&s),
            Some(EventId {
                kind: Kind::Request,
                stream: 42,
                seq: 7
            })
        );
        for bad in ["", "x1_2", "r1", "r_2", "g1_x"] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_detached_stream_keeps_events_for_replay() {
        let s = SseStream::new(Arc::from("s"), 1, Kind::Request, 1, None);
        let (mut rx, _) = s.attach(0);
        s.send(b"{\"a\":1}".to_vec());
        drop(rx);
        s.send(b"{\"a\":2}".to_vec());
        s.send(b"{\"a\":3}".to_vec());
        let (mut rx2, from_memory) = s.attach(1);
        assert_eq!(from_memory, 2);
        let mut ids = Vec::new();
        while let Ok(Frame::Event { id, .. }) = rx2.try_recv() {
            ids.push(id.unwrap());
        }
        assert_eq!(ids, ["r1_2", "r1_3"]);
        rx = rx2;
        s.send(b"{\"a\":4}".to_vec());
        assert!(matches!(rx.try_recv(), Ok(Frame::Event { .. })));
    }

    #[test]
    fn frames_encode_as_sse() {
        let mut out = BytesMut::new();
        encode(
            &Frame::Event {
                id: Some("r1_0".into()),
                data: Bytes::new(),
            },
            &mut out,
        );
        encode(
            &Frame::Event {
                id: None,
                data: Bytes::from_static(b"{}"),
            },
            &mut out,
        );
        encode(&Frame::Close { retry_ms: 500 }, &mut out);
        assert_eq!(
            &out[..],
            b"id: r1_0\ndata: \n\nevent: message\ndata: {}\n\nretry: 500\n\n"
        );
    }
}
