//! Connection setup and rdma-cm events: resolve, connect, accept (resources built on the id's
//! device), ESTABLISHED, REJECTED, DISCONNECTED.

use super::*;

impl Reactor {
    pub(super) fn on_cm_ready(&mut self) {
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

    pub(super) fn on_connect_request(&mut self, listener: ListenerId, ev: CmEvent) {
        // SAFETY: a connect request's id is new and owned by nobody else.
        let cm = unsafe { CmId::adopt(self.lib, ev.id) };
        let peer = cm.peer_addr();
        let Some(l) = self.listeners.get(&listener) else { return };
        let local_max = l.opts.max_payload;
        let handshake_ms = l.opts.handshake_timeout_ms;
        let ack_timeout = l.opts.rdma.ack_timeout_exponent.unwrap_or(crate::ACK_TIMEOUT_EXP);
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
        cm.set_ack_timeout(ack_timeout);
        let busy_poll_us = l.opts.rdma.busy_poll_us.unwrap_or(0);
        let threshold = l.opts.rdma.zero_copy_threshold.unwrap_or(crate::ZERO_COPY_THRESHOLD);
        let mut conn = Conn::new(id, Role::Passive { listener }, Phase::Accepting, cm, local_max, peer, handshake_ms);
        conn.busy_poll_us = busy_poll_us;
        conn.zero_copy_threshold = threshold;
        // READs each way: no more than the peer asked for (an earlier peer asks for none).
        let offers = offers_rendezvous(&conn);
        let (serve, issue) = if offers {
            (rndv::READ_DEPTH.min(ev.initiator_depth), rndv::READ_DEPTH.min(ev.responder_resources))
        } else {
            (0, 0)
        };
        let hello = Hello { rendezvous: hello.rendezvous && serve > 0 && issue > 0, ..hello };
        let built = self
            .build_link(&mut conn, Some(&hello))
            .and_then(|()| conn.cm.accept(&our_hello(local_max, offers), serve, issue));
        if let Err(e) = built {
            conn.cm.reject(b"RDGR: accept failed");
            let peer = std::mem::take(&mut conn.peer);
            self.discard(conn);
            self.emit(Event::AcceptFailed { listener, peer, error: e });
            return;
        }
        self.owners.insert(conn.cm.as_ptr() as usize, Owner::Conn(id));
        conn.peer_max = hello.max_payload;
        conn.remote_qpn = ev.remote_qpn;
        self.conns.insert(id, conn);
    }

    /// Creates the connection's QP on its id's device pool (made on first use) and sets its
    /// window aside there. `peer`: the peer's Hello when known (passive side); the active side
    /// learns it at ESTABLISHED. On failure the caller discards the connection (`discard`).
    pub(super) fn build_link(&mut self, conn: &mut Conn, peer: Option<&Hello>) -> Result<(), TransportError> {
        let ctx = conn.cm.verbs();
        if ctx.is_null() {
            return Err(TransportError::new(ErrorCode::Io, "rdma-cm bound the id to no device"));
        }
        let key = self.pool_for(ctx)?;
        let entry = self.pools.get_mut(&key).expect("pool_for made it");
        let pool = &mut entry.pool;
        let made = pool.reserve(crate::INITIAL_WINDOW).and_then(|()| {
            let qp = Qp::new(self.lib, conn.cm.as_ptr(), pool.core.clone(), crate::SEND_DEPTH);
            if qp.is_err() {
                pool.release(crate::INITIAL_WINDOW);
            }
            qp
        });
        let qp = match made {
            Ok(qp) => qp,
            Err(e) => {
                self.release_pools();
                return Err(e);
            }
        };
        pool.users += 1;
        conn.pool = Some(key);
        self.by_qpn.insert(qp.qpn(), conn.id);
        let mut link = Link::new(qp, Credits::new(crate::INITIAL_WINDOW, 0), crate::BUFFER_SIZE as usize);
        if let Some(h) = peer {
            learn(&mut link, h, conn);
        }
        conn.link = Some(link);
        Ok(())
    }

    /// The pool of a device context, made (PD, SRQ, CQ, buffers) on first use.
    pub(super) fn pool_for(&mut self, ctx: *mut ibv_context) -> Result<usize, TransportError> {
        let key = ctx as usize;
        if self.pools.contains_key(&key) {
            return Ok(key);
        }
        let pool = Pool::new(self.lib, Device::new(self.lib, ctx))?;
        let number = self.next_pool_number;
        self.next_pool_number += 1;
        let watched = self
            .poller
            .add(pool.core.channel.fd(), TOKEN_CQ | number, READABLE)
            .and_then(|()| self.poller.add(pool.core.device.async_fd(), TOKEN_DEVICE | number, READABLE));
        if let Err(e) = watched {
            self.poller.remove(pool.core.channel.fd());
            return Err(TransportError::from_io("epoll_ctl(rdma pool)", &e));
        }
        self.pools.insert(key, PoolEntry { pool, number });
        Ok(key)
    }

    /// Frees every pool no connection uses and no listener is bound on.
    pub(super) fn release_pools(&mut self) {
        let listening: Vec<usize> = self.listeners.values().map(|l| l.cm.verbs() as usize).collect();
        let unused: Vec<usize> =
            self.pools.iter().filter(|(k, e)| e.pool.users == 0 && !listening.contains(k)).map(|(k, _)| *k).collect();
        for k in unused {
            if let Some(e) = self.pools.remove(&k) {
                self.poller.remove(e.pool.core.channel.fd());
                self.poller.remove(e.pool.core.device.async_fd());
                self.more_cq.retain(|p| *p != k);
            }
        }
    }

    pub(super) fn on_conn_event(&mut self, id: ConnId, ev: CmEvent) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let what = format!("{} (status {})", ev.name, ev.status);
        match ev.kind {
            RDMA_CM_EVENT_ADDR_RESOLVED if matches!(c.phase, Phase::Resolving) => {
                if let Err(e) = c.cm.resolve_route(c.timeout_ms) {
                    self.fail_setup(id, e);
                }
            }
            RDMA_CM_EVENT_ROUTE_RESOLVED if matches!(c.phase, Phase::Resolving) => {
                // Build with the connection out of the map (the pool needs &mut self).
                let Some(mut conn) = self.conns.remove(&id) else { return };
                let result = self.build_link(&mut conn, None).and_then(|()| {
                    let offers = offers_rendezvous(&conn);
                    let reads = if offers { rndv::READ_DEPTH } else { 0 };
                    conn.cm.connect(&our_hello(conn.local_max, offers), conn.retry_count, reads)
                });
                conn.phase = Phase::Connecting;
                self.conns.insert(id, conn);
                if let Err(e) = result {
                    self.fail_setup(id, e);
                }
            }
            RDMA_CM_EVENT_ADDR_ERROR | RDMA_CM_EVENT_ROUTE_ERROR | RDMA_CM_EVENT_UNREACHABLE if c.is_setup() => {
                let code =
                    if ev.status == -libc::ETIMEDOUT { ErrorCode::Timeout } else { ErrorCode::AddressUnreachable };
                let msg = format!("cannot reach {}: {what}", c.peer);
                self.fail_setup(id, TransportError::new(code, msg));
            }
            RDMA_CM_EVENT_REJECTED if c.is_setup() => {
                let why = match ev.status {
                    REJ_INVALID_SERVICE_ID => "nothing listens there".to_string(),
                    REJ_CONSUMER_DEFINED => {
                        // The peer's words, in a message a person reads: no control characters.
                        let text: String = String::from_utf8_lossy(&ev.private_data)
                            .chars()
                            .filter(|ch| !ch.is_control())
                            .take(REJECT_PRIVATE_DATA_MAX)
                            .collect();
                        format!("refused by the peer: {text}")
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
            RDMA_CM_EVENT_ESTABLISHED if matches!(c.phase, Phase::Connecting) => {
                match Hello::decode(&ev.private_data) {
                    Ok(h) => {
                        c.peer_max = h.max_payload;
                        c.remote_qpn = ev.remote_qpn;
                        if let Some(mut link) = c.link.take() {
                            learn(&mut link, &h, c);
                            c.link = Some(link);
                        }
                        self.established(id);
                    }
                    Err(e) => self.fail_setup(id, e),
                }
            }
            RDMA_CM_EVENT_ESTABLISHED if matches!(c.phase, Phase::Accepting) => self.established(id),
            RDMA_CM_EVENT_DISCONNECTED
            | RDMA_CM_EVENT_DEVICE_REMOVAL
            | RDMA_CM_EVENT_ADDR_CHANGE
            | RDMA_CM_EVENT_REJECTED
            | RDMA_CM_EVENT_CONNECT_ERROR
            | RDMA_CM_EVENT_UNREACHABLE => {
                let removal = ev.kind != RDMA_CM_EVENT_DISCONNECTED;
                match &c.phase {
                    Phase::Draining { .. } => {}
                    p if c.is_setup() => {
                        let _ = p;
                        let msg = format!("connection to {} ended during setup: {what}", c.peer);
                        self.fail_setup(id, TransportError::new(ErrorCode::ConnectionReset, msg));
                    }
                    Phase::Closing
                        if !removal
                            && c.sendq.is_empty()
                            && c.link.as_ref().is_some_and(|l| l.sends_in_flight() == 0 && l.settled()) =>
                    {
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

    pub(super) fn established(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.phase = Phase::Open;
        c.deadline = None;
        self.busy_window = self.busy_window.max(Duration::from_micros(c.busy_poll_us as u64));
        let event = match c.role {
            Role::Active => Event::Connected { conn: id, peer: c.peer.clone(), qp: c.qp_info() },
            Role::Passive { listener } => Event::Accepted { listener, conn: id, peer: c.peer.clone(), qp: c.qp_info() },
        };
        let data = std::mem::take(&mut c.early);
        let count = std::mem::take(&mut c.early_count);
        self.emit(event);
        if count > 0 {
            self.emit(Event::Frames { conn: id, data, count });
        }
        // Queued sends may now go.
        self.pump(id);
    }
}

/// The Hello this side sends: its largest frame, the window it sets aside, its buffer size, and
/// whether it offers rendezvous.
fn our_hello(local_max: u32, rendezvous: bool) -> [u8; crate::handshake::LEN] {
    Hello { max_payload: local_max, credits: crate::INITIAL_WINDOW as u16, buffer_size: crate::BUFFER_SIZE, rendezvous }
        .encode()
}

/// This side offers rendezvous: zero-copy is on, and it could register a landing buffer for the
/// largest frame it takes (locked-memory limit).
fn offers_rendezvous(conn: &Conn) -> bool {
    conn.zero_copy_threshold > 0 && rndv::memlock_allows(conn.local_max as u64)
}

/// What the peer's Hello tells the link: its first credits, the size of its buffers, and whether
/// frames go zero-copy (both sides offered rendezvous).
fn learn(link: &mut Link, h: &Hello, conn: &Conn) {
    link.credits.granted(h.credits as u32);
    link.fragment = (h.buffer_size as usize).min(crate::BUFFER_SIZE as usize);
    link.takes_offers = h.rendezvous && offers_rendezvous(conn);
    link.threshold = if link.takes_offers { conn.zero_copy_threshold as usize } else { 0 };
}
