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
        let mut conn = Conn::new(id, Role::Passive { listener }, Phase::Accepting, cm, local_max, peer, handshake_ms);
        conn.res = Some(res);
        conn.peer_max = hello.max_payload;
        conn.remote_qpn = ev.remote_qpn;
        self.conns.insert(id, conn);
    }

    /// Creates a connection's verbs resources on the id's device and watches its completions.
    pub(super) fn build_resources(
        &mut self,
        id: ConnId,
        cm: &CmId,
        max_payload: u32,
    ) -> Result<Resources, TransportError> {
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

    pub(super) fn device_for(&mut self, ctx: *mut ibv_context) -> Result<Rc<Device>, TransportError> {
        if let Some((_, d)) = self.devices.get(&(ctx as usize)) {
            return Ok(d.clone());
        }
        let d = Rc::new(Device::new(self.lib, ctx));
        let token = TOKEN_DEVICE | self.next_device_token;
        self.next_device_token += 1;
        self.poller
            .add(d.async_fd(), token, READABLE)
            .map_err(|e| TransportError::from_io("epoll_ctl(async fd)", &e))?;
        self.devices.insert(ctx as usize, (token, d.clone()));
        Ok(d)
    }

    /// Drops our handle on every device no connection uses any more.
    pub(super) fn release_devices(&mut self) {
        let unused: Vec<usize> =
            self.devices.iter().filter(|(_, (_, d))| Rc::strong_count(d) == 1).map(|(k, _)| *k).collect();
        for k in unused {
            if let Some((_, d)) = self.devices.remove(&k) {
                self.poller.remove(d.async_fd());
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
                let local_max = c.local_max;
                // Build with the CM id borrowed out of the map entry (resources need &mut self).
                let Some(mut conn) = self.conns.remove(&id) else { return };
                let result = self.build_resources(id, &conn.cm, local_max).and_then(|res| {
                    conn.res = Some(res);
                    conn.cm
                        .connect(&Hello { max_payload: local_max, recv_depth: RECV_DEPTH }.encode(), conn.retry_count)
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
            RDMA_CM_EVENT_ESTABLISHED if matches!(c.phase, Phase::Connecting) => {
                match Hello::decode(&ev.private_data) {
                    Ok(h) => {
                        c.peer_max = h.max_payload;
                        c.remote_qpn = ev.remote_qpn;
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
                        if !removal && c.sendq.is_empty() && c.res.as_ref().is_some_and(|r| r.sends_in_flight == 0) =>
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
        // Completions may have arrived before ESTABLISHED; and queued sends may now go.
        self.on_cq_ready_all(id);
    }
}
