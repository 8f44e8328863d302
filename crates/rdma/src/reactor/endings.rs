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
        self.release_devices();
        match role {
            Role::Active => self.emit(Event::ConnectFailed { conn: id, error }),
            Role::Passive { listener } => self.emit(Event::AcceptFailed { listener, peer, error }),
        }
    }

    /// Starts the end of an established connection: disconnect (DREQ; rdma-cm moves the QP to
    /// ERR), then wait for the flush completions of every posted work request, bounded.
    pub(super) fn teardown(&mut self, id: ConnId, error: Option<TransportError>, deliver: bool) {
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
        self.on_cq_ready_all(id);
    }

    pub(super) fn maybe_finish(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else { return };
        let drained = c.res.as_ref().is_none_or(|r| r.recvs_posted == 0 && r.sends_in_flight == 0);
        if drained {
            self.finish(id);
        }
    }

    /// Frees everything the connection holds (QP, CQ, channel, MRs, PD, then the CM id), then
    /// reports Closed: counters are already down when the event is seen.
    pub(super) fn finish(&mut self, id: ConnId) {
        let Some(c) = self.remove(id) else { return };
        let error = match &c.phase {
            Phase::Draining { error, .. } => error.clone(),
            _ => None,
        };
        drop(c);
        self.release_devices();
        self.emit(Event::Closed { conn: id, error });
    }

    pub(super) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let mut c = self.conns.remove(&id)?;
        self.owners.remove(&(c.cm.as_ptr() as usize));
        if let Some(res) = c.res.take() {
            self.poller.remove(res.channel.fd());
            drop(res);
        }
        Some(c)
    }

    pub(super) fn on_deadlines(&mut self) {
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
                self.on_cq_ready_all(id);
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
