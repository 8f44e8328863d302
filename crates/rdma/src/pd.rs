//! Protection domain: one per connection, so a connection's memory regions and queue pair can
//! only ever be used together, and freeing the connection frees the domain last.

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::TransportError;

use crate::ffi::*;
use crate::loader::Lib;
use crate::sys::verbs_error;

pub struct Pd {
    lib: &'static Lib,
    pd: *mut ibv_pd,
    _live: Live,
}

impl Pd {
    pub fn new(lib: &'static Lib, ctx: *mut ibv_context) -> Result<Pd, TransportError> {
        // SAFETY: ctx is a live device context.
        let pd = unsafe { (lib.verbs.ibv_alloc_pd)(ctx) };
        if pd.is_null() {
            return Err(verbs_error("ibv_alloc_pd"));
        }
        Ok(Pd { lib, pd, _live: Live::new(Kind::RdmaProtectionDomains) })
    }

    pub fn as_ptr(&self) -> *mut ibv_pd {
        self.pd
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: pd is ours; every MR and QP in it was dropped before (field order in Resources).
        let rc = unsafe { (self.lib.verbs.ibv_dealloc_pd)(self.pd) };
        if rc != 0 {
            crate::report(&format!("ibv_dealloc_pd failed: {}", std::io::Error::from_raw_os_error(rc)));
        }
    }
}
