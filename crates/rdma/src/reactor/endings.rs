//! How connections end: failed setups, teardown (disconnect, QP to ERR, drain the flushes,
//! bounded), freeing in order, deadlines, and the transport's shutdown.

use super::*;

impl Reactor {
    /// Ends a connection that never became one: frees everything, then ConnectFailed or
    /// AcceptFailed (never Closed: it was not Accepted/Connected).
    pub(super) fn fail_setup(&mut self, id: ConnId, error: TransportError) {
        let Some(c) = self.remove(id) else { return };
        let role = c.role;
        let peer = c.peer.clone();
        drop(c);
        self.release_pools();
        match role {
            Role::Active => self.emit(Event::ConnectFailed { conn: id, error }),
            Role::Passive { listener } => self.emit(Event::AcceptFailed { listener, peer, error }),
        }
    }

    /// Starts the end of an established connection: disconnect (DREQ; rdma-cm moves the QP to
    /// ERR), then wait for the flush completions of its posted sends, bounded. (Its receives are
    /// the SRQ's: a QP in ERR takes no more of them.)
    pub(super) fn teardown(&mut self, id: ConnId, error: Option<TransportError>, deliver: bool) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if matches!(c.phase, Phase::Draining { .. }) {
            return;
        }
        c.sendq.clear();
        c.cm.disconnect();
        c.front_sent = 0;
        if let Some(link) = c.link.as_mut() {
            if let Err(e) = link.qp.to_error() {
                crate::report(&format!("connection {id}: {e}"));
            }
            link.post_drain_marker();
        }
        c.phase = Phase::Draining { error, deliver };
        c.deadline = Some(Instant::now() + Duration::from_millis(DRAIN_TIMEOUT_MS));
        // What the peer sent before it disconnected may wait in the pool's CQ (a DISCONNECTED is
        // read before the turn's completions): take it now, or the connection could end before the
        // close handshake's last frame is delivered. Not from inside a CQ poll, which took it all.
        if deliver && !self.in_cq {
            if let Some(key) = c.pool {
                self.on_cq_ready_all(key);
            }
        }
        // Later flushes arrive on the pool's CQ (its channel wakes us); nothing posted: done now.
        self.maybe_finish(id);
    }

    pub(super) fn maybe_finish(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else { return };
        let drained = c.link.as_ref().is_none_or(|l| l.sends_in_flight() == 0);
        if drained {
            self.finish(id);
        }
    }

    /// Frees everything the connection holds (its QP, its window in the pool, then the CM id; the
    /// pool too if nothing else uses it), then reports Closed: counters are already down when the
    /// event is seen.
    pub(super) fn finish(&mut self, id: ConnId) {
        let Some(c) = self.remove(id) else { return };
        let error = match &c.phase {
            Phase::Draining { error, .. } => error.clone(),
            _ => None,
        };
        // The QP goes first, then every lent payload (deregistered, let go): Closed releases
        // those the peer did not report read.
        drop(c);
        self.release_pools();
        self.emit(Event::Closed { conn: id, error });
    }

    /// Takes a connection out of the registry with its QP destroyed and its window back in the
    /// pool; the caller drops it (the CM id) and releases pools.
    pub(super) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let mut c = self.conns.remove(&id)?;
        self.owners.remove(&(c.cm.as_ptr() as usize));
        self.unlink(&mut c);
        if c.busy_poll_us > 0 {
            self.busy_window =
                self.conns.values().map(|c| Duration::from_micros(c.busy_poll_us as u64)).max().unwrap_or_default();
        }
        Some(c)
    }

    /// Destroys the connection's QP and gives its window back to its pool.
    pub(super) fn unlink(&mut self, c: &mut Conn) {
        self.slot_waiters.retain(|w| *w != c.id);
        let Some(link) = c.link.take() else { return };
        self.by_qpn.remove(&link.qp.qpn());
        let window = link.credits.window();
        drop(link);
        if let Some(entry) = c.pool.take().and_then(|k| self.pools.get_mut(&k)) {
            entry.pool.release(window);
            entry.pool.users -= 1;
            if entry.pool.users == 0 {
                // No connection left to send again what is cached: let the callers' buffers go.
                entry.pool.cache.evict(0);
            }
        }
    }

    /// Frees a connection that never entered the registry (its accept failed).
    pub(super) fn discard(&mut self, mut c: Conn) {
        self.unlink(&mut c);
        drop(c);
        self.release_pools();
    }

    pub(super) fn on_deadlines(&mut self) {
        if self.conns.values().all(|c| c.deadline.is_none()) {
            return; // open connections have none: no clock read per turn
        }
        let now = Instant::now();
        let due: Vec<ConnId> =
            self.conns.values().filter(|c| c.deadline.is_some_and(|d| d <= now)).map(|c| c.id).collect();
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
                    let pending = c.link.as_ref().map_or(0, |l| l.sends_in_flight());
                    crate::report(&format!(
                        "connection {id}: {pending} sends not flushed within {DRAIN_TIMEOUT_MS} ms; destroying the QP anyway"
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
            let pools: Vec<usize> = self.pools.keys().copied().collect();
            for key in pools {
                self.on_cq_ready_all(key);
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
