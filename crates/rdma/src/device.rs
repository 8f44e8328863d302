//! The device context a connection runs on. librdmacm opens one `ibv_context` per RDMA device and
//! owns it (it closes them itself); a `Device` is our handle on one such context while at least
//! one of our connections uses it: it counts as a live device and reads the context's async event
//! fd, which is where QP fatal errors arrive.

use std::os::fd::RawFd;

use rdma_graceful_core::counters::{Kind, Live};

use crate::ffi::*;
use crate::loader::{c_text, Lib};

pub struct Device {
    lib: &'static Lib,
    ctx: *mut ibv_context,
    _live: Live,
}

/// One async event, copied out of the library before it is acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct AsyncEvent {
    pub kind: u32,
    /// The QP or CQ pointer the event is about (as an address), when it is about one.
    pub element: usize,
}

impl Device {
    /// Wraps a context that librdmacm opened (`rdma_cm_id.verbs`) and makes its async fd
    /// non-blocking so the reactor can read it until EAGAIN.
    pub fn new(lib: &'static Lib, ctx: *mut ibv_context) -> Device {
        let dev = Device { lib, ctx, _live: Live::new(Kind::RdmaDevices) };
        crate::sys::set_nonblocking(dev.async_fd());
        dev
    }

    pub fn lib(&self) -> &'static Lib {
        self.lib
    }

    pub fn ctx(&self) -> *mut ibv_context {
        self.ctx
    }

    pub fn async_fd(&self) -> RawFd {
        // SAFETY: ctx is a live context for as long as librdmacm has the device open.
        unsafe { (*self.ctx).async_fd }
    }

    /// Reads every pending async event, acknowledging each at once (ibv_destroy_qp waits for
    /// acknowledgement of the QP's events, so none may be held).
    pub fn read_async_events(&self) -> Vec<AsyncEvent> {
        let mut out = Vec::new();
        loop {
            let mut ev = ibv_async_event { element: std::ptr::null_mut(), event_type: 0 };
            // SAFETY: ctx is live; ev is a valid out-parameter. The fd is non-blocking.
            let rc = unsafe { (self.lib.verbs.ibv_get_async_event)(self.ctx, &mut ev) };
            if rc != 0 {
                break;
            }
            out.push(AsyncEvent { kind: ev.event_type, element: ev.element as usize });
            // SAFETY: ev came from ibv_get_async_event and is acknowledged exactly once.
            unsafe { (self.lib.verbs.ibv_ack_async_event)(&mut ev) };
        }
        out
    }

    pub fn event_name(&self, kind: u32) -> String {
        // SAFETY: returns a static string for any value.
        c_text(unsafe { (self.lib.verbs.ibv_event_type_str)(kind) })
    }
}

/// How many RDMA devices libibverbs sees, or why none can be listed.
pub fn count_devices(lib: &Lib) -> Result<usize, String> {
    let mut n: std::ffi::c_int = 0;
    // SAFETY: n is a valid out-parameter; the list is freed below.
    let list = unsafe { (lib.verbs.ibv_get_device_list)(&mut n) };
    if list.is_null() {
        return Err(format!(
            "no RDMA device found: ibv_get_device_list failed ({}); the kernel has no RDMA support loaded",
            crate::loader::errno_text()
        ));
    }
    // SAFETY: list came from ibv_get_device_list.
    unsafe { (lib.verbs.ibv_free_device_list)(list) };
    Ok(n.max(0) as usize)
}
