//! The verbs resources of one connection and its hot path: pre-registered send and receive pools,
//! receives posted before the peer may send, SEND_WITH_IMM carrying the frame header as immediate
//! data, and batched CQ polling when the completion channel fires.
//!
//! Field order is the teardown order (Rust drops fields in declaration order): QP, CQ, completion
//! channel, MRs, PD, then our reference on the device. The connection moves the QP to ERR and
//! drains the flush completions before it drops this.

use std::rc::Rc;

use rdma_graceful_core::frame::{encode_header, parse_imm};
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::cm::CmId;
use crate::cq::{CompChannel, Cq};
use crate::device::Device;
use crate::ffi::*;
use crate::loader::{c_text, Lib};
use crate::mr::Mr;
use crate::pd::Pd;
use crate::qp::Qp;
use crate::{RECV_DEPTH, SEND_DEPTH};

/// wr_id bit that marks a send; the low bits are the pool slot.
const SEND_TAG: u64 = 1 << 63;
/// Completions taken per poll call.
const POLL_BATCH: usize = 32;

pub struct Resources {
    pub qp: Qp,
    pub cq: Cq,
    pub channel: CompChannel,
    recv: Mr,
    send: Mr,
    _pd: Pd,
    pub device: Rc<Device>,
    lib: &'static Lib,
    free_send: Vec<usize>,
    /// Frames copied into send slots and not yet posted: (wr_id, sge, imm), in order.
    prepared: Vec<(u64, ibv_sge, u32)>,
    /// Receives posted and not yet completed.
    pub recvs_posted: usize,
    /// Sends posted and not yet completed.
    pub sends_in_flight: usize,
}

/// What one completion meant, already translated.
pub enum Completed {
    /// A message arrived and was appended to the frames buffer (header and payload, wire format).
    Received,
    /// A send finished (the peer's hardware acknowledged it).
    Sent,
    /// A message arrived that is not a frame, or a work request failed (a flush included: the QP
    /// is in ERR). `at`: the length of the frames buffer then (what arrived before it).
    Failed { error: TransportError, at: usize },
}

impl Resources {
    /// Creates every resource on the id's device and posts all receives, so that the QP can
    /// receive the moment rdma-cm moves it to RTR during accept/connect.
    pub fn new(
        lib: &'static Lib,
        id: &CmId,
        device: Rc<Device>,
        max_payload: u32,
    ) -> Result<Resources, TransportError> {
        let ctx = device.ctx();
        let pd = Pd::new(lib, ctx)?;
        let channel = CompChannel::new(lib, ctx)?;
        let cq = Cq::new(lib, ctx, &channel, (RECV_DEPTH + SEND_DEPTH) as usize)?;
        let recv = Mr::new(lib, pd.as_ptr(), max_payload as usize, RECV_DEPTH as usize)?;
        let send = Mr::new(lib, pd.as_ptr(), max_payload as usize, SEND_DEPTH as usize)?;
        let qp = Qp::new(lib, id.as_ptr(), pd.as_ptr(), cq.as_ptr(), SEND_DEPTH, RECV_DEPTH)?;
        let mut r = Resources {
            qp,
            cq,
            channel,
            recv,
            send,
            _pd: pd,
            device,
            lib,
            free_send: (0..SEND_DEPTH as usize).rev().collect(),
            prepared: Vec::new(),
            recvs_posted: 0,
            sends_in_flight: 0,
        };
        for slot in 0..r.recv.slots() {
            r.post_recv(slot)?;
        }
        Ok(r)
    }

    fn post_recv(&mut self, slot: usize) -> Result<(), TransportError> {
        self.qp.post_recv(slot as u64, self.recv.sge(slot, self.recv.slot_size()))?;
        self.recvs_posted += 1;
        Ok(())
    }

    /// Copies frames (`(imm, payload)`, at most `free_slots`, each within the slot size, which
    /// the caller checked against the peer's receive buffers) into free registered send slots and
    /// posts them as one chain. Returns how many were posted, and the error that stopped the rest.
    /// Copies a frame (header in `imm`) into a free registered send slot, to be posted by the next
    /// `post_prepared`; false when no slot is free (the caller queues it). The caller checked its
    /// size against the peer's receive buffers.
    pub fn prepare(&mut self, imm: u32, payload: &[u8]) -> bool {
        let Some(slot) = self.free_send.pop() else { return false };
        let len = payload.len().min(self.send.slot_size());
        self.send.slot_mut(slot)[..len].copy_from_slice(&payload[..len]);
        self.prepared.push((SEND_TAG | slot as u64, self.send.sge(slot, len), imm));
        true
    }

