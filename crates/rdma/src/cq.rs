//! Completion channel and completion queue. The channel's fd becomes readable when an armed CQ
//! gets a completion, so the reactor sleeps in epoll while a connection is idle and polls the CQ
//! in batches when woken: no busy polling.

use std::os::fd::RawFd;
use std::ptr;

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::TransportError;

use crate::ffi::*;
use crate::loader::Lib;
use crate::sys::{rc_result, set_nonblocking, verbs_error};

pub struct CompChannel {
    lib: &'static Lib,
    ch: *mut ibv_comp_channel,
    _live: Live,
}

impl CompChannel {
    pub fn new(lib: &'static Lib, ctx: *mut ibv_context) -> Result<CompChannel, TransportError> {
        // SAFETY: ctx is a live device context.
        let ch = unsafe { (lib.verbs.ibv_create_comp_channel)(ctx) };
        if ch.is_null() {
            return Err(verbs_error("ibv_create_comp_channel"));
        }
        let ch = CompChannel { lib, ch, _live: Live::new(Kind::RdmaCompletionChannels) };
        set_nonblocking(ch.fd());
        Ok(ch)
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: ch is live.
        unsafe { (*self.ch).fd }
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: ch is ours; its CQ was destroyed first (EBUSY otherwise, reported below).
        let rc = unsafe { (self.lib.verbs.ibv_destroy_comp_channel)(self.ch) };
        if rc != 0 {
            crate::report(&format!("ibv_destroy_comp_channel failed: {}", std::io::Error::from_raw_os_error(rc)));
        }
    }
}

pub struct Cq {
    lib: &'static Lib,
    cq: *mut ibv_cq,
    ch: *mut ibv_comp_channel,
    _live: Live,
}

impl Cq {
    pub fn new(
        lib: &'static Lib,
        ctx: *mut ibv_context,
        channel: &CompChannel,
        entries: usize,
    ) -> Result<Cq, TransportError> {
        // SAFETY: ctx and channel are live; the CQ is destroyed before the channel.
        let cq = unsafe { (lib.verbs.ibv_create_cq)(ctx, entries as i32, ptr::null_mut(), channel.ch, 0) };
        if cq.is_null() {
            return Err(verbs_error("ibv_create_cq"));
        }
        let cq = Cq { lib, cq, ch: channel.ch, _live: Live::new(Kind::RdmaCompletionQueues) };
        cq.arm()?;
        Ok(cq)
    }

    pub fn as_ptr(&self) -> *mut ibv_cq {
        self.cq
    }

    /// Asks for one channel event at the next completion.
    pub fn arm(&self) -> Result<(), TransportError> {
        // SAFETY: cq is live; its context's ops table is filled by the provider.
        let rc = unsafe {
            match (*(*self.cq).context).ops.req_notify_cq {
                Some(f) => f(self.cq, 0),
                None => libc::ENOSYS,
            }
        };
        rc_result("ibv_req_notify_cq", rc, rdma_graceful_core::ErrorCode::Io)
    }

    /// Consumes the channel's pending event (non-blocking) and acknowledges it; true when there
    /// was one. One read: the CQ is armed for one event at a time (`arm` follows each), so a second
    /// read would only say EAGAIN. Acknowledged at once so ibv_destroy_cq never waits on us.
    pub fn take_events(&self) -> bool {
        let mut cq: *mut ibv_cq = ptr::null_mut();
        let mut ctx: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: the channel is live and non-blocking; out-parameters are valid.
        if unsafe { (self.lib.verbs.ibv_get_cq_event)(self.ch, &mut cq, &mut ctx) } != 0 {
            return false;
        }
        // SAFETY: acknowledges exactly the event just taken for this (only) CQ on the channel.
        unsafe { (self.lib.verbs.ibv_ack_cq_events)(self.cq, 1) };
        true
    }

    /// Polls up to `wc.len()` completions; Err on a provider failure.
    pub fn poll(&self, wc: &mut [ibv_wc]) -> Result<usize, TransportError> {
        // SAFETY: cq is live; wc has room for wc.len() entries.
        let n = unsafe {
            match (*(*self.cq).context).ops.poll_cq {
                Some(f) => f(self.cq, wc.len() as i32, wc.as_mut_ptr()),
                None => -1,
            }
        };
        if n < 0 {
            return Err(TransportError::new(rdma_graceful_core::ErrorCode::Io, "ibv_poll_cq failed"));
        }
        Ok(n as usize)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: cq is ours; the QP using it was destroyed first and all events were acked.
        let rc = unsafe { (self.lib.verbs.ibv_destroy_cq)(self.cq) };
        if rc != 0 {
            crate::report(&format!("ibv_destroy_cq failed: {}", std::io::Error::from_raw_os_error(rc)));
        }
    }
}
