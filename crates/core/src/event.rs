//! What transports report. Events are pushed from transport threads into an `EventSink`; the
//! `BatchQueue` sink gathers them and wakes the consumer once per batch (the napi layer turns one
//! wake into one crossing into JS that takes every event queued by then).

use std::sync::Mutex;

use crate::error::TransportError;
use crate::frame::Frame;
use crate::transport::{ConnId, ListenerId};

/// Queue-pair numbers of an rdma connection, for the protocol's READY check. None on tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpInfo {
    pub local_qpn: u32,
    pub remote_qpn: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A listener accepted a connection and the peer proved it speaks this protocol; frames may flow.
    Accepted { listener: ListenerId, conn: ConnId, peer: String, qp: Option<QpInfo> },
    /// An incoming connection was refused before it became a connection (bad preamble, no preamble
    /// by the deadline, rdma accept failed). The listener keeps serving.
    AcceptFailed { listener: ListenerId, peer: String, error: TransportError },
    /// The listener stopped and freed its resources (after `close_listener`, or on a fatal error).
    ListenerClosed { listener: ListenerId, error: Option<TransportError> },
    /// An outgoing connection is established; frames may flow.
    Connected { conn: ConnId, peer: String, qp: Option<QpInfo> },
    /// An outgoing connection could not be established. Its id is dead; nothing to free.
    ConnectFailed { conn: ConnId, error: TransportError },
    /// A frame arrived, in order.
    Message { conn: ConnId, frame: Frame },
    /// The connection is gone and every resource it held is freed (counters already decremented).
    /// Exactly once per connection that was Accepted or Connected. `error` is None when the local
    /// side asked for it (`close` or `abort`); otherwise it says why (peer closed, reset, bad frame).
    Closed { conn: ConnId, error: Option<TransportError> },
}

pub trait EventSink: Send + Sync + 'static {
    fn push(&self, event: Event);
}

/// Collects events; calls `wake` when the queue goes from empty to non-empty, so a consumer that
/// drains on wake sees each event exactly once and is woken once per batch, not per event.
pub struct BatchQueue {
    events: Mutex<Vec<Event>>,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl BatchQueue {
    pub fn new(wake: impl Fn() + Send + Sync + 'static) -> BatchQueue {
        BatchQueue { events: Mutex::new(Vec::new()), wake: Box::new(wake) }
    }

    pub fn drain(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl EventSink for BatchQueue {
    fn push(&self, event: Event) {
        let was_empty = {
            let mut q = self.events.lock().unwrap_or_else(|p| p.into_inner());
            q.push(event);
            q.len() == 1
        };
        if was_empty {
            (self.wake)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn wakes_once_per_batch() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        let q = BatchQueue::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        for conn in 0..5 {
            q.push(Event::Closed { conn, error: None });
        }
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
        assert_eq!(q.drain().len(), 5);
        q.push(Event::Closed { conn: 9, error: None });
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
        assert_eq!(q.drain(), vec![Event::Closed { conn: 9, error: None }]);
    }
}
