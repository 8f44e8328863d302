//! The caller's commands: listen, connect, send (fragments copied into pool send slots, posted by
//! `flush` in one chain per connection), close, abort; and `pump`, the send path they share with
//! completions (credits and slots coming back).

use super::*;

impl Reactor {
    /// Queues one frame behind the connection's earlier ones and posts what the send slots take.
    pub fn send(&mut self, id: ConnId, kind: u8, credits: u16, payload: &[u8]) -> Result<(), TransportError> {
        let c = sendable(&mut self.conns, id, kind, payload.len())?;
        // Straight into registered send slots when credits and slots allow and nothing waits ahead
        // of it (one copy); what is left waits behind the others in the software queue.
        let imm = imm_of(kind, credits);
        let mut sent = 0;
        if c.sendq.is_empty() {
            if let (Some(link), Some(pool)) = (c.link.as_mut(), c.pool.and_then(|k| self.pools.get_mut(&k))) {
                sent = link.prepare(&mut pool.pool, imm, payload, 0);
            }
        }
        if sent < link::fragments(payload.len(), c.link.as_ref().map_or(usize::MAX, |l| l.fragment)) {
            c.sendq.push_back(Outgoing { kind, credits, payload: Payload::Copied(payload.to_vec()) });
            if c.sendq.len() == 1 {
                c.front_sent = sent;
            }
        }
        self.cork(id);
        Ok(())
    }

    /// `send` of a lent payload: offered zero-copy from the connection's threshold up (true; `Sent`
    /// reports it), else copied (false).
    pub fn send_shared(
        &mut self,
        id: ConnId,
        kind: u8,
        credits: u16,
        payload: SharedPayload,
    ) -> Result<bool, TransportError> {
        let len = payload.as_ref().as_ref().len();
        let c = sendable(&mut self.conns, id, kind, len)?;
        if !c.link.as_ref().is_some_and(|l| l.zero_copy(len)) {
            return self.send(id, kind, credits, payload.as_ref().as_ref()).map(|()| false);
        }
        c.sendq.push_back(Outgoing { kind, credits, payload: Payload::Lent { payload, zero_copy: true } });
        self.cork(id);
        Ok(true)
    }

