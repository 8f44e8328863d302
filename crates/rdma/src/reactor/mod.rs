//! The reactor: owns every listener, connection and device pool, and watches the CM event channel
//! and each pool's completion channel and device async event fd in one epoll set (`Poller`),
//! whose fd the caller's loop watches (Node's, through the binding). Commands run on the caller's
//! thread, and a send is posted before the call returns: no thread, no hand-off. Busy polling is
//! opt-in (`RdmaTuning::busy_poll_us`): the caller's loop then calls `busy_poll` between its other
//! work while completions keep coming, and the CQs are not armed (no wake-ups) meanwhile.

//!
//! Split by concern: this file holds the registry (listeners, connections, owners of CM ids,
//! device pools) and the turn (`poll`); `commands` the caller's calls and the send path,
//! `cm_events` connection setup and rdma-cm events, `completions` the pools' completion queues and
//! device async events, `endings` teardown, deadlines and shutdown.

mod cm_events;
mod commands;
mod completions;
mod endings;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdma_graceful_core::frame::{imm_of, validate_outgoing};
use rdma_graceful_core::poll::{Poller, READABLE};
use rdma_graceful_core::transport::SharedPayload;
use rdma_graceful_core::{ConnId, ErrorCode, Event, ListenOptions, ListenerId, TransportError};

use crate::cm::{CmEvent, CmId, EventChannel};
use crate::conn::{Conn, Outgoing, Payload, Phase, Role};
use crate::device::Device;
use crate::ffi::*;
use crate::handshake::Hello;
use crate::link::{self, Credits};
use crate::loader::Lib;
use crate::pool::Pool;
use crate::qp::Qp;
use crate::rndv;
use crate::verbs::{Link, Offered, Received, READ_TAG, SEND_TAG};
use crate::{CLOSE_SEND_TIMEOUT_MS, DRAIN_TIMEOUT_MS, SEND_QUEUE_LIMIT};

/// Bytes of frames one turn takes out of the completion queues, all connections together.
const POLL_BUDGET: usize = 1 << 20;

const TOKEN_CM: u64 = 1;
/// A pool's device async event fd; the low bits are the pool's number.
const TOKEN_DEVICE: u64 = 1 << 40;
/// A pool's completion channel.
const TOKEN_CQ: u64 = 2 << 40;
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

/// A device pool and the number its epoll tokens carry.
struct PoolEntry {
    pool: Pool,
    number: u64,
}

pub(crate) struct Reactor {
    lib: &'static Lib,
    poller: Poller,
    /// Events not yet handed out by `poll`.
    events: Vec<Event>,
    polling: bool,
    /// Connections with frames queued since the last `flush`.
    corked: Vec<ConnId>,
    /// Pools (context addresses) whose CQ still held completions when a turn's budget ran out.
    more_cq: Vec<usize>,
    /// Set while a pool's CQ is being taken (a teardown then need not take it again).
    in_cq: bool,
    /// Busy polling: the CQs are not re-armed after an event (`busy_poll` takes completions).
    busy: bool,
    /// The largest busy-poll window of the open connections.
    busy_window: Duration,
    /// Connections that stopped sending for want of a free send slot in their pool.
    slot_waiters: Vec<ConnId>,
    listeners: HashMap<ListenerId, Listener>,
    conns: HashMap<ConnId, Conn>,
    owners: HashMap<usize, Owner>,
    /// Which connection a completion is for: QP number to connection.
    by_qpn: HashMap<u32, ConnId>,
    /// One pool per device context (its address), while a connection or listener uses it.
    pools: HashMap<usize, PoolEntry>,
    next_pool_number: u64,
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
            in_cq: false,
            busy: false,
            busy_window: Duration::ZERO,
            slot_waiters: Vec::new(),
            listeners: HashMap::new(),
            conns: HashMap::new(),
            owners: HashMap::new(),
            by_qpn: HashMap::new(),
            pools: HashMap::new(),
            next_pool_number: 0,
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
    /// below), then device events and completions, then deadlines.
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
        for key in std::mem::take(&mut self.more_cq) {
            self.on_cq_ready(key, &mut budget);
        }
        for &(t, _) in ready.iter() {
            let Some(key) = self.pool_of_token(t & TOKEN_MASK) else { continue };
            match t & !TOKEN_MASK {
                TOKEN_DEVICE => self.on_device_ready(key),
                TOKEN_CQ => {
                    self.on_cq_ready(key, &mut budget);
                }
                _ => {}
            }
        }
        self.on_deadlines();
        self.polling = false;
        out.append(&mut self.events);
    }

    pub fn busy_window(&self) -> Duration {
        self.busy_window
    }

    /// Busy polling starts or ends. Ending re-arms every CQ, then takes what arrived before the
    /// arming (no event would come for it).
    pub fn set_busy(&mut self, on: bool, out: &mut Vec<Event>) {
        self.busy = on;
        if !on {
            self.polling = true;
            let keys: Vec<usize> = self.pools.keys().copied().collect();
            let mut budget = POLL_BUDGET;
            for key in keys {
                if let Some(entry) = self.pools.get(&key) {
                    if let Err(e) = entry.pool.core.cq.arm() {
                        crate::report(&format!("re-arming a completion queue: {e}"));
                    }
                }
                self.on_cq_ready(key, &mut budget);
            }
            self.polling = false;
            out.append(&mut self.events);
        }
    }

    /// One busy poll: sends gathered, every pool's CQ taken (budgeted as a turn), deadlines.
    /// True when a completion came. CM and device events still come through `poll`.
    pub fn busy_poll(&mut self, out: &mut Vec<Event>) -> bool {
        self.polling = true;
        self.flush();
        let mut budget = POLL_BUDGET;
        let mut found = false;
        let keys: Vec<usize> = self.pools.keys().copied().collect();
        for key in keys {
            found |= self.on_cq_ready(key, &mut budget) > 0;
        }
        self.on_deadlines();
        self.polling = false;
        out.append(&mut self.events);
        found
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }

    fn pool_of_token(&self, number: u64) -> Option<usize> {
        self.pools.iter().find(|(_, e)| e.number == number).map(|(k, _)| *k)
    }

    /// Buffers registered and set aside in every pool: (receive buffers posted, set aside for
    /// peers, pools).
    pub fn pool_usage(&self) -> (u32, u32, usize) {
        let (posted, committed) = self.pools.values().fold((0, 0), |(p, c), e| {
            let (ep, ec) = e.pool.usage();
            (p + ep, c + ec)
        });
        (posted, committed, self.pools.len())
    }
}

fn too_large_for_peer(len: usize, peer_max: u32) -> TransportError {
    TransportError::new(
        ErrorCode::FrameTooLarge,
        format!("frame payload of {len} bytes exceeds the peer's receive buffers of {peer_max} bytes"),
    )
}

fn not_found(id: ConnId) -> TransportError {
    TransportError::new(ErrorCode::NotFound, format!("no open rdma connection with id {id}"))
}
