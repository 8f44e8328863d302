//! One connection's part of the hot path: its QP (on the device pool's SRQ and CQ), its link
//! credits, the fragments copied into the pool's send slots and not yet posted, and a frame being
//! reassembled from fragments. The buffers themselves are the pool's (`pool`).
//!
//! Small fragments go inline (copied into the work request when posted, so their send slot goes
//! back to the pool at once) and unsignaled: no completion, and no wake-up of the process, per
//! small send. A signaled send every `SIGNAL_EVERY` (and every send that holds a slot, and every
//! send of a closing connection) completes with all the unsignaled ones before it: completions of
//! a QP come in order. Each work request carries its sequence number (`wr_id`), so a completion,
//! signaled or a flush, says how many sends are done (`Link::completed`).
//!
//! Large frames go zero-copy (`rndv`): the link keeps our offers the peer has not read yet
//! (`exposed`), and on the receiving side what arrived from the first offer not yet read on
//! (`inbox`): frames behind an offer wait for its READ, so the application gets them in order.

use std::collections::VecDeque;

use rdma_graceful_core::frame::encode_header;
use rdma_graceful_core::transport::SharedPayload;
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::link::{self, Credits, Imm, Sends};
use crate::pool::Pool;
use crate::qp::{Qp, SendWr, WrOp};
use crate::rndv::{self, Descriptor, Memory, Pinned, Window};
use crate::SEND_DEPTH;

/// wr_id bit that marks a send: bits 32..62 hold its sequence number (mod 2^30), the low 32 bits
/// its pool send slot, or `NO_SLOT` (an inline send gave its slot back when posted).
pub const SEND_TAG: u64 = 1 << 63;
/// wr_id bit of the last READ of a transfer (also a send-queue work request, `SEND_TAG` set): its
/// completion means the payload has landed.
pub const READ_TAG: u64 = 1 << 62;
pub const NO_SLOT: u32 = u32::MAX;

/// The send slot a send's `wr_id` names (`NO_SLOT` for an inline send or a READ).
pub fn slot_of(wr_id: u64) -> u32 {
    wr_id as u32
}

/// A work request waiting to be posted: a message copied into a send slot, or a READ of the
/// peer's offered payload into a landing buffer.
struct Prepared {
    slot: u32,
    sge: ibv_sge,
    op: WrOp,
    /// Small enough to go inline.
    inline: bool,
    /// `READ_TAG` on the last READ of an offer (signaled: its completion says it landed), else 0.
    tag: u64,
}

impl Prepared {
    fn send(slot: u32, sge: ibv_sge, imm: u32, inline: bool) -> Prepared {
        Prepared { slot, sge, op: WrOp::Send { imm }, inline, tag: 0 }
    }
}

/// A frame the peer offered (`rndv`): landing buffer registered when it comes near the front.
struct Landing {
    offer: Descriptor,
    pinned: Option<Pinned>,
    /// Bytes whose READ is prepared.
    next: usize,
    landed: bool,
}

/// One of our offers the peer may read.
enum Exposure {
    /// The payload registered for this transfer alone (deregistered when it ends).
    Registered { _pinned: Pinned },
    /// A window of this QP bound over the payload's cached registration. Declared first: the
    /// window is deallocated (unbound) before the registration may go.
    Windowed { window: Window, _region: std::rc::Rc<Pinned> },
}

/// What arrived from the peer, in order, from the first offer whose payload has not landed on.
enum Inbound {
    Offer(Landing),
    Frames(Vec<u8>, u32),
}

/// Frames that may wait behind offers being read (a peer keeps to its lifecycle window, far
/// fewer): beyond it, the peer is flooding.
const MAX_BEHIND: u32 = 1024;

/// Landing buffers registered at once per connection: always the one being read and the next,
/// more while they total under `LANDING_BYTES_AHEAD` (medium messages keep several READs in
/// flight). A peer's offers cost us at most 2 x maxMessageSize or that many bytes, however many
/// it sends.
const LANDINGS_AHEAD: usize = 2;
const LANDING_BYTES_AHEAD: usize = 8 << 20;

