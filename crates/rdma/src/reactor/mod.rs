//! The reactor: owns every listener and connection, and watches the CM event channel, each
//! device's async event fd and each connection's completion channel in one epoll set (`Poller`),
//! whose fd the caller's loop watches (Node's, through the binding). Commands run on the caller's
//! thread, and a send is posted before the call returns: no thread, no hand-off, no busy polling.

//!
//! Split by concern: this file holds the registry (listeners, connections, owners of CM ids,
//! devices) and the turn (`poll`); `commands` the caller's calls, `cm_events` connection setup and
//! rdma-cm events, `completions` completion queues and device async events, `endings` teardown,
//! deadlines and shutdown.

mod cm_events;
mod commands;
mod completions;
mod endings;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rdma_graceful_core::frame::{imm_of, validate_outgoing};
use rdma_graceful_core::poll::{Poller, READABLE, WAKE};
use rdma_graceful_core::{ConnId, ErrorCode, Event, Frame, ListenOptions, ListenerId, TransportError};

use crate::cm::{CmEvent, CmId, EventChannel};
use crate::conn::{Conn, Phase, Role};
use crate::device::Device;
use crate::ffi::*;
use crate::handshake::Hello;
use crate::loader::Lib;
use crate::verbs::{Completed, Resources};
use crate::{CLOSE_SEND_TIMEOUT_MS, DRAIN_TIMEOUT_MS, RECV_DEPTH, SEND_QUEUE_LIMIT};

/// Bytes of frames one turn takes out of the completion queues, all connections together.
const POLL_BUDGET: usize = 1 << 20;

const TOKEN_CM: u64 = 1;
const TOKEN_DEVICE: u64 = 1 << 40;
const TOKEN_CONN: u64 = 2 << 40;
const TOKEN_MASK: u64 = (1 << 40) - 1;

/// IB CM reject reason "invalid service ID": nothing listens on that port.
const REJ_INVALID_SERVICE_ID: i32 = 8;
/// IB CM reject reason "consumer defined": the peer application refused.
const REJ_CONSUMER_DEFINED: i32 = 28;

enum Owner {
    Listener(ListenerId),
    Conn(ConnId),
}

struct Listener {
    cm: CmId,
    opts: ListenOptions,
}

pub(crate) struct Reactor {
    lib: &'static Lib,
    poller: Poller,
    /// Events not yet handed out by `poll`.
    events: Vec<Event>,
    polling: bool,
    /// Connections with frames queued since the last `flush`.
    corked: Vec<ConnId>,
    /// Connections whose CQ still held completions when a turn's budget ran out.
    more_cq: Vec<ConnId>,
    listeners: HashMap<ListenerId, Listener>,
    conns: HashMap<ConnId, Conn>,
    owners: HashMap<usize, Owner>,
    devices: HashMap<usize, (u64, Rc<Device>)>,
    next_device_token: u64,
    // Declared last: dropped after every CM id above (rdma_destroy_event_channel needs that).
    channel: EventChannel,
}

impl Reactor {
    pub fn new(lib: &'static Lib) -> Result<Reactor, TransportError> {
        let poller = Poller::new().map_err(|e| TransportError::from_io("creating the rdma poller", &e))?;
        let channel = EventChannel::new(lib)?;
        poller.add(channel.fd(), TOKEN_CM, READABLE).map_err(|e| TransportError::from_io("epoll_ctl", &e))?;
        Ok(Reactor {
            lib,
            poller,
            events: Vec::new(),
            polling: false,
            corked: Vec::new(),
            more_cq: Vec::new(),
            listeners: HashMap::new(),
            conns: HashMap::new(),
            owners: HashMap::new(),
            devices: HashMap::new(),
            next_device_token: 0,
            channel,
        })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        self.poller.fd()
    }

    /// Queues an event; outside a poll (a command produced it), wakes the poller so that the
    /// next turn hands it out.
    pub(super) fn emit(&mut self, e: Event) {
        if self.events.is_empty() && !self.polling {
            self.poller.wake();
        }
        self.events.push(e);
    }

    /// One turn: CM events first (a DISCONNECTED read here explains flush completions seen
    /// below), then device events and completions, then deadlines. Each completion queue is
    /// polled until empty, which its depth bounds.
    pub fn poll(&mut self, out: &mut Vec<Event>) {
        self.polling = true;
        self.flush();
        let mut ready = Vec::with_capacity(64);
        self.poller.ready(0, &mut ready);
        if ready.iter().any(|&(t, _)| t == TOKEN_CM) {
            self.on_cm_ready();
        }
        // Frames are taken up to a budget per turn (the rest on the next turn, after the caller's
        // timers ran): a flooding connection cannot hold the loop.
        let mut budget = POLL_BUDGET;
        for id in std::mem::take(&mut self.more_cq) {
            self.on_cq_ready(id, &mut budget);
        }
        for &(t, _) in ready.iter() {
            match t {
                WAKE | TOKEN_CM => {}
                t if t & !TOKEN_MASK == TOKEN_DEVICE => self.on_device_ready(t),
                t if t & !TOKEN_MASK == TOKEN_CONN => self.on_cq_ready((t & TOKEN_MASK) as ConnId, &mut budget),
                _ => {}
            }
        }
        self.on_deadlines();
        self.polling = false;
        out.append(&mut self.events);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }
}

fn too_large_for_peer(frame: &Frame, peer_max: u32) -> TransportError {
    TransportError::new(
        ErrorCode::FrameTooLarge,
        format!(
            "frame payload of {} bytes exceeds the peer's receive buffers of {peer_max} bytes",
            frame.payload.len()
        ),
    )
}

fn not_found(id: ConnId) -> TransportError {
    TransportError::new(ErrorCode::NotFound, format!("no open rdma connection with id {id}"))
}
