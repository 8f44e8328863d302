//! The RC queue pair of one connection, created through rdma-cm on the connection's CM id so
//! rdma-cm moves it through INIT/RTR/RTS during accept/connect. It receives through its device
//! pool's shared receive queue, whose buffers are posted before any peer can send.

use std::ptr;
use std::rc::Rc;

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::loader::Lib;
use crate::pool::PoolCore;
use crate::sys::{rc_result, verbs_error};

/// Inline data asked for at creation: our small frames (heartbeats, credits, 64 B messages) fit.
/// A device that offers less gets a QP without inline sends.
const INLINE_WANTED: u32 = 256;

/// One send-queue work request: `op` with `sge` (signaled or not, inline or not).
#[derive(Clone, Copy)]
pub struct SendWr {
    pub wr_id: u64,
    pub sge: ibv_sge,
    pub op: WrOp,
    pub signaled: bool,
    pub inline: bool,
}

#[derive(Clone, Copy)]
pub enum WrOp {
    /// SEND_WITH_IMM of `sge`.
    Send { imm: u32 },
    /// RDMA READ of the peer's memory at `remote` (key `rkey`) into `sge`.
    Read { remote: u64, rkey: u32 },
    /// Binds type-2 window `mw` to this QP as key `rkey` over `len` bytes at `addr` of `mr`, for
    /// the peer's remote READ only.
    Bind { mw: *mut ibv_mw, rkey: u32, mr: *mut ibv_mr, addr: u64, len: u64 },
    /// SEND (no payload, no immediate data) that invalidates the peer's window key `rkey` before
    /// the peer sees the message.
    SendInvalidate { rkey: u32 },
}

pub struct Qp {
    lib: &'static Lib,
    /// The CM id the QP hangs off; it outlives the QP (Conn drops its link before its id).
    id: *mut rdma_cm_id,
    qp: *mut ibv_qp,
    /// The largest payload a send may carry inline (copied into the work request at post time:
    /// no registered buffer needed once posted, and no DMA read of one by the device).
    max_inline: u32,
    _live: Live,
    /// The PD, CQ, SRQ and buffers the QP uses: released after the QP is destroyed (Drop body
    /// first, then fields), so none is freed under it.
    _pool: Rc<PoolCore>,
}

impl Qp {
    pub fn new(
        lib: &'static Lib,
        id: *mut rdma_cm_id,
        pool: Rc<PoolCore>,
        send_depth: u32,
    ) -> Result<Qp, TransportError> {
        for inline in [INLINE_WANTED, 0] {
            let mut attr = ibv_qp_init_attr {
                qp_context: ptr::null_mut(),
                send_cq: pool.cq.as_ptr(),
                recv_cq: pool.cq.as_ptr(),
                srq: pool.srq.as_ptr(),
                cap: ibv_qp_cap {
                    max_send_wr: send_depth,
                    max_recv_wr: 0,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: inline,
                },
                qp_type: IBV_QPT_RC,
                sq_sig_all: 0,
            };
            // SAFETY: id, pd, cq and srq are live and belong to the same device context.
            let rc = unsafe { (lib.cm.rdma_create_qp)(id, pool.pd(), &mut attr) };
            if rc != 0 {
                if inline > 0 {
                    continue; // the device offers less inline data: without
                }
                return Err(verbs_error("rdma_create_qp"));
            }
            // SAFETY: rdma_create_qp stored the new QP in id->qp; attr.cap holds what it got.
            let qp = unsafe { (*id).qp };
            let max_inline = attr.cap.max_inline_data;
            return Ok(Qp { lib, id, qp, max_inline, _live: Live::new(Kind::RdmaQueuePairs), _pool: pool });
        }
        unreachable!("the last try returns")
    }