pub struct Link {
    /// Our offers the peer has not reported read, oldest first: each keeps the caller's buffer
    /// registered for the peer's READ, and alive. Declared (so dropped) before the QP: a bound
    /// window holds a reference on its QP, and Soft-RoCE's destroy_qp waits for it (the loop
    /// stood still ~50 s); deallocating the windows first unbinds them. Nothing of ours reads or
    /// writes these buffers (only the peer, through a QP that is in ERR and drained by then).
    exposed: VecDeque<Exposure>,
    /// Windows of this QP not bound now (their last key invalidated by the peer's DONE).
    windows: Vec<Window>,
    pub qp: Qp,
    pub credits: Credits,
    /// The size of the peer's receive buffers: no fragment is larger.
    pub fragment: usize,
    /// Zero-copy with this peer: frames of this many bytes and more are offered (0: never; both
    /// sides offered rendezvous in their Hello otherwise).
    pub threshold: usize,
    /// Whether the peer may send us offers (both Hellos offered rendezvous).
    pub takes_offers: bool,
    /// Sends posted and known complete (at most `SEND_DEPTH` in flight, the QP's send queue).
    sends: Sends,
    /// Work requests prepared and not yet posted, in order.
    prepared: Vec<Prepared>,
    /// The payload so far of a frame whose first fragments arrived.
    assembling: Option<Vec<u8>>,
    /// Offers of the peer not yet landed and the frames that came behind them.
    inbox: VecDeque<Inbound>,
    /// Offers landed and not yet reported to the peer, in order: DONE (None) or, for a window's
    /// offer, SEND_WITH_INV of its key (Some).
    dones: VecDeque<Option<u32>>,
    /// The last offer the peer sent (`RdmaTransport::last_offer`, for tests of its key's life).
    last_offer: Option<Descriptor>,
    /// The landing buffer of a `probe_read`, kept until the QP is gone.
    probe: Option<Pinned>,
    /// Something (a fragment or an UPDATE) found no free send slot in the pool: the connection
    /// must be pumped again when a slot comes back, since no completion of its own may come.
    pub wants_slot: bool,
}

/// What a received message was.
pub enum Received {
    /// The last (or only) fragment of a frame: the frame was appended to the batch.
    Frame,
    /// A fragment with more to come, a credit update, an offer, or a frame behind an offer.
    Nothing,
    /// The peer read `count` more of our offers: their buffers are let go.
    Sent(u32),
}

/// What `Link::offer` did with a frame.
pub enum Offered {
    /// The descriptor is prepared; the payload stays registered until the peer's DONE.
    Yes,
    /// No credit, send-queue room, slot or exposure left: try again later.
    Later(SharedPayload),
    /// It cannot go zero-copy (the registration failed): send it as fragments.
    Never(SharedPayload),
}

impl Link {
    pub fn new(qp: Qp, credits: Credits, fragment: usize) -> Link {
        Link {
            qp,
            credits,
            fragment,
            threshold: 0,
            takes_offers: false,
            sends: Sends::default(),
            prepared: Vec::new(),
            assembling: None,
            exposed: VecDeque::new(),
            windows: Vec::new(),
            inbox: VecDeque::new(),
            dones: VecDeque::new(),
            last_offer: None,
            probe: None,
            wants_slot: false,
        }
    }

    /// Sends posted and not known complete.
    pub fn sends_in_flight(&self) -> u32 {
        self.sends.in_flight()
    }

    /// A completion (signaled, or a flush) of send `wr_id`.
    pub fn completed(&mut self, wr_id: u64) {
        self.sends.completed((wr_id >> 32) & link::SEQ_MASK);
    }

    fn sq_room(&self) -> bool {
        (self.sends_in_flight() as usize + self.prepared.len()) < SEND_DEPTH as usize
    }

