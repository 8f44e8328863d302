//! What transports report. A transport appends events to the vector its `poll` is given; the Node
//! binding hands each poll's events to JS in one call.

use crate::error::TransportError;
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
    /// `count` whole frames arrived, in order, in wire format (8-byte header, payload) one after
    /// the other; every header is already checked (`frame::split` takes them apart).
    Frames { conn: ConnId, data: Vec<u8>, count: u32 },
    /// The peer has `count` more of the payloads lent by `send_shared` (in order), and the
    /// transport let them go. (`Closed` lets go of the rest.)
    Sent { conn: ConnId, count: u32 },
    /// A connection watched by `liveness::Liveness` received nothing for its silence timeout
    /// (less the time this process's loop stood still). The transport keeps it open: the
    /// protocol decides (it goes DOWN, reason heartbeat-timeout, and aborts it).
    Silent { conn: ConnId },
    /// The connection is gone and every resource it held is freed (counters already decremented).
    /// Exactly once per connection that was Accepted or Connected. `error` is None when the local
    /// side asked for it (`close` or `abort`); otherwise it says why (peer closed, reset, bad frame).
    Closed { conn: ConnId, error: Option<TransportError> },
}