    /// Posted by the next flush (the caller's, once per turn of its loop, or the next poll's),
    /// together with the other frames of this turn.
    fn cork(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            if !c.corked {
                c.corked = true;
                self.corked.push(id);
            }
        }
    }

    /// See `RdmaTransport::probe_read`.
    pub fn probe_read(&mut self, id: ConnId, addr: u64, rkey: u32, len: usize) -> Result<(), TransportError> {
        let c = self.conns.get_mut(&id).ok_or_else(|| not_found(id))?;
        let (Some(link), Some(entry)) = (c.link.as_mut(), c.pool.and_then(|k| self.pools.get(&k))) else {
            return Err(not_found(id));
        };
        link.probe_read(&entry.pool, addr, rkey, len)
    }

    /// See `RdmaTransport::send_ignoring_credits`.
    pub fn send_ignoring_credits(&mut self, id: ConnId, kind: u8, n: usize) -> Result<(), TransportError> {
        let c = self.conns.get_mut(&id).ok_or_else(|| not_found(id))?;
        let (Some(link), Some(entry)) = (c.link.as_mut(), c.pool.and_then(|k| self.pools.get_mut(&k))) else {
            return Err(not_found(id));
        };
        link.send_ignoring_credits(&mut entry.pool, kind, n)
    }

    pub fn last_offer(&self, id: ConnId) -> Option<(u64, u32, u32, bool)> {
        self.conns.get(&id)?.link.as_ref()?.last_offer()
    }

    /// Registrations the pools' caches made and cache hits, all pools together.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.pools.values().fold((0, 0), |(r, h), e| (r + e.pool.cache.registered, h + e.pool.cache.hits))
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

    pub fn listen(
        &mut self,
        opts: ListenOptions,
        addr: std::net::SocketAddr,
    ) -> Result<(ListenerId, u16), TransportError> {
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
        self.release_pools();
        self.emit(Event::ListenerClosed { listener: id, error: None });
        Ok(())
    }

    pub fn connect(&mut self, id: ConnId, opts: rdma_graceful_core::ConnectOptions, addr: std::net::SocketAddr) {
        let started = (|| {
            let cm = CmId::new(self.lib, &self.channel)?;
            cm.set_ack_timeout(opts.rdma.ack_timeout_exponent.unwrap_or(crate::ACK_TIMEOUT_EXP));
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
        let mut conn =
            Conn::new(id, Role::Active, Phase::Resolving, cm, opts.max_payload, addr.to_string(), opts.timeout_ms);
        conn.retry_count = opts.rdma.retry_count.unwrap_or(crate::RETRY_COUNT);
        conn.busy_poll_us = opts.rdma.busy_poll_us.unwrap_or(0);
        conn.zero_copy_threshold = opts.rdma.zero_copy_threshold.unwrap_or(crate::ZERO_COPY_THRESHOLD);
        self.conns.insert(id, conn);
    }

    /// Prepares queued fragments while credits, the QP's send queue and the pool's send slots
    /// allow, then a credit update if one is due, and posts them chained into one post (rxe rings
    /// a doorbell per post); finishes a local close once all is sent and acknowledged.
    pub(super) fn pump(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if !matches!(c.phase, Phase::Open | Phase::Closing) {
            return;
        }
        let (Some(link), Some(entry)) = (c.link.as_mut(), c.pool.and_then(|k| self.pools.get_mut(&k))) else {
            return;
        };
        let pool = &mut entry.pool;
        link.wants_slot = false;
        let mut failure = None;
        // Frames waiting in the queue follow those already in slots, as credits and slots come back.
        let mut copied_lent = 0;
        while let Some(f) = c.sendq.front_mut() {
            let len = f.bytes().len();
            if len as u64 > c.peer_max as u64 {
                failure = Some(too_large_for_peer(len, c.peer_max));
                break;
            }
            if matches!(f.payload, Payload::Lent { zero_copy: true, .. }) {
                let Some(Outgoing { kind, credits, payload: Payload::Lent { payload, .. } }) = c.sendq.pop_front()
                else {
                    unreachable!("the front is lent")
                };
                let (payload, zero_copy) = match link.offer(pool, imm_of(kind, credits), payload) {
                    Offered::Yes => continue,
                    Offered::Later(p) => (p, true),
                    Offered::Never(p) => (p, false),
                };
                c.sendq.push_front(Outgoing { kind, credits, payload: Payload::Lent { payload, zero_copy } });
                if zero_copy {
                    break;
                }
                continue;
            }
            c.front_sent = link.prepare(pool, f.imm(), f.bytes(), c.front_sent);
            if c.front_sent < link::fragments(len, link.fragment) {
                break;
            }
            copied_lent += c.sendq.pop_front().is_some_and(|f| f.is_lent()) as u32;
            c.front_sent = 0;
        }
        if failure.is_none() {
            failure = link.prepare_transfers(pool).err();
        }
        // A pool short of memory takes back what this connection's peer need not hold.
        if pool.under_pressure() {
            let n = link.credits.shrink(crate::INITIAL_WINDOW, u32::MAX);
            pool.release(n);
        }
        link.prepare_update(pool);
        let closing = matches!(c.phase, Phase::Closing);
        if closing && c.sendq.is_empty() {
            link.prepare_marker(pool);
        }
        if failure.is_none() && link.has_prepared() {
            failure = link.post_prepared(pool, closing).err();
        }
        // A fragment or a credit update found no free send slot: no completion of this connection
        // may come to retry it, so it waits for any slot of the pool to come back.
        if link.wants_slot && !self.slot_waiters.contains(&id) {
            self.slot_waiters.push(id);
        }
        let done_closing = closing && c.sendq.is_empty() && link.sends_in_flight() == 0 && link.settled();
        if copied_lent > 0 {
            self.emit(Event::Sent { conn: id, count: copied_lent });
        }
        if let Some(e) = failure {
            return self.teardown(id, Some(e), false);
        }
        if done_closing {
            self.teardown(id, None, true);
        }
    }

    /// Posts what `send` queued since the last flush, one chained post per connection.
    pub fn flush(&mut self) {
        for id in std::mem::take(&mut self.corked) {
            if let Some(c) = self.conns.get_mut(&id) {
                c.corked = false;
            }
            self.pump(id);
        }
    }
}

/// The connection, if a frame of `kind` and `len` bytes may be queued on it now.
fn sendable(conns: &mut HashMap<ConnId, Conn>, id: ConnId, kind: u8, len: usize) -> Result<&mut Conn, TransportError> {
    let c = conns.get_mut(&id).ok_or_else(|| not_found(id))?;
    match c.phase {
        Phase::Open => {}
        Phase::Closing | Phase::Draining { .. } => {
            return Err(TransportError::new(ErrorCode::NotFound, format!("rdma connection {id} is closing")))
        }
        _ => {
            return Err(TransportError::new(
                ErrorCode::NotFound,
                format!("rdma connection {id} is not established yet"),
            ))
        }
    }
    validate_outgoing(kind, len, c.local_max.min(c.peer_max))?;
    if c.sendq.len() >= SEND_QUEUE_LIMIT {
        return Err(TransportError::new(
            ErrorCode::QueueFull,
            format!("rdma connection {id} has {SEND_QUEUE_LIMIT} frames queued: send queue full"),
        ));
    }
    Ok(c)
}