    /// Copies fragments `next..` of a frame (header word `frame_imm`) into free send slots, as
    /// many as credits, the QP's send queue and the pool's slots allow. Returns the next fragment
    /// to send: the frame is all prepared when it equals `link::fragments(len, self.fragment)`.
    pub fn prepare(&mut self, pool: &mut Pool, frame_imm: u32, payload: &[u8], mut next: usize) -> usize {
        let total = link::fragments(payload.len(), self.fragment);
        while next < total && self.credits.can_send_fragment() && self.sq_room() {
            let Some(slot) = pool.take_send_slot() else {
                self.wants_slot = true;
                break;
            };
            let start = next * self.fragment;
            let chunk = &payload[start.min(payload.len())..(start + self.fragment).min(payload.len())];
            let sge = pool.fill_send_slot(slot, chunk);
            let grant = self.credits.send_fragment();
            let imm = link::fragment_imm(frame_imm, next + 1 < total, grant);
            let inline = chunk.len() <= self.qp.max_inline() as usize;
            self.prepared.push(Prepared::send(slot, sge, imm, inline));
            next += 1;
        }
        next
    }

    /// Prepares a credit UPDATE if one is due and there is room for it.
    pub fn prepare_update(&mut self, pool: &mut Pool) {
        if self.credits.wants_update() {
            self.push_update(pool);
        }
    }

    /// Prepares an UPDATE (whatever it grants, maybe nothing) for a closing connection whose last
    /// sends went unsignaled: posted signaled, its completion says they are all done. Waits, as
    /// any send, for a credit and a slot.
    pub fn prepare_marker(&mut self, pool: &mut Pool) {
        if self.sends.unsignaled_tail() && self.prepared.is_empty() && self.credits.can_send_update() {
            self.push_update(pool);
        }
    }

    fn push_update(&mut self, pool: &mut Pool) {
        if !self.sq_room() {
            return;
        }
        let Some(slot) = pool.take_send_slot() else {
            self.wants_slot = true;
            return;
        };
        let grant = self.credits.send_update();
        let sge = pool.fill_send_slot(slot, &[]);
        self.prepared.push(Prepared::send(slot, sge, link::update_imm(grant), true));
    }

    /// Whether a frame of `len` bytes goes zero-copy to this peer.
    pub fn zero_copy(&self, len: usize) -> bool {
        self.threshold > 0 && len >= self.threshold
    }

    /// No transfer in either direction is under way: nothing offered unread, nothing being read,
    /// no DONE owed. A local close waits for this before it disconnects.
    pub fn settled(&self) -> bool {
        self.exposed.is_empty() && self.inbox.is_empty() && self.dones.is_empty()
    }

    /// Offers a frame (header word `frame_imm`) zero-copy: binds a window over the payload's cached
    /// registration (or registers it for this transfer where the device has no windows) and
    /// prepares its descriptor, as credits, the send queue and a slot allow.
    pub fn offer(&mut self, pool: &mut Pool, frame_imm: u32, payload: SharedPayload) -> Offered {
        let sq_free = SEND_DEPTH as usize - (self.sends.in_flight() as usize + self.prepared.len());
        if self.exposed.len() >= rndv::MAX_EXPOSED || !self.credits.can_send_fragment() || sq_free < 2 {
            return Offered::Later(payload);
        }
        let Some(slot) = pool.take_send_slot() else {
            self.wants_slot = true;
            return Offered::Later(payload);
        };
        let (exposure, addr, len, rkey, window) = match self.expose(pool, payload) {
            Ok(e) => e,
            Err((payload, e)) => {
                pool.put_send_slot(slot);
                crate::report(&format!("zero-copy send falls back to a copy: {e}"));
                return Offered::Never(payload);
            }
        };
        let (kind, credits) = ((frame_imm >> 24) as u8, frame_imm as u16);
        let offer = Descriptor { kind, credits, len: len as u32, addr, rkey, window };
        let sge = pool.fill_send_slot(slot, &offer.encode());
        let imm = link::offer_imm(self.credits.send_control(link::MAX_UPDATE));
        let inline = rndv::DESCRIPTOR_LEN <= self.qp.max_inline() as usize;
        self.prepared.push(Prepared::send(slot, sge, imm, inline));
        self.exposed.push_back(exposure);
        Offered::Yes
    }

