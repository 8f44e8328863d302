//! Completions and device async events. A pool's CQ holds the completions of every connection on
//! the device: each is matched to its connection by QP number; received frames are gathered into
//! one `Frames` event per connection per turn, send slots and credits go back, and a failure takes
//! its connection down.

use super::*;

/// What one turn's completions did to one connection.
#[derive(Default)]
struct Touched {
    frames: Vec<u8>,
    count: u32,
    /// Lent payloads the peer reported read (DONE).
    sent: u32,
    /// The last READ of an offer completed: landed payloads may be handed out.
    landed: bool,
    /// The first failure: the cause (flushes that follow it are its consequence). Nothing after
    /// it is added to `frames`.
    failure: Option<TransportError>,
}

/// Completions one turn takes from a CQ at most: credit updates and MORE fragments add no frame
/// bytes, so the byte budget alone would let a turn run on while the CQ refills.
const POLL_COMPLETIONS: usize = 4096;

impl Reactor {
    pub(super) fn on_device_ready(&mut self, key: usize) {
        let Some(entry) = self.pools.get(&key) else { return };
        let events = entry.pool.core.device.read_async_events();
        for ev in events {
            let Some(entry) = self.pools.get(&key) else { return };
            let name = entry.pool.core.device.event_name(ev.kind);
            let pool_wide = match ev.kind {
                IBV_EVENT_CQ_ERR => ev.element == entry.pool.core.cq.as_ptr() as usize,
                IBV_EVENT_SRQ_ERR => ev.element == entry.pool.core.srq.as_ptr() as usize,
                IBV_EVENT_DEVICE_FATAL => true,
                _ => false,
            };
            let victims: Vec<ConnId> = match ev.kind {
                IBV_EVENT_QP_FATAL | IBV_EVENT_QP_REQ_ERR | IBV_EVENT_QP_ACCESS_ERR => self
                    .conns
                    .values()
                    .filter(|c| c.link.as_ref().is_some_and(|l| l.qp.as_ptr() as usize == ev.element))
                    .map(|c| c.id)
                    .collect(),
                _ if pool_wide => self.conns.values().filter(|c| c.pool == Some(key)).map(|c| c.id).collect(),
                _ => Vec::new(),
            };
            for id in victims {
                let Some(c) = self.conns.get(&id) else { continue };
                let err = TransportError::new(
                    ErrorCode::ConnectionReset,
                    format!("rdma async event on the connection to {}: {name}", c.peer),
                );
                if c.is_setup() {
                    self.fail_setup(id, err);
                } else if !matches!(c.phase, Phase::Draining { .. }) {
                    self.teardown(id, Some(err), false);
                }
            }
        }
    }

    /// Takes everything a pool's CQ holds (teardown and shutdown paths).
    pub(super) fn on_cq_ready_all(&mut self, key: usize) {
        let mut unbounded = usize::MAX;
        self.on_cq_ready(key, &mut unbounded);
    }

    /// Takes what a pool's CQ holds, at most `budget` bytes of frames (what is left is taken on
    /// the next turn: `more_cq` and a wake, since no channel event will come for it). Arming
    /// before polling means a completion that lands during the poll still wakes us; while busy
    /// polling, the CQ stays unarmed (`set_busy` arms it when that ends). Returns how many
    /// completions it took.
    pub(super) fn on_cq_ready(&mut self, key: usize, budget: &mut usize) -> usize {
        let Some(entry) = self.pools.get(&key) else { return 0 };
        let was_in_cq = std::mem::replace(&mut self.in_cq, true);
        if entry.pool.core.cq.take_events() && !self.busy {
            if let Err(e) = entry.pool.core.cq.arm() {
                crate::report(&format!("re-arming a completion queue: {e}"));
            }
        }
        let mut touched: Vec<(ConnId, Touched)> = Vec::new();
        let mut slots_freed = false;
        let mut taken = 0usize;
        let mut completions = 0usize;
        let mut more = false;
        let mut wc = [ibv_wc::default(); 32];
        while let Some(entry) = self.pools.get(&key) {
            let n = match entry.pool.core.cq.poll(&mut wc) {
                Ok(n) => n,
                Err(e) => {
                    crate::report(&format!("polling a completion queue: {e}"));
                    break;
                }
            };
            completions += n;
            for w in &wc[..n] {
                slots_freed |= w.wr_id & SEND_TAG != 0;
                taken += self.on_completion(key, w, &mut touched);
            }
            if n < wc.len() {
                break;
            }
            if taken >= *budget || completions >= POLL_COMPLETIONS {
                more = true;
                break;
            }
        }
        *budget = budget.saturating_sub(taken);
        if more {
            self.more_cq.push(key);
            self.poller.wake();
        }
        for (id, t) in touched {
            self.after_completions(id, t);
        }
        if slots_freed {
            for id in std::mem::take(&mut self.slot_waiters) {
                self.pump(id);
            }
        }
        self.in_cq = was_in_cq;
        completions
    }

