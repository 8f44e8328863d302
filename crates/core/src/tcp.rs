//! The tcp transport: the same frame semantics as rdma, over TCP, for machines without RDMA.
//!
//! Non-blocking sockets in one epoll set (`Poller`), driven by whoever polls it (Node's loop through
//! the binding, or `EventLoop` in tests): no thread of its own. A send is written to the socket at
//! once from the caller's thread (`writev` of header and payload); only what the kernel does not
//! take is buffered, and written when the socket becomes writable. Reads are bounded per poll, so a
//! flooding peer cannot starve other connections or the timers of the loop that drives us.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::counters::{Kind, Live};
use crate::error::{ErrorCode, TransportError};
use crate::event::Event;
use crate::frame::{check_preamble, encode_header, validate_outgoing, Decoder, PREAMBLE};
use crate::ids::next_id;
use crate::poll::{Deadlines, Pollable, Poller, READABLE, WAKE, WRITABLE};
use crate::transport::{
    validate_host, validate_max_payload, ConnId, ConnectOptions, ListenOptions, ListenerId, Transport,
};

/// After a local close has flushed and half-closed, how long to wait for the peer's end of stream
/// before dropping the socket anyway.
const LINGER: Duration = Duration::from_secs(2);
/// After a failed accept (e.g. out of file descriptors), wait before trying again instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const ACCEPTS_PER_POLL: usize = 64;
const READ_CHUNK: usize = 64 * 1024;
/// Bytes one connection may read in one poll, and all of them together: a connection that floods
/// us yields to the others, and the poll returns to Node (timers run) within bounded work.
const READ_BUDGET_PER_CONN: usize = 4 * READ_CHUNK;
const READ_BUDGET: usize = 16 * READ_CHUNK;
/// Frames sent within one turn of the caller's loop are gathered and written together by `flush`
/// (one syscall and one TCP segment for many small frames, as Nagle would, without its delays);
/// a connection with this many bytes gathered writes at once instead.
const CORK_LIMIT: usize = 64 * 1024;
/// Bytes a connection keeps that the kernel has not taken yet; `send` fails with QueueFull past
/// it. The lifecycle layer's credits keep far below it: reaching it means a peer that stopped
/// reading while something sent without credits.
pub const SEND_QUEUE_LIMIT_BYTES: usize = 64 * 1024 * 1024;
/// Listener tokens live above every connection id (ids are u32).
const LISTENER_TOKEN: u64 = 1 << 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Active,
    Passive(ListenerId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The non-blocking connect is in progress (active side).
    Connecting,
    /// Socket up, preambles being exchanged.
    Handshake,
    Open,
    /// close(): write what is queued, half-close (`shut`), then wait (bounded) for the peer's end.
    Closing {
        shut: bool,
        peer_ended: bool,
    },
}

struct Conn {
    sock: TcpStream,
    role: Role,
    phase: Phase,
    peer: String,
    max_payload: u32,
    /// Deadline of the current wait (connect + handshake, linger), in `Deadlines` too.
    deadline: Option<Instant>,
    timeout_ms: u32,
    preamble: [u8; PREAMBLE.len()],
    preamble_got: usize,
    decoder: Decoder,
    /// Bytes the kernel has not taken yet, from `unsent_at` on; counted while non-empty.
    unsent: Vec<u8>,
    unsent_at: usize,
    unsent_live: Option<Live>,
    /// Listed in `TcpTransport::corked`: holds frames for the next `flush`.
    corked: bool,
    interest: u32,
    _live: Live,
}

impl Conn {
    /// A connection in setup (`Connecting` or `Handshake`), whose setup must end `timeout_ms` after `now`.
    fn new(
        sock: TcpStream,
        role: Role,
        phase: Phase,
        peer: String,
        max_payload: u32,
        timeout_ms: u32,
        now: Instant,
    ) -> Conn {
        Conn {
            sock,
            role,
            phase,
            peer,
            max_payload,
            deadline: Some(now + Duration::from_millis(timeout_ms as u64)),
            timeout_ms,
            preamble: [0; PREAMBLE.len()],
            preamble_got: 0,
            decoder: Decoder::new(max_payload),
            unsent: Vec::new(),
            unsent_at: 0,
            unsent_live: None,
            corked: false,
            interest: 0,
            _live: Live::new(Kind::TcpConnections),
        }
    }