    /// Grants the peer READ of `payload`: a window bound over its cached registration (the bind
    /// prepared here, before the descriptor), else a registration of its own. Returns the
    /// exposure, address, length, rkey and whether it is a window's.
    #[allow(clippy::type_complexity)]
    fn expose(
        &mut self,
        pool: &mut Pool,
        payload: SharedPayload,
    ) -> Result<(Exposure, u64, usize, u32, bool), (SharedPayload, TransportError)> {
        let (lib, pd) = (self.qp.lib(), pool.core.pd());
        let window = if pool.no_windows {
            None
        } else {
            let w = self.windows.pop().or_else(|| Window::alloc(pd, pool.core.device.ctx()));
            pool.no_windows = w.is_none();
            w
        };
        let Some(mut window) = window else {
            let pinned = Pinned::expose(lib, pd, payload)?;
            let (addr, len, rkey) = (pinned.addr(), pinned.len(), pinned.rkey());
            return Ok((Exposure::Registered { _pinned: pinned }, addr, len, rkey, false));
        };
        let region = match pool.cache.get(lib, pd, payload) {
            Ok(r) => r,
            Err(e) => {
                self.windows.push(window);
                return Err(e);
            }
        };
        let (addr, len, rkey) = (region.addr(), region.len(), window.rebind_key());
        let op = WrOp::Bind { mw: window.as_ptr(), rkey, mr: region.as_mr(), addr, len: len as u64 };
        self.prepared.push(Prepared { slot: NO_SLOT, sge: ibv_sge::default(), op, inline: false, tag: 0 });
        Ok((Exposure::Windowed { window, _region: region }, addr, len, rkey, true))
    }

