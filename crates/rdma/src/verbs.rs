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

use rdma_graceful_core::frame::encode_header;
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::link::{self, Credits, Imm, Sends};
use crate::pool::Pool;
use crate::qp::{Qp, SendWr};
use crate::SEND_DEPTH;

/// wr_id bit that marks a send: bits 32..62 hold its sequence number (mod 2^30), the low 32 bits
/// its pool send slot, or `NO_SLOT` (an inline send gave its slot back when posted).
pub const SEND_TAG: u64 = 1 << 63;
pub const NO_SLOT: u32 = u32::MAX;

/// The send slot a send's `wr_id` names (`NO_SLOT` for an inline send).
pub fn slot_of(wr_id: u64) -> u32 {
    wr_id as u32
}

/// A fragment copied into a send slot, waiting to be posted.
struct Prepared {
    slot: u32,
    sge: ibv_sge,
    imm: u32,
    /// Small enough to go inline.
    inline: bool,
}

pub struct Link {
    pub qp: Qp,
    pub credits: Credits,
    /// The size of the peer's receive buffers: no fragment is larger.
    pub fragment: usize,
    /// Sends posted and known complete (at most `SEND_DEPTH` in flight, the QP's send queue).
    sends: Sends,
    /// Fragments copied into send slots and not yet posted, in order.
    prepared: Vec<Prepared>,
    /// The payload so far of a frame whose first fragments arrived.
    assembling: Option<Vec<u8>>,
    /// Something (a fragment or an UPDATE) found no free send slot in the pool: the connection
    /// must be pumped again when a slot comes back, since no completion of its own may come.
    pub wants_slot: bool,
}

/// What a received message was.
pub enum Received {
    /// The last (or only) fragment of a frame: the frame was appended to the batch.
    Frame,
    /// A fragment with more to come, or a credit update.
    Nothing,
}

impl Link {
    pub fn new(qp: Qp, credits: Credits, fragment: usize) -> Link {
        Link {
            qp,
            credits,
            fragment,
            sends: Sends::default(),
            prepared: Vec::new(),
            assembling: None,
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
            self.prepared.push(Prepared { slot, sge, imm, inline: chunk.len() <= self.qp.max_inline() as usize });
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
        self.prepared.push(Prepared { slot, sge, imm: link::update_imm(grant), inline: true });
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
        let plan = self.sends.plan(prepared.len(), |i| closing || !prepared[i].inline);
        let reqs: Vec<SendWr> = prepared
            .iter()
            .zip(&plan)
            .map(|(p, &(seq, signaled))| {
                let slot = if p.inline { NO_SLOT } else { p.slot };
                SendWr {
                    wr_id: SEND_TAG | (seq << 32) | slot as u64,
                    sge: p.sge,
                    imm: p.imm,
                    signaled,
                    inline: p.inline,
                }
            })
            .collect();
        let (posted, result) = self.qp.post_sends(&reqs);
        for (i, p) in prepared.iter().enumerate().rev() {
            if i >= posted || p.inline {
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
        let wr =
            SendWr { wr_id: SEND_TAG | (plan[0].0 << 32) | NO_SLOT as u64, sge, imm: 0, signaled: true, inline: true };
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
        if w.wc_flags & IBV_WC_WITH_IMM == 0 {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                "peer sent a message without immediate data (not an rdma-graceful frame)",
            ));
        }
        let imm = link::parse(u32::from_be(w.imm_data))?;
        pool.with_received(buf, w.byte_len as usize, |data| self.take(imm, data, local_max, frames))
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
