//! The reactor: owns every listener and connection, and watches the CM event channel, each
//! device's async event fd and each connection's completion channel in one epoll set (`Poller`),
//! whose fd the caller's loop watches (Node's, through the binding). Commands run on the caller's
//! thread, and a send is posted before the call returns: no thread, no hand-off, no busy polling.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rdma_graceful_core::frame::{encode_header, validate_outgoing};
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
    fn emit(&mut self, e: Event) {
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
        let mut ready = Vec::with_capacity(64);
        self.poller.ready(0, &mut ready);
        if ready.iter().any(|&(t, _)| t == TOKEN_CM) {
            self.on_cm_ready();
        }
        for &(t, _) in ready.iter() {
            match t {
                WAKE | TOKEN_CM => {}
                t if t & !TOKEN_MASK == TOKEN_DEVICE => self.on_device_ready(t),
                t if t & !TOKEN_MASK == TOKEN_CONN => self.on_cq_ready((t & TOKEN_MASK) as ConnId),
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

    // ---- commands -------------------------------------------------------------------------

    /// Queues one frame behind the connection's earlier ones and posts what the send slots take.
    pub fn send(&mut self, id: ConnId, kind: u8, credits: u16, payload: &[u8]) -> Result<(), TransportError> {
        let c = self.conns.get_mut(&id).ok_or_else(|| not_found(id))?;
        match c.phase {
            Phase::Open => {}
            Phase::Closing | Phase::Draining { .. } => {
                return Err(TransportError::new(ErrorCode::NotFound, format!("rdma connection {id} is closing")))
            }
            _ => return Err(TransportError::new(ErrorCode::NotFound, format!("rdma connection {id} is not established yet"))),
        }
        validate_outgoing(kind, payload.len(), c.local_max.min(c.peer_max))?;
        if c.sendq.len() >= SEND_QUEUE_LIMIT {
            return Err(TransportError::new(
                ErrorCode::Io,
                format!("rdma connection {id} has {SEND_QUEUE_LIMIT} frames queued: send queue full"),
            ));
        }
        c.sendq.push_back(Frame::new(kind, credits, payload.to_vec()));
        self.pump(id);
        Ok(())
    }

    pub fn close(&mut self, id: ConnId) -> Result<(), TransportError> {
        let c = self.conns.get_mut(&id).ok_or_else(|| not_found(id))?;
        match c.phase {
            Phase::Open => {
                c.phase = Phase::Closing;
                c.deadline = Some(Instant::now() + Duration::from_millis(CLOSE_SEND_TIMEOUT_MS));
                self.pump(id);
            }
            Phase::Resolving | Phase::Connecting | Phase::Accepting => self.fail_setup(
                id,
                TransportError::new(ErrorCode::ConnectionReset, "connection closed locally before it was established"),
            ),
            _ => {}
        }
        Ok(())
    }

    pub fn abort(&mut self, id: ConnId) -> Result<(), TransportError> {
        let c = self.conns.get(&id).ok_or_else(|| not_found(id))?;
        if c.is_setup() {
            self.fail_setup(
                id,
                TransportError::new(ErrorCode::ConnectionReset, "connection aborted locally before it was established"),
            );
        } else {
            self.teardown(id, None, false);
        }
        Ok(())
    }

    pub fn listen(&mut self, opts: ListenOptions, addr: std::net::SocketAddr) -> Result<(ListenerId, u16), TransportError> {
        let cm = CmId::new(self.lib, &self.channel)?;
        cm.bind(addr)?;
        cm.listen(opts.backlog)?;
        let port = cm.local_port();
        let id = rdma_graceful_core::ids::next_id();
        self.owners.insert(cm.as_ptr() as usize, Owner::Listener(id));
        self.listeners.insert(id, Listener { cm, opts });
        Ok((id, port))
    }

    pub fn close_listener(&mut self, id: ListenerId) -> Result<(), TransportError> {
        let Some(l) = self.listeners.remove(&id) else {
            return Err(TransportError::new(ErrorCode::NotFound, format!("no rdma listener with id {id}")));
        };
        self.owners.remove(&(l.cm.as_ptr() as usize));
        // Handshakes still in progress on this listener have not become connections: end them.
        let pending: Vec<ConnId> = self
            .conns
            .values()
            .filter(|c| c.role == Role::Passive { listener: id } && c.is_setup())
            .map(|c| c.id)
            .collect();
        for c in pending {
            self.fail_setup(c, TransportError::new(ErrorCode::ConnectionReset, "listener closed during the handshake"));
        }
        drop(l);
        self.emit(Event::ListenerClosed { listener: id, error: None });
        Ok(())
    }

    pub fn connect(&mut self, id: ConnId, opts: rdma_graceful_core::ConnectOptions, addr: std::net::SocketAddr) {
        let started = (|| {
            let cm = CmId::new(self.lib, &self.channel)?;
            cm.set_ack_timeout(crate::ACK_TIMEOUT_EXP);
            cm.resolve_addr(addr, opts.timeout_ms)?;
            Ok::<_, TransportError>((cm, addr))
        })();
        let (cm, addr) = match started {
            Ok(v) => v,
            Err(e) => {
                self.emit(Event::ConnectFailed { conn: id, error: e });
                return;
            }
        };
        self.owners.insert(cm.as_ptr() as usize, Owner::Conn(id));
        self.conns.insert(
            id,
            Conn {
                id,
                role: Role::Active,
                phase: Phase::Resolving,
                res: None,
                cm,
                local_max: opts.max_payload,
                peer_max: 0,
                peer: addr.to_string(),
                remote_qpn: 0,
                sendq: Default::default(),
                early: Vec::new(),
                deadline: Some(Instant::now() + Duration::from_millis(opts.timeout_ms as u64)),
                timeout_ms: opts.timeout_ms,
            },
        );
    }

    // ---- rdma-cm events -------------------------------------------------------------------

    fn on_cm_ready(&mut self) {
        while let Some(ev) = self.channel.next() {
            if ev.kind == RDMA_CM_EVENT_CONNECT_REQUEST {
                match self.owners.get(&(ev.listen_id as usize)) {
                    Some(Owner::Listener(l)) => {
                        let l = *l;
                        self.on_connect_request(l, ev);
                    }
                    // The listener is gone: refuse and free the new id.
                    _ => {
                        // SAFETY: a connect request's id is new and owned by nobody else.
                        let cm = unsafe { CmId::adopt(self.lib, ev.id) };
                        cm.reject(&[]);
                    }
                }
                continue;
            }
            match self.owners.get(&(ev.id as usize)) {
                Some(Owner::Conn(c)) => {
                    let c = *c;
                    self.on_conn_event(c, ev);
                }
                Some(Owner::Listener(_)) | None => {}
            }
        }
    }

    fn on_connect_request(&mut self, listener: ListenerId, ev: CmEvent) {
        // SAFETY: a connect request's id is new and owned by nobody else.
        let cm = unsafe { CmId::adopt(self.lib, ev.id) };
        let peer = cm.peer_addr();
        let Some(l) = self.listeners.get(&listener) else { return };
        let local_max = l.opts.max_payload;
        let handshake_ms = l.opts.handshake_timeout_ms;
        let hello = match Hello::decode(&ev.private_data) {
            Ok(h) => h,
            Err(e) => {
                cm.reject(b"RDGR: not an rdma-graceful peer");
                drop(cm);
                self.emit(Event::AcceptFailed { listener, peer, error: e });
                return;
            }
        };
        let id = rdma_graceful_core::ids::next_id();
        cm.set_ack_timeout(crate::ACK_TIMEOUT_EXP);
        let built = self.build_resources(id, &cm, local_max).and_then(|res| {
            cm.accept(&Hello { max_payload: local_max, recv_depth: RECV_DEPTH }.encode())?;
            Ok(res)
        });
        let res = match built {
            Ok(r) => r,
            Err(e) => {
                cm.reject(b"RDGR: accept failed");
                drop(cm);
                self.release_devices();
                self.emit(Event::AcceptFailed { listener, peer, error: e });
                return;
            }
        };
        self.owners.insert(cm.as_ptr() as usize, Owner::Conn(id));
        self.conns.insert(
            id,
            Conn {
                id,
                role: Role::Passive { listener },
                phase: Phase::Accepting,
                res: Some(res),
                cm,
                local_max,
                peer_max: hello.max_payload,
                peer,
                remote_qpn: ev.remote_qpn,
                sendq: Default::default(),
                early: Vec::new(),
                deadline: Some(Instant::now() + Duration::from_millis(handshake_ms as u64)),
                timeout_ms: handshake_ms,
            },
        );
    }

    /// Creates a connection's verbs resources on the id's device and watches its completions.
    fn build_resources(&mut self, id: ConnId, cm: &CmId, max_payload: u32) -> Result<Resources, TransportError> {
        let ctx = cm.verbs();
        if ctx.is_null() {
            return Err(TransportError::new(ErrorCode::Io, "rdma-cm bound the id to no device"));
        }
        let device = self.device_for(ctx)?;
        let res = Resources::new(self.lib, cm, device, max_payload)?;
        self.poller
            .add(res.channel.fd(), TOKEN_CONN | id as u64, READABLE)
            .map_err(|e| TransportError::from_io("epoll_ctl(completion channel)", &e))?;
        Ok(res)
    }

    fn device_for(&mut self, ctx: *mut ibv_context) -> Result<Rc<Device>, TransportError> {
        if let Some((_, d)) = self.devices.get(&(ctx as usize)) {
            return Ok(d.clone());
        }
        let d = Rc::new(Device::new(self.lib, ctx));
        let token = TOKEN_DEVICE | self.next_device_token;
        self.next_device_token += 1;
        self.poller.add(d.async_fd(), token, READABLE).map_err(|e| TransportError::from_io("epoll_ctl(async fd)", &e))?;
        self.devices.insert(ctx as usize, (token, d.clone()));
        Ok(d)
    }

    /// Drops our handle on every device no connection uses any more.
    fn release_devices(&mut self) {
        let unused: Vec<usize> = self.devices.iter().filter(|(_, (_, d))| Rc::strong_count(d) == 1).map(|(k, _)| *k).collect();
        for k in unused {
            if let Some((_, d)) = self.devices.remove(&k) {
                self.poller.remove(d.async_fd());
            }
        }
    }

    fn on_conn_event(&mut self, id: ConnId, ev: CmEvent) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let what = format!("{} (status {})", ev.name, ev.status);
        match ev.kind {
            RDMA_CM_EVENT_ADDR_RESOLVED if matches!(c.phase, Phase::Resolving) => {
                if let Err(e) = c.cm.resolve_route(c.timeout_ms) {
                    self.fail_setup(id, e);
                }
            }
            RDMA_CM_EVENT_ROUTE_RESOLVED if matches!(c.phase, Phase::Resolving) => {
                let local_max = c.local_max;
                // Build with the CM id borrowed out of the map entry (resources need &mut self).
                let Some(mut conn) = self.conns.remove(&id) else { return };
                let result = self.build_resources(id, &conn.cm, local_max).and_then(|res| {
                    conn.res = Some(res);
                    conn.cm.connect(&Hello { max_payload: local_max, recv_depth: RECV_DEPTH }.encode())
                });
                conn.phase = Phase::Connecting;
                self.conns.insert(id, conn);
                if let Err(e) = result {
                    self.fail_setup(id, e);
                }
            }
            RDMA_CM_EVENT_ADDR_ERROR | RDMA_CM_EVENT_ROUTE_ERROR | RDMA_CM_EVENT_UNREACHABLE if c.is_setup() => {
                let code = if ev.status == -libc::ETIMEDOUT { ErrorCode::Timeout } else { ErrorCode::AddressUnreachable };
                let msg = format!("cannot reach {}: {what}", c.peer);
                self.fail_setup(id, TransportError::new(code, msg));
            }
            RDMA_CM_EVENT_REJECTED if c.is_setup() => {
                let why = match ev.status {
                    REJ_INVALID_SERVICE_ID => "nothing listens there".to_string(),
                    REJ_CONSUMER_DEFINED => {
                        let text = String::from_utf8_lossy(&ev.private_data);
                        format!("refused by the peer: {}", text.trim_end_matches('\0'))
                    }
                    s => format!("rejected (IB CM reason {s})"),
                };
                let msg = format!("rdma connect to {} refused: {why}", c.peer);
                self.fail_setup(id, TransportError::new(ErrorCode::ConnectionRefused, msg));
            }
            RDMA_CM_EVENT_CONNECT_ERROR if c.is_setup() => {
                let msg = format!("rdma connect to {} failed: {what}", c.peer);
                self.fail_setup(id, TransportError::new(ErrorCode::ConnectionReset, msg));
            }
            RDMA_CM_EVENT_ESTABLISHED if matches!(c.phase, Phase::Connecting) => match Hello::decode(&ev.private_data) {
                Ok(h) => {
                    c.peer_max = h.max_payload;
                    c.remote_qpn = ev.remote_qpn;
                    self.established(id);
                }
                Err(e) => self.fail_setup(id, e),
            },
            RDMA_CM_EVENT_ESTABLISHED if matches!(c.phase, Phase::Accepting) => self.established(id),
            RDMA_CM_EVENT_DISCONNECTED | RDMA_CM_EVENT_DEVICE_REMOVAL | RDMA_CM_EVENT_ADDR_CHANGE
            | RDMA_CM_EVENT_REJECTED | RDMA_CM_EVENT_CONNECT_ERROR | RDMA_CM_EVENT_UNREACHABLE => {
                let removal = ev.kind != RDMA_CM_EVENT_DISCONNECTED;
                match &c.phase {
                    Phase::Draining { .. } => {}
                    p if c.is_setup() => {
                        let _ = p;
                        let msg = format!("connection to {} ended during setup: {what}", c.peer);
                        self.fail_setup(id, TransportError::new(ErrorCode::ConnectionReset, msg));
                    }
                    Phase::Closing if !removal && c.sendq.is_empty() && c.res.as_ref().is_some_and(|r| r.sends_in_flight == 0) => {
                        // We asked to close and everything was delivered: the peer just got there first.
                        self.teardown(id, None, true);
                    }
                    _ => {
                        let (code, msg) = if removal {
                            (ErrorCode::ConnectionReset, format!("rdma connection to {} failed: {what}", c.peer))
                        } else {
                            (ErrorCode::PeerClosed, format!("peer {} disconnected (rdma-cm DISCONNECTED)", c.peer))
                        };
                        self.teardown(id, Some(TransportError::new(code, msg)), true);
                    }
                }
            }
            // TIMEWAIT_EXIT: the id may be destroyed at any time anyway (rdma_destroy_id handles an
            // id in time-wait), so it carries nothing we wait for.
            RDMA_CM_EVENT_TIMEWAIT_EXIT => {}
            _ => {}
        }
    }

    fn established(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.phase = Phase::Open;
        c.deadline = None;
        let event = match c.role {
            Role::Active => Event::Connected { conn: id, peer: c.peer.clone(), qp: c.qp_info() },
            Role::Passive { listener } => Event::Accepted { listener, conn: id, peer: c.peer.clone(), qp: c.qp_info() },
        };
        let early = std::mem::take(&mut c.early);
        self.emit(event);
        if !early.is_empty() {
            let mut data = Vec::new();
            for f in &early {
                append_frame(&mut data, f);
            }
            self.emit(Event::Frames { conn: id, data, count: early.len() as u32 });
        }
        // Completions may have arrived before ESTABLISHED; and queued sends may now go.
        self.on_cq_ready(id);
    }

    // ---- async events ---------------------------------------------------------------------

    fn on_device_ready(&mut self, token: u64) {
        let Some((_, dev)) = self.devices.values().find(|(t, _)| *t == token).cloned() else { return };
        for ev in dev.read_async_events() {
            let name = dev.event_name(ev.kind);
            let victims: Vec<ConnId> = match ev.kind {
                IBV_EVENT_QP_FATAL | IBV_EVENT_QP_REQ_ERR | IBV_EVENT_QP_ACCESS_ERR => self
                    .conns
                    .values()
                    .filter(|c| c.res.as_ref().is_some_and(|r| r.qp.as_ptr() as usize == ev.element))
                    .map(|c| c.id)
                    .collect(),
                IBV_EVENT_CQ_ERR => self
                    .conns
                    .values()
                    .filter(|c| c.res.as_ref().is_some_and(|r| r.cq.as_ptr() as usize == ev.element))
                    .map(|c| c.id)
                    .collect(),
                IBV_EVENT_DEVICE_FATAL => self
                    .conns
                    .values()
                    .filter(|c| c.res.as_ref().is_some_and(|r| Rc::ptr_eq(&r.device, &dev)))
                    .map(|c| c.id)
                    .collect(),
                _ => Vec::new(),
            };
            for id in victims {
                let Some(c) = self.conns.get(&id) else { continue };
                let err = TransportError::new(ErrorCode::ConnectionReset, format!("rdma async event on the connection to {}: {name}", c.peer));
                if c.is_setup() {
                    self.fail_setup(id, err);
                } else if !matches!(c.phase, Phase::Draining { .. }) {
                    self.teardown(id, Some(err), false);
                }
            }
        }
    }

    // ---- completions ----------------------------------------------------------------------

    fn on_cq_ready(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let Some(res) = c.res.as_mut() else { return };
        let draining = matches!(c.phase, Phase::Draining { .. });
        let mut out = Vec::new();
        let polled = res.poll(!draining, &mut out);
        let mut failure: Option<TransportError> = polled.err();
        let (mut data, mut count) = (Vec::new(), 0u32);
        for comp in out {
            match comp {
                Completed::Received(Ok(frame)) => match &c.phase {
                    Phase::Open | Phase::Closing | Phase::Draining { deliver: true, .. } if failure.is_none() => {
                        append_frame(&mut data, &frame);
                        count += 1;
                    }
                    Phase::Accepting | Phase::Connecting if failure.is_none() => c.early.push(frame),
                    _ => {}
                },
                Completed::Received(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Completed::Sent => {}
                // The first failure is the cause; flushes that follow it are its consequence.
                Completed::Failed { error } => {
                    if !draining {
                        failure.get_or_insert(error);
                    }
                }
            }
        }
        let setup = c.is_setup();
        if count > 0 {
            self.emit(Event::Frames { conn: id, data, count });
        }
        if let Some(e) = failure {
            if draining {
                return self.maybe_finish(id);
            }
            if setup {
                return self.fail_setup(id, e);
            }
            return self.teardown(id, Some(e), false);
        }
        if draining {
            return self.maybe_finish(id);
        }
        self.pump(id);
    }

    /// Posts queued frames while send slots are free; finishes a local close once all is sent.
    fn pump(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if !matches!(c.phase, Phase::Open | Phase::Closing) {
            return;
        }
        let Some(res) = c.res.as_mut() else { return };
        let mut failure = None;
        while res.can_send() {
            let Some(frame) = c.sendq.pop_front() else { break };
            if frame.payload.len() as u64 > c.peer_max as u64 {
                failure = Some(too_large_for_peer(&frame, c.peer_max));
                break;
            }
            if let Err(e) = res.send(frame.imm(), &frame.payload) {
                failure = Some(e);
                break;
            }
        }
        let done_closing = matches!(c.phase, Phase::Closing) && c.sendq.is_empty() && res.sends_in_flight == 0;
        if let Some(e) = failure {
            return self.teardown(id, Some(e), false);
        }
        if done_closing {
            self.teardown(id, None, true);
        }
    }

    // ---- endings --------------------------------------------------------------------------

    /// Ends a connection that never became one: frees everything, then ConnectFailed or
    /// AcceptFailed (never Closed: it was not Accepted/Connected).
    fn fail_setup(&mut self, id: ConnId, error: TransportError) {
        let Some(c) = self.remove(id) else { return };
        let role = c.role;
        let peer = c.peer.clone();
        drop(c);
        self.release_devices();
        match role {
            Role::Active => self.emit(Event::ConnectFailed { conn: id, error }),
            Role::Passive { listener } => self.emit(Event::AcceptFailed { listener, peer, error }),
        }
    }

    /// Starts the end of an established connection: disconnect (DREQ; rdma-cm moves the QP to
    /// ERR), then wait for the flush completions of every posted work request, bounded.
    fn teardown(&mut self, id: ConnId, error: Option<TransportError>, deliver: bool) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if matches!(c.phase, Phase::Draining { .. }) {
            return;
        }
        c.sendq.clear();
        c.cm.disconnect();
        if let Some(res) = &c.res {
            if let Err(e) = res.qp.to_error() {
                crate::report(&format!("connection {id}: {e}"));
            }
        }
        c.phase = Phase::Draining { error, deliver };
        c.deadline = Some(Instant::now() + Duration::from_millis(DRAIN_TIMEOUT_MS));
        // Flushes may already be waiting in the CQ without a new channel event.
        self.on_cq_ready(id);
    }

    fn maybe_finish(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else { return };
        let drained = c.res.as_ref().is_none_or(|r| r.recvs_posted == 0 && r.sends_in_flight == 0);
        if drained {
            self.finish(id);
        }
    }

    /// Frees everything the connection holds (QP, CQ, channel, MRs, PD, then the CM id), then
    /// reports Closed: counters are already down when the event is seen.
    fn finish(&mut self, id: ConnId) {
        let Some(c) = self.remove(id) else { return };
        let error = match &c.phase {
            Phase::Draining { error, .. } => error.clone(),
            _ => None,
        };
        drop(c);
        self.release_devices();
        self.emit(Event::Closed { conn: id, error });
    }

    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let mut c = self.conns.remove(&id)?;
        self.owners.remove(&(c.cm.as_ptr() as usize));
        if let Some(res) = c.res.take() {
            self.poller.remove(res.channel.fd());
            drop(res);
        }
        Some(c)
    }

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        let due: Vec<ConnId> = self.conns.values().filter(|c| c.deadline.is_some_and(|d| d <= now)).map(|c| c.id).collect();
        for id in due {
            let Some(c) = self.conns.get(&id) else { continue };
            match &c.phase {
                Phase::Resolving | Phase::Connecting => {
                    let msg = format!("rdma connect to {} did not complete within {} ms", c.peer, c.timeout_ms);
                    self.fail_setup(id, TransportError::new(ErrorCode::Timeout, msg));
                }
                Phase::Accepting => {
                    let msg = format!("peer {} did not complete the rdma handshake within {} ms", c.peer, c.timeout_ms);
                    self.fail_setup(id, TransportError::new(ErrorCode::Timeout, msg));
                }
                Phase::Closing => {
                    let msg = format!("close could not deliver the queued frames within {CLOSE_SEND_TIMEOUT_MS} ms");
                    self.teardown(id, Some(TransportError::new(ErrorCode::Timeout, msg)), false);
                }
                Phase::Draining { .. } => {
                    let pending = c.res.as_ref().map(|r| (r.recvs_posted, r.sends_in_flight)).unwrap_or_default();
                    crate::report(&format!(
                        "connection {id}: {} receives and {} sends not flushed within {DRAIN_TIMEOUT_MS} ms; destroying the QP anyway",
                        pending.0, pending.1
                    ));
                    self.finish(id);
                }
                Phase::Open => {}
            }
        }
    }

    /// The transport is being dropped: abort everything, bounded, reporting each ending.
    pub fn shutdown(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else { continue };
            if c.is_setup() {
                self.fail_setup(id, TransportError::new(ErrorCode::ConnectionReset, "rdma transport shut down"));
            } else {
                self.teardown(id, None, false);
            }
        }
        let deadline = Instant::now() + Duration::from_millis(DRAIN_TIMEOUT_MS);
        while !self.conns.is_empty() && Instant::now() < deadline {
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                self.on_cq_ready(id);
            }
            if !self.conns.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.finish(id);
        }
        let lids: Vec<ListenerId> = self.listeners.keys().copied().collect();
        for l in lids {
            let _ = self.close_listener(l);
        }
    }
}

fn too_large_for_peer(frame: &Frame, peer_max: u32) -> TransportError {
    TransportError::new(
        ErrorCode::FrameTooLarge,
        format!("frame payload of {} bytes exceeds the peer's receive buffers of {peer_max} bytes", frame.payload.len()),
    )
}

fn not_found(id: ConnId) -> TransportError {
    TransportError::new(ErrorCode::NotFound, format!("no open rdma connection with id {id}"))
}

/// Appends a frame in wire format (header, payload), as `Event::Frames` carries them.
fn append_frame(data: &mut Vec<u8>, f: &Frame) {
    data.extend_from_slice(&encode_header(f.kind, f.credits, f.payload.len() as u32));
    data.extend_from_slice(&f.payload);
}