    /// The peer's SEND_WITH_INV: it read our oldest offer, a window's, and its device invalidated
    /// the window's key before we saw this. The window is free for another transfer.
    fn invalidated(&mut self, rkey: u32, len: u32) -> Result<Received, TransportError> {
        match self.exposed.front() {
            Some(Exposure::Windowed { window, .. }) if window.rkey == rkey && len == 0 => {
                if let Some(Exposure::Windowed { window, .. }) = self.exposed.pop_front() {
                    self.windows.push(window);
                }
                Ok(Received::Sent(1))
            }
            _ => Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer invalidated key {rkey:#x}, which is not that of our oldest offer"),
            )),
        }
    }

    /// Prepares the READs of offered payloads (registering their landing buffers as they near the
    /// front) and a DONE for those landed, as the send queue, credits and slots allow.
    pub fn prepare_transfers(&mut self, pool: &mut Pool) -> Result<(), TransportError> {
        let (mut registered, mut bytes) = (0, 0);
        for item in self.inbox.iter_mut() {
            let Inbound::Offer(l) = item else { continue };
            if l.pinned.is_none() {
                if registered >= LANDINGS_AHEAD && bytes + l.offer.len as usize > LANDING_BYTES_AHEAD {
                    break;
                }
                l.pinned = Some(Pinned::landing(self.qp.lib(), pool.core.pd(), l.offer.len as usize)?);
            }
            registered += 1;
            bytes += l.offer.len as usize;
            let pinned = l.pinned.as_ref().expect("registered above");
            let len = l.offer.len as usize;
            while l.next < len && (self.sends.in_flight() as usize + self.prepared.len()) < SEND_DEPTH as usize {
                let n = rndv::READ_CHUNK.min(len - l.next);
                let sge = ibv_sge { addr: pinned.addr() + l.next as u64, length: n as u32, lkey: pinned.lkey() };
                let op = WrOp::Read { remote: l.offer.addr + l.next as u64, rkey: l.offer.rkey };
                let tag = if l.next + n == len { READ_TAG } else { 0 };
                self.prepared.push(Prepared { slot: NO_SLOT, sge, op, inline: false, tag });
                l.next += n;
            }
        }
        // DONEs, no payload: a window's offer each by SEND_WITH_INV of its key, the others counted.
        while let Some(&front) = self.dones.front() {
            if !self.credits.can_send_fragment() || !self.sq_room() {
                break;
            }
            self.credits.send_control(0);
            let op = match front {
                Some(rkey) => {
                    self.dones.pop_front();
                    WrOp::SendInvalidate { rkey }
                }
                None => {
                    let count = self.dones.iter().take_while(|d| d.is_none()).count().min(link::MAX_UPDATE as usize);
                    self.dones.drain(..count);
                    WrOp::Send { imm: link::done_imm(count as u32) }
                }
            };
            self.prepared.push(Prepared { slot: NO_SLOT, sge: ibv_sge::default(), op, inline: true, tag: 0 });
        }
        Ok(())
    }

    /// The last offer the peer sent: its address, rkey, length and whether the key is a window's.
    pub fn last_offer(&self) -> Option<(u64, u32, u32, bool)> {
        self.last_offer.map(|o| (o.addr, o.rkey, o.len, o.window))
    }

    /// Posts one signaled READ of `len` bytes at the peer's `addr` with `rkey` (a test's probe of a
    /// key's life): a key the peer revoked fails it, and with it the connection.
    pub fn probe_read(&mut self, pool: &Pool, addr: u64, rkey: u32, len: usize) -> Result<(), TransportError> {
        let landing = Pinned::landing(self.qp.lib(), pool.core.pd(), len)?;
        let sge = ibv_sge { addr: landing.addr(), length: len as u32, lkey: landing.lkey() };
        self.probe = Some(landing);
        let plan = self.sends.plan(1, |_| true);
        let wr = SendWr {
            wr_id: SEND_TAG | (plan[0].0 << 32) | NO_SLOT as u64,
            sge,
            op: WrOp::Read { remote: addr, rkey },
            signaled: true,
            inline: false,
        };
        let (posted, result) = self.qp.post_sends(&[wr]);
        self.sends.posted(&plan, posted);
        result
    }

    /// Posts `n` empty one-fragment frames of `kind` without taking credits, as a peer that ignores
    /// them would (tests of the receiver's credit check).
    pub fn send_ignoring_credits(&mut self, pool: &mut Pool, kind: u8, n: usize) -> Result<(), TransportError> {
        for _ in 0..n.min(SEND_DEPTH as usize - self.sends.in_flight() as usize) {
            let Some(slot) = pool.take_send_slot() else { break };
            let sge = pool.fill_send_slot(slot, &[]);
            let imm = link::fragment_imm(rdma_graceful_core::frame::imm_of(kind, 0), false, 0);
            self.prepared.push(Prepared::send(slot, sge, imm, true));
        }
        self.post_prepared(pool, false)
    }

    /// The last READ of the oldest offer being read completed: its payload is here.
    pub fn landed(&mut self) {
        let first = self.inbox.iter_mut().find_map(|i| match i {
            Inbound::Offer(l) if !l.landed => Some(l),
            _ => None,
        });
        if let Some(l) = first {
            l.landed = true;
            self.dones.push_back(l.offer.window.then_some(l.offer.rkey));
        }
    }

    /// Takes what may be handed out, in order: landed payloads (each a one-frame batch in its own
    /// buffer, no copy) and the frames behind them, up to the first offer still being read.
    pub fn deliverable(&mut self, out: &mut Vec<(Vec<u8>, u32)>) -> Result<(), TransportError> {
        while let Some(front) = self.inbox.front() {
            if matches!(front, Inbound::Offer(l) if !l.landed) {
                break;
            }
            match self.inbox.pop_front() {
                Some(Inbound::Frames(data, count)) => out.push((data, count)),
                Some(Inbound::Offer(l)) => {
                    let Some(Memory::Owned(mut buf)) = l.pinned.and_then(Pinned::release) else {
                        return Err(TransportError::new(ErrorCode::Io, "a landing buffer could not be deregistered"));
                    };
                    buf[..rndv::HEADER_ROOM].copy_from_slice(&encode_header(
                        l.offer.kind,
                        l.offer.credits,
                        l.offer.len,
                    ));
                    out.push((buf, 1));
                }
                None => break,
            }
        }
        Ok(())
    }

    pub fn has_prepared(&self) -> bool {
        !self.prepared.is_empty()
    }

    /// Posts every prepared fragment as one chain (one doorbell). Inline sends give their slot
    /// back at once (the post copied them); a send is signaled when it holds a slot, when
    /// `SIGNAL_EVERY` went unsignaled before it, or when the connection is `closing`. On an error,
    /// the slots of the fragments not posted go back to the pool (the connection is failing).
    pub fn post_prepared(&mut self, pool: &mut Pool, closing: bool) -> Result<(), TransportError> {
        let prepared = std::mem::take(&mut self.prepared);
        let must = |p: &Prepared| match p.op {
            WrOp::Send { .. } | WrOp::SendInvalidate { .. } => closing || !p.inline,
            WrOp::Read { .. } => p.tag != 0,
            WrOp::Bind { .. } => false,
        };
        let plan = self.sends.plan(prepared.len(), |i| must(&prepared[i]));
        let reqs: Vec<SendWr> = prepared
            .iter()
            .zip(&plan)
            .map(|(p, &(seq, signaled))| {
                let slot = if p.inline { NO_SLOT } else { p.slot };
                SendWr {
                    wr_id: SEND_TAG | p.tag | (seq << 32) | slot as u64,
                    sge: p.sge,
                    op: p.op,
                    signaled,
                    inline: p.inline,
                }
            })
            .collect();
        let (posted, result) = self.qp.post_sends(&reqs);
        for (i, p) in prepared.iter().enumerate().rev() {
            if (i >= posted || p.inline) && p.slot != NO_SLOT {
                pool.put_send_slot(p.slot);
            }
        }
        self.sends.posted(&plan, posted);
        result
    }

    /// After the QP went to ERR: sends that completed unsignaled made no completion and no flush
    /// will come for them, so one signaled zero-length send goes after them (the QP flushes it:
    /// the standard drain, as the kernel's ib_drain_sq). Its flush says they are all done.
    pub fn post_drain_marker(&mut self) {
        if !self.sends.unsignaled_tail() {
            return;
        }
        let plan = self.sends.plan(1, |_| true);
        let sge = ibv_sge { addr: 0, length: 0, lkey: 0 };
        let wr = SendWr {
            wr_id: SEND_TAG | (plan[0].0 << 32) | NO_SLOT as u64,
            sge,
            op: WrOp::Send { imm: 0 },
            signaled: true,
            inline: true,
        };
        if let (1, Ok(())) = self.qp.post_sends(&[wr]) {
            self.sends.posted(&plan, 1);
        }
    }

    /// A message of the peer arrived in pool buffer `buf`: credits it carried are taken, a frame it
    /// completes is appended to `frames` (header and payload, wire format). The caller posts the
    /// buffer again and counts it owed (`Credits::consumed`).
    pub fn receive(
        &mut self,
        pool: &Pool,
        buf: u32,
        w: &ibv_wc,
        local_max: u32,
        frames: &mut Vec<u8>,
    ) -> Result<Received, TransportError> {
        let with_inv =
            w.wc_flags & IBV_WC_WITH_INV != 0 || w.wc_flags & (RXE_WC_WITH_INV | IBV_WC_WITH_IMM) == RXE_WC_WITH_INV;
        if with_inv && self.takes_offers {
            return self.invalidated(w.imm_data, w.byte_len);
        }
        if w.wc_flags & IBV_WC_WITH_IMM == 0 {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                "peer sent a message without immediate data (not an rdma-graceful frame)",
            ));
        }
        let imm = link::parse(u32::from_be(w.imm_data))?;
        if self.inbox.is_empty() {
            return pool.with_received(buf, w.byte_len as usize, |data| self.take(imm, data, local_max, frames));
        }
        // Behind an offer still being read: the frame waits in the inbox, in order.
        let mut behind = Vec::new();
        let got = pool.with_received(buf, w.byte_len as usize, |data| self.take(imm, data, local_max, &mut behind))?;
        if !matches!(got, Received::Frame) {
            return Ok(got);
        }
        let waiting: u32 = self.inbox.iter().map(|i| if let Inbound::Frames(_, n) = i { *n } else { 0 }).sum();
        if waiting >= MAX_BEHIND {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer sent more than {MAX_BEHIND} frames behind an offer still being read"),
            ));
        }
        match self.inbox.back_mut() {
            Some(Inbound::Frames(data, count)) => {
                data.extend_from_slice(&behind);
                *count += 1;
            }
            _ => self.inbox.push_back(Inbound::Frames(behind, 1)),
        }
        Ok(Received::Nothing)
    }

    /// What a message's immediate data and payload mean (see `receive`).
    fn take(
        &mut self,
        imm: Imm,
        data: &[u8],
        local_max: u32,
        frames: &mut Vec<u8>,
    ) -> Result<Received, TransportError> {
        match imm {
            Imm::Offer { grant } => {
                self.credits.granted(grant);
                if !self.takes_offers || self.assembling.is_some() {
                    return Err(TransportError::new(
                        ErrorCode::MalformedFrame,
                        "peer sent a zero-copy offer that was not negotiated or inside a fragmented frame",
                    ));
                }
                let offer = Descriptor::decode(data, local_max)?;
                self.last_offer = Some(offer);
                let offers = self.inbox.iter().filter(|i| matches!(i, Inbound::Offer(_))).count();
                if offers >= rndv::MAX_EXPOSED {
                    return Err(TransportError::new(
                        ErrorCode::MalformedFrame,
                        format!("peer has more than {} zero-copy offers outstanding", rndv::MAX_EXPOSED),
                    ));
                }
                self.inbox.push_back(Inbound::Offer(Landing { offer, pinned: None, next: 0, landed: false }));
                Ok(Received::Nothing)
            }
            Imm::Done { count } => {
                let registered = self.exposed.iter().take_while(|e| matches!(e, Exposure::Registered { .. })).count();
                if !data.is_empty() || count as usize > registered {
                    return Err(TransportError::new(
                        ErrorCode::MalformedFrame,
                        format!("peer reported {count} zero-copy offers read; {registered} are outstanding"),
                    ));
                }
                // Deregistered here: the rkey is dead before the caller's buffer is let go.
                self.exposed.drain(..count as usize);
                Ok(Received::Sent(count))
            }
            Imm::Update { grant } => {
                if !data.is_empty() {
                    return Err(TransportError::new(
                        ErrorCode::MalformedFrame,
                        "peer sent a credit update with a payload",
                    ));
                }
                self.credits.granted(grant);
                Ok(Received::Nothing)
            }
            Imm::Fragment { kind, credits, more, grant } => {
                self.credits.granted(grant);
                let so_far = self.assembling.as_ref().map_or(0, |a| a.len());
                if (so_far + data.len()) as u64 > local_max as u64 {
                    return Err(TransportError::new(
                        ErrorCode::FrameTooLarge,
                        format!("peer sent a frame of more than {local_max} bytes (this side's maxMessageSize)"),
                    ));
                }
                match (self.assembling.take(), more) {
                    (None, false) => {
                        frames.extend_from_slice(&encode_header(kind, credits, data.len() as u32));
                        frames.extend_from_slice(data);
                        Ok(Received::Frame)
                    }
                    (Some(mut whole), false) => {
                        whole.extend_from_slice(data);
                        frames.extend_from_slice(&encode_header(kind, credits, whole.len() as u32));
                        frames.extend_from_slice(&whole);
                        Ok(Received::Frame)
                    }
                    (partial, true) => {
                        let mut whole = partial.unwrap_or_default();
                        whole.extend_from_slice(data);
                        self.assembling = Some(whole);
                        Ok(Received::Nothing)
                    }
                }
            }
        }
    }
}

/// A completion's status as a typed error (`is_send`: which side of the QP it was).
pub fn wc_error(lib: &crate::loader::Lib, w: &ibv_wc, is_send: bool) -> TransportError {
    // SAFETY: returns a static string for any status.
    let name = crate::loader::c_text(unsafe { (lib.verbs.ibv_wc_status_str)(w.status) });
    let op = if is_send { "send" } else { "receive" };
    if w.status == IBV_WC_LOC_LEN_ERR && !is_send {
        return TransportError::new(
            ErrorCode::FrameTooLarge,
            format!("peer sent a message larger than the receive buffers of {} bytes", crate::BUFFER_SIZE),
        );
    }
    let note = if w.status == IBV_WC_WR_FLUSH_ERR { ": the queue pair is in the error state" } else { "" };
    TransportError::new(
        ErrorCode::ConnectionReset,
        format!("{op} completion error: {name} (status {}, vendor error {:#x}){note}", w.status, w.vendor_err),
    )
}