    fn has_unsent(&self) -> bool {
        self.unsent_at < self.unsent.len()
    }

    fn queue(&mut self, bytes: &[u8]) {
        self.unsent.extend_from_slice(bytes);
        if self.unsent_live.is_none() {
            self.unsent_live = Some(Live::new(Kind::TcpSendBuffers));
        }
    }

    /// Writes buffered bytes until done or the kernel stops taking them.
    fn flush(&mut self) -> io::Result<()> {
        while self.has_unsent() {
            match self.sock.write(&self.unsent[self.unsent_at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.unsent_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.unsent.clear();
        self.unsent_at = 0;
        self.unsent_live = None;
        Ok(())
    }

    fn unsent_len(&self) -> usize {
        self.unsent.len() - self.unsent_at
    }

    /// Writes header and payload with one writev when nothing is queued; queues the rest.
    fn write_frame(&mut self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        if self.has_unsent() {
            self.queue(header);
            self.queue(payload);
            return Ok(());
        }
        let total = header.len() + payload.len();
        let mut written = 0;
        while written < total {
            let r = if written < header.len() {
                self.sock.write_vectored(&[IoSlice::new(&header[written..]), IoSlice::new(payload)])
            } else {
                self.sock.write(&payload[written - header.len()..])
            };
            match r {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if written < header.len() {
            self.queue(&header[written..]);
            self.queue(payload);
        } else if written < total {
            self.queue(&payload[written - header.len()..]);
        }
        Ok(())
    }

    fn wanted_interest(&self) -> u32 {
        let writable = if self.has_unsent() { WRITABLE } else { 0 };
        match self.phase {
            Phase::Connecting => WRITABLE,
            // The peer's end of stream stays readable forever: only the writes are left to watch.
            Phase::Closing { peer_ended: true, .. } => writable,
            _ => READABLE | writable,
        }
    }
}

struct Listener {
    sock: TcpListener,
    opts: ListenOptions,
    /// Not watched for a moment after an accept failed (e.g. out of descriptors); its deadline
    /// (under the listener's id) resumes it.
    paused: bool,
    _live: Live,
}

pub struct TcpTransport {
    poller: Poller,
    conns: HashMap<ConnId, Conn>,
    listeners: HashMap<ListenerId, Listener>,
    deadlines: Deadlines,
    /// Connections holding frames gathered since the last `flush`.
    corked: Vec<ConnId>,
    /// Events produced outside `poll` (by commands), handed out by the next poll.
    queued: Vec<Event>,
    /// One read buffer for every connection: the transport runs on one thread.
    scratch: Vec<u8>,
    ready: Vec<(u64, u32)>,
    polling: bool,
}

impl TcpTransport {
    pub fn new() -> Result<TcpTransport, TransportError> {
        let poller = Poller::new().map_err(|e| TransportError::from_io("creating the tcp poller", &e))?;
        Ok(TcpTransport {
            poller,
            conns: HashMap::new(),
            listeners: HashMap::new(),
            deadlines: Deadlines::default(),
            corked: Vec::new(),
            queued: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            ready: Vec::with_capacity(64),
            polling: false,
        })
    }

    /// Queues an event; outside a poll (a command produced it), wakes the poller so that the
    /// next turn hands it out. Inside a poll, this poll hands it out.
    fn emit(&mut self, event: Event) {
        if self.queued.is_empty() && !self.polling {
            self.poller.wake();
        }
        self.queued.push(event);
    }

    fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) {
        if let Some(c) = self.conns.get_mut(&id) {
            self.deadlines.set(id, c.deadline, at);
            c.deadline = at;
        }
    }

    fn update_interest(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let want = c.wanted_interest();
        if want != c.interest {
            c.interest = want;
            if let Err(e) = self.poller.modify(c.sock.as_raw_fd(), id as u64, want) {
                let error = TransportError::from_io("epoll_ctl", &e);
                self.fail(id, error);
            }
        }
    }

    /// Adds a connection (any phase) to the poller and the tables.
    fn insert(&mut self, id: ConnId, conn: Conn) -> Result<(), TransportError> {
        self.poller
            .add(conn.sock.as_raw_fd(), id as u64, conn.interest)
            .map_err(|e| TransportError::from_io("epoll_ctl", &e))?;
        let deadline = conn.deadline;
        self.conns.insert(id, conn);
        self.deadlines.set(id, None, deadline);
        Ok(())
    }

    /// Removes a connection and frees its socket (counters go down before any event is seen).
    fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        self.deadlines.set(id, c.deadline, None);
        self.poller.remove(c.sock.as_raw_fd());
        Some(c)
    }

    /// Ends a connection that is established (or closing) and reports Closed.
    fn finish(&mut self, id: ConnId, error: Option<TransportError>) {
        if self.remove(id).is_some() {
            self.emit(Event::Closed { conn: id, error });
        }
    }

    /// Ends a connection whatever its phase: setup failures are reported as such.
    fn fail(&mut self, id: ConnId, error: TransportError) {
        let Some(c) = self.conns.get(&id) else { return };
        match (c.phase, c.role) {
            (Phase::Connecting | Phase::Handshake, Role::Active) => {
                self.remove(id);
                self.emit(Event::ConnectFailed { conn: id, error });
            }
            (Phase::Connecting | Phase::Handshake, Role::Passive(listener)) => {
                let peer = c.peer.clone();
                self.remove(id);
                self.emit(Event::AcceptFailed { listener, peer, error });
            }
            _ => self.finish(id, Some(error)),
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Result<&mut Conn, TransportError> {
        self.conns.get_mut(&id).ok_or_else(|| not_found("connection", id))
    }

    // ---- readiness --------------------------------------------------------------------------

    fn on_listener_ready(&mut self, lid: ListenerId, now: Instant) {
        for _ in 0..ACCEPTS_PER_POLL {
            let Some(l) = self.listeners.get_mut(&lid) else { return };
            match l.sock.accept() {
                Ok((sock, addr)) => {
                    let opts = l.opts.clone();
                    self.on_accepted(lid, sock, addr, &opts, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(_) => {
                    // Out of descriptors or memory: the backlog stays readable, so stop watching it
                    // for a moment instead of spinning.
                    l.paused = true;
                    self.poller.remove(l.sock.as_raw_fd());
                    self.deadlines.set(lid, None, Some(now + ACCEPT_BACKOFF));
                    return;
                }
            }
        }
    }

    fn on_accepted(
        &mut self,
        listener: ListenerId,
        sock: TcpStream,
        addr: SocketAddr,
        opts: &ListenOptions,
        now: Instant,
    ) {
        let peer = addr.to_string();
        let _ = sock.set_nonblocking(true);
        let _ = sock.set_nodelay(true);
        let id = next_id();
        let mut conn = Conn::new(
            sock,
            Role::Passive(listener),
            Phase::Handshake,
            peer.clone(),
            opts.max_payload,
            opts.handshake_timeout_ms,
            now,
        );
        let started = conn
            .write_frame(&PREAMBLE, &[])
            .map_err(|e| TransportError::from_io(&format!("sending the preamble to {peer}"), &e));
        conn.interest = conn.wanted_interest();
        if let Err(error) = started.and_then(|_| self.insert(id, conn)) {
            self.emit(Event::AcceptFailed { listener, peer, error });
        }
    }

    fn on_conn_ready(&mut self, id: ConnId, events: u32, budget: &mut usize) {
        let Some(c) = self.conns.get(&id) else { return };
        let hangup = events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
        if c.phase == Phase::Connecting {
            if events & WRITABLE != 0 || hangup {
                self.on_connect_done(id);
            }
            return;
        }
        if events & WRITABLE != 0 || hangup {
            self.on_writable(id);
        }
        if events & READABLE != 0 || hangup {
            self.on_readable(id, budget);
        }
        self.update_interest(id);
    }

    fn on_connect_done(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let target = c.peer.clone();
        let outcome = match c.sock.take_error() {
            Ok(None) => Ok(()),
            Ok(Some(e)) | Err(e) => Err(e),
        };
        let started = outcome.and_then(|_| {
            let _ = c.sock.set_nodelay(true);
            c.phase = Phase::Handshake;
            c.write_frame(&PREAMBLE, &[])
        });
        match started {
            Ok(()) => self.update_interest(id),
            Err(e) => self.fail(id, TransportError::from_io(&format!("connecting to {target}"), &e)),
        }
    }

    fn on_writable(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if let Err(e) = c.flush() {
            return self.fail(id, TransportError::from_io("writing to the peer", &e));
        }
        self.after_flush(id);
    }

    /// A closing connection whose queue is written half-closes, then waits for the peer's end.
    fn after_flush(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let Phase::Closing { shut: false, peer_ended } = c.phase else { return };
        if c.has_unsent() {
            return;
        }
        let _ = c.sock.shutdown(Shutdown::Write);
        c.phase = Phase::Closing { shut: true, peer_ended };
        if peer_ended {
            return self.finish(id, None);
        }
        self.set_deadline(id, Some(Instant::now() + LINGER));
    }

    fn on_readable(&mut self, id: ConnId, budget: &mut usize) {
        let mut frames = Vec::new();
        let mut count = 0u32;
        let mut read_here = 0;
        let outcome = loop {
            if read_here >= READ_BUDGET_PER_CONN || *budget == 0 {
                break Ok(false); // level-triggered: the rest is reported again next poll
            }
            let Some(c) = self.conns.get_mut(&id) else { return };
            let want = if c.phase == Phase::Handshake { PREAMBLE.len() - c.preamble_got } else { READ_CHUNK };
            let n = match c.sock.read(&mut self.scratch[..want]) {
                Ok(0) => break Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(TransportError::from_io("reading from the peer", &e)),
            };
            read_here += n;
            *budget = budget.saturating_sub(n);
            // A short read drained the socket (as libuv assumes too): skip the read that would
            // only say EAGAIN; if more arrives, the level-triggered poller reports it again.
            let drained = n < want;
            if c.phase == Phase::Handshake {
                c.preamble[c.preamble_got..c.preamble_got + n].copy_from_slice(&self.scratch[..n]);
                c.preamble_got += n;
                match check_preamble(&c.preamble[..c.preamble_got]) {
                    Ok(true) => self.on_handshake_done(id),
                    Ok(false) => {}
                    Err(e) => break Err(TransportError::new(e.code, format!("{}: {}", c.peer, e.message))),
                }
                continue;
            }
            match c.decoder.feed(&self.scratch[..n], &mut frames) {
                Ok(k) => count += k as u32,
                Err(e) => break Err(e),
            }
            if drained {
                break Ok(false);
            }
        };
        if count > 0 {
            self.emit(Event::Frames { conn: id, data: frames, count });
        }
        match outcome {
            Ok(false) => {}
            Ok(true) => self.on_peer_ended(id),
            Err(e) => self.fail(id, e),
        }
    }

    fn on_handshake_done(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.phase = Phase::Open;
        let peer = c.peer.clone();
        let event = match c.role {
            Role::Active => Event::Connected { conn: id, peer, qp: None },
            Role::Passive(listener) => Event::Accepted { listener, conn: id, peer, qp: None },
        };
        self.set_deadline(id, None);
        self.emit(event);
    }

    fn on_peer_ended(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        match c.phase {
            Phase::Connecting | Phase::Handshake => {
                let msg = format!("{} closed the connection before completing the handshake", c.peer);
                self.fail(id, TransportError::new(ErrorCode::PeerClosed, msg));
            }
            _ if c.decoder.pending() > 0 => {
                let msg = format!(
                    "the peer closed the connection in the middle of a frame ({} bytes pending)",
                    c.decoder.pending()
                );
                self.fail(id, TransportError::new(ErrorCode::MalformedFrame, msg));
            }
            Phase::Open => {
                self.finish(id, Some(TransportError::new(ErrorCode::PeerClosed, "the peer closed the connection")))
            }
            // Both sides are done: ours is written and half-closed, the peer ended its stream.
            Phase::Closing { shut: true, .. } => self.finish(id, None),
            // Still writing what was queued before close: finish that (bounded), then go.
            Phase::Closing { shut: false, .. } => {
                c.phase = Phase::Closing { shut: false, peer_ended: true };
                // Stop watching reads (EOF stays readable forever).
                c.interest = 0;
                self.update_interest(id);
                self.set_deadline(id, Some(Instant::now() + LINGER));
            }
        }
    }

    fn on_deadline(&mut self, id: ConnId) {
        if let Some(l) = self.listeners.get_mut(&id) {
            if std::mem::take(&mut l.paused) {
                let _ = self.poller.add(l.sock.as_raw_fd(), LISTENER_TOKEN | id as u64, READABLE);
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.deadline = None;
        let error = match (c.phase, c.role) {
            (Phase::Connecting | Phase::Handshake, Role::Active) => TransportError::new(
                ErrorCode::Timeout,
                format!("connecting to {} took longer than {} ms", c.peer, c.timeout_ms),
            ),
            (Phase::Connecting | Phase::Handshake, Role::Passive(_)) => TransportError::new(
                ErrorCode::Timeout,
                format!("{} sent no handshake within {} ms", c.peer, c.timeout_ms),
            ),
            // Linger passed: the peer never ended its stream (or never took our last bytes).
            (Phase::Closing { .. }, _) => return self.finish(id, None),
            (Phase::Open, _) => return,
        };
        self.fail(id, error);
    }
}

impl Pollable for TcpTransport {
    fn fd(&self) -> RawFd {
        self.poller.fd()
    }

    fn flush(&mut self) {
        for id in std::mem::take(&mut self.corked) {
            let Some(c) = self.conns.get_mut(&id) else { continue };
            c.corked = false;
            self.on_writable(id);
            self.update_interest(id);
        }
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Event>) {
        self.polling = true;
        self.flush();
        let mut ready = std::mem::take(&mut self.ready);
        self.poller.ready(0, &mut ready);
        let mut budget = READ_BUDGET;
        for &(token, events) in &ready {
            if token == WAKE {
                continue;
            }
            if token & LISTENER_TOKEN != 0 {
                self.on_listener_ready(token as u32, now);
            } else {
                self.on_conn_ready(token as u32, events, &mut budget);
            }
        }
        self.ready = ready;
        for id in self.deadlines.expired(now) {
            self.on_deadline(id);
        }
        self.polling = false;
        out.append(&mut self.queued);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.next()
    }
}

impl Transport for TcpTransport {
    fn listen(&mut self, opts: &ListenOptions) -> Result<(ListenerId, u16), TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        let addr = resolve_one(&opts.host, opts.port)?;
        let listening = || -> io::Result<TcpListener> {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.bind(&addr.into())?;
            s.listen(opts.backlog.clamp(1, i32::MAX as u32) as i32)?;
            s.set_nonblocking(true)?;
            Ok(s.into())
        };
        let sock = listening().map_err(|e| TransportError::from_io(&format!("listening on {addr}"), &e))?;
        let port = sock.local_addr().map_err(|e| TransportError::from_io("reading the listener's address", &e))?.port();
        let id = next_id();
        self.poller
            .add(sock.as_raw_fd(), LISTENER_TOKEN | id as u64, READABLE)
            .map_err(|e| TransportError::from_io("epoll_ctl", &e))?;
        let listener = Listener { sock, opts: opts.clone(), paused: false, _live: Live::new(Kind::TcpListeners) };
        self.listeners.insert(id, listener);
        Ok((id, port))
    }

    fn close_listener(&mut self, listener: ListenerId) -> Result<(), TransportError> {
        let l = self.listeners.remove(&listener).ok_or_else(|| not_found("listener", listener))?;
        self.poller.remove(l.sock.as_raw_fd());
        if l.paused {
            self.deadlines.clear(listener);
        }
        drop(l);
        // Peers still in their transport handshake belong to the listener: they never became
        // connections, and nothing outlives the listener's close.
        let pending: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.role == Role::Passive(listener) && c.phase == Phase::Handshake)
            .map(|(id, _)| *id)
            .collect();
        for id in pending {
            self.remove(id);
        }
        self.emit(Event::ListenerClosed { listener, error: None });
        Ok(())
    }

    fn connect(&mut self, opts: &ConnectOptions) -> Result<ConnId, TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        if opts.port == 0 {
            return Err(TransportError::new(ErrorCode::InvalidArgument, "port must be between 1 and 65535"));
        }
        let addr = resolve_one(&opts.host, opts.port)?;
        let target = addr.to_string();
        let id = next_id();
        let connecting = || -> io::Result<TcpStream> {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            match s.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(s.into())
        };
        let conn = match connecting() {
            Ok(sock) => {
                let (max, timeout) = (opts.max_payload, opts.timeout_ms);
                let mut conn =
                    Conn::new(sock, Role::Active, Phase::Connecting, target.clone(), max, timeout, Instant::now());
                conn.interest = conn.wanted_interest();
                conn
            }
            // Refused at once (e.g. no route): reported like any failed attempt, as an event.
            Err(e) => {
                self.emit(Event::ConnectFailed {
                    conn: id,
                    error: TransportError::from_io(&format!("connecting to {target}"), &e),
                });
                return Ok(id);
            }
        };
        if let Err(error) = self.insert(id, conn) {
            self.emit(Event::ConnectFailed { conn: id, error });
        }
        Ok(id)
    }

    fn send(&mut self, id: ConnId, kind: u8, credits: u16, payload: &[u8]) -> Result<(), TransportError> {
        let c = self.conn_mut(id)?;
        match c.phase {
            Phase::Open => {}
            Phase::Closing { .. } => {
                return Err(TransportError::new(
                    ErrorCode::NotFound,
                    format!("connection {id} is closing: no more frames can be sent"),
                ))
            }
            Phase::Connecting | Phase::Handshake => {
                return Err(TransportError::new(ErrorCode::NotFound, format!("connection {id} is not established yet")))
            }
        }
        validate_outgoing(kind, payload.len(), c.max_payload)?;
        if c.unsent_len() + payload.len() > SEND_QUEUE_LIMIT_BYTES {
            return Err(TransportError::new(
                ErrorCode::QueueFull,
                format!(
                    "connection {id} has {} bytes the peer has not taken yet: send queue full ({SEND_QUEUE_LIMIT_BYTES} bytes)",
                    c.unsent_len()
                ),
            ));
        }
        let header = encode_header(kind, credits, payload.len() as u32);
        if c.has_unsent() || c.corked || header.len() + payload.len() < CORK_LIMIT {
            // Gathered for `flush` (or behind bytes the kernel did not take yet).
            let waiting = c.has_unsent() && !c.corked;
            c.queue(&header);
            c.queue(payload);
            if c.unsent_len() >= CORK_LIMIT && !waiting {
                self.on_writable(id);
                self.update_interest(id);
            } else if !waiting && !c.corked {
                c.corked = true;
                self.corked.push(id);
            }
            return Ok(());
        }
        // A large frame with nothing ahead of it: straight from the caller's buffer (no copy).
        match c.write_frame(&header, payload) {
            Ok(()) => self.update_interest(id),
            // The connection failed under us: its Closed event says why; this call did its part.
            Err(e) => self.fail(id, TransportError::from_io("writing to the peer", &e)),
        }
        Ok(())
    }

    fn close(&mut self, id: ConnId) -> Result<(), TransportError> {
        let c = self.conn_mut(id)?;
        match c.phase {
            Phase::Open => {
                c.phase = Phase::Closing { shut: false, peer_ended: false };
                self.after_flush(id);
            }
            Phase::Connecting | Phase::Handshake => self.fail(
                id,
                TransportError::new(ErrorCode::ConnectionReset, "connection closed locally before it was established"),
            ),
            Phase::Closing { .. } => {}
        }
        Ok(())
    }

    fn abort(&mut self, id: ConnId) -> Result<(), TransportError> {
        let c = self.conn_mut(id)?;
        match c.phase {
            Phase::Connecting | Phase::Handshake => self.fail(
                id,
                TransportError::new(ErrorCode::ConnectionReset, "connection aborted locally before it was established"),
            ),
            _ => self.finish(id, None),
        }
        Ok(())
    }
}

fn not_found(what: &str, id: u32) -> TransportError {
    TransportError::new(ErrorCode::NotFound, format!("{what} {id} is closed or does not exist"))
}

fn resolve_one(host: &str, port: u16) -> Result<SocketAddr, TransportError> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| TransportError::new(ErrorCode::AddressUnreachable, format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| TransportError::new(ErrorCode::AddressUnreachable, format!("{host} resolves to no address")))
}
