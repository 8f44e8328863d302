//! Shared receive queue: one per device pool; every connection's QP receives through it, so
//! receive buffers are paid per device, not per connection.

use std::ptr;

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::loader::Lib;
use crate::sys::{rc_result, verbs_error};

pub struct Srq {
    lib: &'static Lib,
    srq: *mut ibv_srq,
    capacity: u32,
    _live: Live,
}

impl Srq {
    /// A queue of up to `max_wr` receives; asks for less (halving, down to `min_wr`) where the
    /// device allows fewer.
    pub fn new(lib: &'static Lib, pd: *mut ibv_pd, max_wr: u32, min_wr: u32) -> Result<Srq, TransportError> {
        let mut wr = max_wr;
        loop {
            let mut attr = ibv_srq_init_attr { srq_context: ptr::null_mut(), max_wr: wr, max_sge: 1, srq_limit: 0 };
            // SAFETY: pd is live; attr is a valid init attribute. The SRQ is destroyed before the PD.
            let srq = unsafe { (lib.verbs.ibv_create_srq)(pd, &mut attr) };
            if !srq.is_null() {
                return Ok(Srq { lib, srq, capacity: wr, _live: Live::new(Kind::RdmaSharedReceiveQueues) });
            }
            if wr / 2 < min_wr {
                return Err(verbs_error("ibv_create_srq"));
            }
            wr /= 2;
        }
    }

    pub fn as_ptr(&self) -> *mut ibv_srq {
        self.srq
    }

    /// How many receives it can hold.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn post_recv(&self, wr_id: u64, sge: ibv_sge) -> Result<(), TransportError> {
        let mut sge = sge;
        let mut wr = ibv_recv_wr { wr_id, next: ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad: *mut ibv_recv_wr = ptr::null_mut();
        // SAFETY: srq is live; wr and sge live across the call (the provider copies them).
        let rc = unsafe {
            match (*(*self.srq).context).ops.post_srq_recv {
                Some(f) => f(self.srq, &mut wr, &mut bad),
                None => libc::ENOSYS,
            }
        };
        rc_result("ibv_post_srq_recv", rc, ErrorCode::Io)
    }
}

impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: srq is ours; every QP attached to it was destroyed first (the pool outlives its
        // connections).
        let rc = unsafe { (self.lib.verbs.ibv_destroy_srq)(self.srq) };
        if rc != 0 {
            crate::report(&format!("ibv_destroy_srq failed: {}", std::io::Error::from_raw_os_error(rc)));
        }
    }
}