    /// Frames prepared and not yet posted.
    pub fn has_prepared(&self) -> bool {
        !self.prepared.is_empty()
    }

    /// Posts every prepared frame as one chain (one doorbell). Returns the error that stopped the
    /// chain, if any; the slots of frames not posted go back to the pool (the connection is failing).
    pub fn post_prepared(&mut self) -> Result<(), TransportError> {
        let reqs = std::mem::take(&mut self.prepared);
        let (posted, result) = self.qp.post_sends(&reqs);
        for r in reqs[posted..].iter().rev() {
            self.free_send.push((r.0 & !SEND_TAG) as usize);
        }
        self.sends_in_flight += posted;
        result
    }

    /// Consumes the completion-channel event, re-arms the CQ, then polls it in batches until it is
    /// empty (Ok(false)) or `budget` bytes of frames were taken (Ok(true): more may be waiting,
    /// and no channel event will say so). Arming before polling means a completion that lands
    /// during the poll still wakes us. Received frames go straight from their registered buffer
    /// to `frames`, which is then re-posted, unless `repost` is false (tearing down).
    pub fn poll(
        &mut self,
        repost: bool,
        out: &mut Vec<Completed>,
        frames: &mut Vec<u8>,
        budget: usize,
    ) -> Result<bool, TransportError> {
        if self.cq.take_events() {
            self.cq.arm()?;
        }
        let start = frames.len();
        let mut wc = [ibv_wc {
            wr_id: 0,
            status: 0,
            opcode: 0,
            vendor_err: 0,
            byte_len: 0,
            imm_data: 0,
            qp_num: 0,
            src_qp: 0,
            wc_flags: 0,
            pkey_index: 0,
            slid: 0,
            sl: 0,
            dlid_path_bits: 0,
        }; POLL_BATCH];
        loop {
            let n = self.cq.poll(&mut wc)?;
            for w in &wc[..n] {
                let c = self.complete(w, repost, frames)?;
                out.push(c);
            }
            if n < POLL_BATCH {
                return Ok(false);
            }
            if frames.len() - start >= budget {
                return Ok(true);
            }
        }
    }

    fn complete(&mut self, w: &ibv_wc, repost: bool, frames: &mut Vec<u8>) -> Result<Completed, TransportError> {
        let is_send = w.wr_id & SEND_TAG != 0;
        let slot = (w.wr_id & !SEND_TAG) as usize;
        if is_send {
            self.sends_in_flight = self.sends_in_flight.saturating_sub(1);
            self.free_send.push(slot);
        } else {
            self.recvs_posted = self.recvs_posted.saturating_sub(1);
        }
        if w.status != IBV_WC_SUCCESS {
            return Ok(Completed::Failed { error: self.wc_error(w, is_send), at: frames.len() });
        }
        if is_send {
            return Ok(Completed::Sent);
        }
        let header = if w.wc_flags & IBV_WC_WITH_IMM == 0 {
            Err(TransportError::new(
                ErrorCode::MalformedFrame,
                "peer sent a message without immediate data (not an rdma-graceful frame)",
            ))
        } else {
            parse_imm(u32::from_be(w.imm_data))
        };
        let result = match header {
            Ok((kind, credits)) => {
                let len = (w.byte_len as usize).min(self.recv.slot_size());
                frames.extend_from_slice(&encode_header(kind, credits, len as u32));
                frames.extend_from_slice(&self.recv.slot(slot)[..len]);
                Completed::Received
            }
            Err(error) => Completed::Failed { error, at: frames.len() },
        };
        if repost {
            self.post_recv(slot)?;
        }
        Ok(result)
    }

    fn wc_error(&self, w: &ibv_wc, is_send: bool) -> TransportError {
        // SAFETY: returns a static string for any status.
        let name = c_text(unsafe { (self.lib.verbs.ibv_wc_status_str)(w.status) });
        let op = if is_send { "send" } else { "receive" };
        if w.status == IBV_WC_LOC_LEN_ERR && !is_send {
            return TransportError::new(
                ErrorCode::FrameTooLarge,
                format!("peer sent a message larger than the receive buffer of {} bytes", self.recv.slot_size()),
            );
        }
        let note = if w.status == IBV_WC_WR_FLUSH_ERR { ": the queue pair is in the error state" } else { "" };
        TransportError::new(
            ErrorCode::ConnectionReset,
            format!("{op} completion error: {name} (status {}, vendor error {:#x}){note}", w.status, w.vendor_err),
        )
    }
}
