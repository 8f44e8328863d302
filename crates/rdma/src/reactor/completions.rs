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
                let err = TransportError::new(ErrorCode::ConnectionReset, format!("rdma async event on the connection to {}: {name}", c.peer));
                if c.is_setup() {
                    self.fail_setup(id, err);
                } else if !matches!(c.phase, Phase::Draining { .. }) {
                    self.teardown(id, Some(err), false);
                }
            }
        }
    }


    pub(super) fn on_cq_ready(&mut self, id: ConnId) {
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


}