    pub fn lib(&self) -> &'static Lib {
        self.lib
    }

    pub fn max_inline(&self) -> u32 {
        self.max_inline
    }

    pub fn as_ptr(&self) -> *mut ibv_qp {
        self.qp
    }

    pub fn qpn(&self) -> u32 {
        // SAFETY: qp is live.
        unsafe { (*self.qp).qp_num }
    }

    /// Moves the QP to ERR: every outstanding work request completes with a flush error, which
    /// is how a teardown learns that the hardware is done with the buffers. Idempotent.
    pub fn to_error(&self) -> Result<(), TransportError> {
        let mut attr = ibv_qp_attr::state(IBV_QPS_ERR);
        // SAFETY: qp is live; attr is a valid ibv_qp_attr with only qp_state meaningful.
        let rc = unsafe { (self.lib.verbs.ibv_modify_qp)(self.qp, &mut attr, IBV_QP_STATE) };
        rc_result("ibv_modify_qp(ERR)", rc, ErrorCode::Io)
    }

    /// Posts work requests chained into one ibv_post_send (one doorbell). Returns
    /// how many were posted: all, or those before the first the provider refused, with its error.
    pub fn post_sends(&self, reqs: &[SendWr]) -> (usize, Result<(), TransportError>) {
        if reqs.is_empty() {
            return (0, Ok(()));
        }
        let mut sges: Vec<ibv_sge> = reqs.iter().map(|r| r.sge).collect();
        let mut wrs: Vec<ibv_send_wr> = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            let mut wr = ibv_send_wr::zeroed();
            wr.wr_id = r.wr_id;
            wr.sg_list = &mut sges[i];
            wr.num_sge = if r.sge.length == 0 { 0 } else { 1 };
            wr.send_flags = if r.signaled { IBV_SEND_SIGNALED } else { 0 } | if r.inline { IBV_SEND_INLINE } else { 0 };
            match r.op {
                WrOp::Send { imm } => {
                    wr.opcode = IBV_WR_SEND_WITH_IMM;
                    wr.imm_data = imm.to_be();
                }
                WrOp::Read { remote, rkey } => {
                    wr.opcode = IBV_WR_RDMA_READ;
                    wr.rdma_remote_addr = remote;
                    wr.rdma_rkey = rkey;
                }
                WrOp::Bind { mw, rkey, mr, addr, len } => {
                    wr.opcode = IBV_WR_BIND_MW;
                    wr.num_sge = 0;
                    wr.bind_mw = mw;
                    wr.bind_rkey = rkey;
                    wr.bind_mr = mr;
                    wr.bind_addr = addr;
                    wr.bind_length = len;
                    wr.bind_access = IBV_ACCESS_REMOTE_READ as u32;
                }
                WrOp::SendInvalidate { rkey } => {
                    wr.opcode = IBV_WR_SEND_WITH_INV;
                    wr.num_sge = 0;
                    wr.imm_data = rkey; // the union's invalidate_rkey, host order
                }
            }
            wrs.push(wr);
        }
        for i in 1..wrs.len() {
            let next: *mut ibv_send_wr = &mut wrs[i];
            wrs[i - 1].next = next;
        }
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        // SAFETY: as post_recv; the chain and its sges live until the call returns (inline data
        // is copied by the call).
        let rc = unsafe {
            match (*(*self.qp).context).ops.post_send {
                Some(f) => f(self.qp, wrs.as_mut_ptr(), &mut bad),
                None => libc::ENOSYS,
            }
        };
        if rc == 0 {
            return (wrs.len(), Ok(()));
        }
        let done =
            if bad.is_null() { 0 } else { (bad as usize - wrs.as_ptr() as usize) / std::mem::size_of::<ibv_send_wr>() };
        (done, rc_result("ibv_post_send", rc, ErrorCode::ConnectionReset))
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // Normally already in ERR and drained by the connection; this covers the early-exit paths.
        let _ = self.to_error();
        // SAFETY: id is live (dropped after us) and id->qp is this QP; rdma_destroy_qp clears it.
        unsafe { (self.lib.cm.rdma_destroy_qp)(self.id) };
    }
}
