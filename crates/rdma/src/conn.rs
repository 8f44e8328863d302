//! One connection's state as the reactor sees it: where it is in its life, its link (QP and
//! credits) and its software send queue. The transitions live in `reactor`.

use std::collections::VecDeque;
use std::time::Instant;

use rdma_graceful_core::event::QpInfo;
use rdma_graceful_core::frame::imm_of;
use rdma_graceful_core::transport::SharedPayload;
use rdma_graceful_core::{ConnId, ListenerId, TransportError};

use crate::cm::CmId;
use crate::verbs::Link;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Active,
    Passive { listener: ListenerId },
}

#[derive(Debug)]
pub enum Phase {
    /// Active: address and route resolution.
    Resolving,
    /// Active: connect request sent, waiting for ESTABLISHED.
    Connecting,
    /// Passive: accepted, waiting for ESTABLISHED (the peer's RTU).
    Accepting,
    Open,
    /// Local `close`: sending what is queued, then disconnecting.
    Closing,
    /// QP in ERR, waiting for the flush completions of its posted sends.
    Draining {
        error: Option<TransportError>,
        deliver: bool,
    },
}

/// A frame waiting in the software send queue.
pub struct Outgoing {
    pub kind: u8,
    pub credits: u16,
    pub payload: Payload,
}

pub enum Payload {
    /// Copied at `send`.
    Copied(Vec<u8>),
    /// Lent by `send_shared`: offered zero-copy, or (`zero_copy` false: its registration failed)
    /// copied into fragments; reported `Sent` either way.
    Lent { payload: SharedPayload, zero_copy: bool },
}

impl Outgoing {
    pub fn bytes(&self) -> &[u8] {
        match &self.payload {
            Payload::Copied(v) => v,
            Payload::Lent { payload, .. } => payload.as_ref().as_ref(),
        }
    }

    /// The frame header's word (kind and credits): the rdma immediate data.
    pub fn imm(&self) -> u32 {
        imm_of(self.kind, self.credits)
    }

    pub fn is_lent(&self) -> bool {
        matches!(self.payload, Payload::Lent { .. })
    }
}

pub struct Conn {
    pub id: ConnId,
    pub role: Role,
    pub phase: Phase,
    /// Dropped before `cm` (field order): the QP hangs off the CM id.
    pub link: Option<Link>,
    pub cm: CmId,
    /// The device pool (its context's address) the link uses; its window is set aside there.
    pub pool: Option<usize>,
    pub local_max: u32,
    /// The peer's receive-buffer size: the largest frame we may send.
    pub peer_max: u32,
    pub peer: String,
    pub remote_qpn: u32,
    pub sendq: VecDeque<Outgoing>,
    /// Frames of this many bytes and more go zero-copy when the peer offers rendezvous (0: never).
    pub zero_copy_threshold: u32,
    /// Fragments of the frame at the front of `sendq` already prepared.
    pub front_sent: usize,
    /// Listed in the reactor's `corked`: frames wait for its next `flush`.
    pub corked: bool,
    /// Frames (wire format) that arrived before ESTABLISHED was reported (the peer's QP reaches
    /// RTS first), and how many.
    pub early: Vec<u8>,
    pub early_count: u32,
    pub deadline: Option<Instant>,
    pub timeout_ms: u32,
    /// Transport retries asked for at connect (active side; the passive side takes the peer's).
    pub retry_count: u8,
    /// How long to busy-poll after a completion while this connection is open (`RdmaTuning`).
    pub busy_poll_us: u32,
}

impl Conn {
    /// A connection in setup (`phase`), whose setup must end by `timeout_ms` from now; what the
    /// setup learns (resources, the peer's limits, its QP number) is filled in by the caller.
    pub fn new(id: ConnId, role: Role, phase: Phase, cm: CmId, local_max: u32, peer: String, timeout_ms: u32) -> Conn {
        Conn {
            id,
            role,
            phase,
            link: None,
            cm,
            pool: None,
            local_max,
            peer_max: 0,
            peer,
            remote_qpn: 0,
            sendq: Default::default(),
            zero_copy_threshold: crate::ZERO_COPY_THRESHOLD,
            front_sent: 0,
            corked: false,
            early: Vec::new(),
            early_count: 0,
            deadline: Some(Instant::now() + std::time::Duration::from_millis(timeout_ms as u64)),
            timeout_ms,
            retry_count: crate::RETRY_COUNT,
            busy_poll_us: 0,
        }
    }

    pub fn is_setup(&self) -> bool {
        matches!(self.phase, Phase::Resolving | Phase::Connecting | Phase::Accepting)
    }

    pub fn qp_info(&self) -> Option<QpInfo> {
        self.link.as_ref().map(|l| QpInfo { local_qpn: l.qp.qpn(), remote_qpn: self.remote_qpn })
    }
}
