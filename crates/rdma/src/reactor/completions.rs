//! Completions and device async events: frames out of the CQ (one `Frames` event per poll),
//! send slots back, failures taking the connection down.

use super::*;

impl Reactor {
    pub(super) fn on_device_ready(&mut self, token: u64) {
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

    /// Takes everything the connection's CQ holds (setup and teardown paths).
    pub(super) fn on_cq_ready_all(&mut self, id: ConnId) {
        let mut unbounded = usize::MAX;
        self.on_cq_ready(id, &mut unbounded);
    }

    /// Takes what the connection's CQ holds, at most `budget` bytes of frames (what is left is
    /// taken on the next turn: `more_cq` and a wake, since no channel event will come for it).
    pub(super) fn on_cq_ready(&mut self, id: ConnId, budget: &mut usize) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let Some(res) = c.res.as_mut() else { return };
        let draining = matches!(c.phase, Phase::Draining { .. });
        let early = matches!(c.phase, Phase::Accepting | Phase::Connecting);
        let (mut out, mut data) = (Vec::new(), Vec::new());
        let polled = res.poll(!draining, &mut out, &mut data, *budget);
        *budget = budget.saturating_sub(data.len());
        let mut failure: Option<TransportError> = None;
        let mut kept = data.len();
        let mut count = 0u32;
        for comp in out {
            match comp {
                Completed::Received if failure.is_none() => count += 1,
                Completed::Received | Completed::Sent => {}
                // The first failure is the cause; flushes that follow it are its consequence.
                Completed::Failed { error, at } => {
                    if failure.is_none() && !draining {
                        failure = Some(error);
                        kept = at;
                    }
                }
            }
        }
        let more = match polled {
            Ok(more) => more,
            Err(e) => {
                failure.get_or_insert(e);
                false
            }
        };
        data.truncate(kept);
        let deliver = matches!(c.phase, Phase::Open | Phase::Closing | Phase::Draining { deliver: true, .. });
        if count > 0 && early {
            // Frames that arrived before ESTABLISHED was reported (the peer's QP reaches RTS first).
            c.early.extend_from_slice(&data);
            c.early_count += count;
        }
        let setup = c.is_setup();
        if count > 0 && deliver {
            self.emit(Event::Frames { conn: id, data, count });
        }
        if more && failure.is_none() {
            self.more_cq.push(id);
            self.poller.wake();
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
}