    /// One completion: the send slot or receive buffer goes back to the pool at once, whatever
    /// became of its connection; what it means for the connection is noted in `touched`. Returns
    /// the bytes of frames it added.
    fn on_completion(&mut self, key: usize, w: &ibv_wc, touched: &mut Vec<(ConnId, Touched)>) -> usize {
        let is_send = w.wr_id & SEND_TAG != 0;
        let Some(entry) = self.pools.get_mut(&key) else { return 0 };
        let pool = &mut entry.pool;
        let conn = self.by_qpn.get(&w.qp_num).and_then(|id| self.conns.get_mut(id));
        let t = conn.as_ref().map(|c| c.id).map(|id| match touched.iter().position(|(t, _)| *t == id) {
            Some(i) => i,
            None => {
                touched.push((id, Touched::default()));
                touched.len() - 1
            }
        });
        if is_send {
            let slot = crate::verbs::slot_of(w.wr_id);
            if slot != crate::verbs::NO_SLOT {
                pool.put_send_slot(slot);
            }
            let (Some(c), Some(t)) = (conn, t) else { return 0 };
            let t = &mut touched[t].1;
            if let Some(link) = c.link.as_mut() {
                link.completed(w.wr_id);
                if w.wr_id & READ_TAG != 0 && w.status == IBV_WC_SUCCESS {
                    link.landed();
                    t.landed = true;
                }
            }
            if w.status != IBV_WC_SUCCESS {
                t.failure.get_or_insert(crate::verbs::wc_error(self.lib, w, true));
            }
            return 0;
        }
        let buf = w.wr_id as u32;
        let mut added = 0;
        if let (Some(c), Some(t)) = (conn, t) {
            let t = &mut touched[t].1;
            // A teardown the peer started (DISCONNECTED read before the completions of the same
            // turn) still delivers what arrived before it: the close handshake's last frame is there.
            let accepting = !matches!(c.phase, Phase::Draining { deliver: false, .. }) && t.failure.is_none();
            let setup = c.is_setup();
            if let (Some(link), true) = (c.link.as_mut(), accepting) {
                if w.status != IBV_WC_SUCCESS {
                    t.failure = Some(crate::verbs::wc_error(self.lib, w, false));
                } else {
                    let before = t.frames.len();
                    match link.receive(pool, buf, w, c.local_max, &mut t.frames) {
                        Ok(Received::Frame) => t.count += 1,
                        Ok(Received::Sent(n)) => t.sent += n,
                        Ok(Received::Nothing) => {}
                        Err(e) => t.failure = Some(e),
                    }
                    added = t.frames.len() - before;
                    if let Err(e) = link.credits.consumed() {
                        t.failure.get_or_insert(e);
                    }
                    // The peer sends as fast as its window lets it: double the window while the pool
                    // has room (granted with the next message).
                    // Not during setup: until ESTABLISHED its frames wait in `early`, bounded by the
                    // first window.
                    let window = link.credits.window();
                    if link.credits.peer_is_limited() && window < crate::MAX_WINDOW && !setup {
                        let extra = window.min(crate::MAX_WINDOW - window);
                        if pool.try_reserve(extra) {
                            link.credits.grow(extra);
                        }
                    }
                }
            }
        }
        // The buffer goes back into the SRQ whatever became of its message.
        if let Err(e) = pool.repost(buf) {
            crate::report(&format!("re-posting a receive buffer: {e}"));
        }
        added
    }

    /// Hands out what one turn's completions brought a connection (frames, then payloads that
    /// landed and the frames behind them), then lets it send (credits and slots may have come
    /// back) or ends it.
    fn after_completions(&mut self, id: ConnId, t: Touched) {
        let Some(c) = self.conns.get(&id) else { return };
        let Touched { frames, count, sent, landed, mut failure } = t;
        let draining = matches!(c.phase, Phase::Draining { .. });
        if sent > 0 {
            self.emit(Event::Sent { conn: id, count: sent });
        }
        self.deliver(id, frames, count);
        if landed && failure.is_none() {
            let mut out = Vec::new();
            let taken = self.conns.get_mut(&id).and_then(|c| c.link.as_mut()).map(|l| l.deliverable(&mut out));
            if let Some(Err(e)) = taken {
                failure = Some(e);
            }
            for (data, n) in out {
                self.deliver(id, data, n);
            }
        }
        let setup = self.conns.get(&id).is_some_and(|c| c.is_setup());
        match failure {
            Some(_) if draining => self.maybe_finish(id),
            Some(e) if setup => self.fail_setup(id, e),
            Some(e) => self.teardown(id, Some(e), false),
            None if draining => self.maybe_finish(id),
            None => self.pump(id),
        }
    }

    /// Frames for a connection: kept until ESTABLISHED is reported (the peer's QP reaches RTS
    /// first), handed out while it may still deliver, dropped otherwise.
    fn deliver(&mut self, id: ConnId, data: Vec<u8>, count: u32) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if count == 0 {
            return;
        }
        if matches!(c.phase, Phase::Accepting | Phase::Connecting) {
            c.early.extend_from_slice(&data);
            c.early_count += count;
        } else if matches!(c.phase, Phase::Open | Phase::Closing | Phase::Draining { deliver: true, .. }) {
            self.emit(Event::Frames { conn: id, data, count });
        }
    }
}
