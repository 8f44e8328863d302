//! One connection's part of the hot path: its QP (on the device pool's SRQ and CQ), its link
//! credits, the fragments copied into the pool's send slots and not yet posted, and a frame being
//! reassembled from fragments. The buffers themselves are the pool's (`pool`).

use rdma_graceful_core::frame::encode_header;
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::link::{self, Credits, Imm};
use crate::pool::Pool;
use crate::qp::Qp;
use crate::SEND_DEPTH;

/// wr_id bit that marks a send; the low bits are the pool's send slot.
pub const SEND_TAG: u64 = 1 << 63;

pub struct Link {
    pub qp: Qp,
    pub credits: Credits,
    /// The size of the peer's receive buffers: no fragment is larger.
    pub fragment: usize,
    /// Sends posted and not yet completed (at most `SEND_DEPTH`, the QP's send queue).
    pub sends_in_flight: u32,
    /// Fragments copied into send slots and not yet posted: (wr_id, sge, imm), in order.
    prepared: Vec<(u64, ibv_sge, u32)>,
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
        Link { qp, credits, fragment, sends_in_flight: 0, prepared: Vec::new(), assembling: None, wants_slot: false }
    }

    fn sq_room(&self) -> bool {
        (self.sends_in_flight as usize + self.prepared.len()) < SEND_DEPTH as usize
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
            self.prepared.push((SEND_TAG | slot as u64, sge, link::fragment_imm(frame_imm, next + 1 < total, grant)));
            next += 1;
        }
        next
    }

    /// Prepares a credit UPDATE if one is due and there is room for it.
    pub fn prepare_update(&mut self, pool: &mut Pool) {
        if !self.credits.wants_update() || !self.sq_room() {
            return;
        }
        let Some(slot) = pool.take_send_slot() else {
            self.wants_slot = true;
            return;
        };
        let grant = self.credits.send_update();
        let sge = pool.fill_send_slot(slot, &[]);
        self.prepared.push((SEND_TAG | slot as u64, sge, link::update_imm(grant)));
    }

    pub fn has_prepared(&self) -> bool {
        !self.prepared.is_empty()
    }

    /// Posts every prepared fragment as one chain (one doorbell). On an error, the slots of the
    /// fragments not posted go back to the pool (the connection is failing).
    pub fn post_prepared(&mut self, pool: &mut Pool) -> Result<(), TransportError> {
        let reqs = std::mem::take(&mut self.prepared);
        let (posted, result) = self.qp.post_sends(&reqs);
        for r in reqs[posted..].iter().rev() {
            pool.put_send_slot((r.0 & !SEND_TAG) as u32);
        }
        self.sends_in_flight += posted as u32;
        result
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
