//! A registered buffer: `slots` fixed-size slots in one allocation, registered once with LOCAL
//! access only (the peer can never read or write it; data moves by send/receive). The
//! registration is released before the memory (Drop order inside this type). Registered bytes are
//! counted (`rdmaRegisteredBytes`), and a registration refused for lack of locked memory says so.

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::loader::Lib;
use crate::sys::verbs_error;

pub struct Mr {
    lib: &'static Lib,
    mr: *mut ibv_mr,
    slot_size: usize,
    slots: usize,
    // Freed only after Drop::drop has deregistered it (fields drop after the drop body).
    buf: Box<[u8]>,
    _live: Live,
    _bytes: Live,
}

impl Mr {
    pub fn new(lib: &'static Lib, pd: *mut ibv_pd, slot_size: usize, slots: usize) -> Result<Mr, TransportError> {
        let slot_size = slot_size.max(1);
        let mut buf = vec![0u8; slot_size * slots].into_boxed_slice();
        // SAFETY: buf outlives the registration (deregistered in Drop before buf is freed).
        let mr = unsafe { (lib.verbs.ibv_reg_mr)(pd, buf.as_mut_ptr().cast(), buf.len(), IBV_ACCESS_LOCAL_WRITE) };
        if mr.is_null() {
            return Err(registration_error(buf.len()));
        }
        let bytes = Live::amount(Kind::RdmaRegisteredBytes, buf.len() as i64);
        Ok(Mr { lib, mr, slot_size, slots, buf, _live: Live::new(Kind::RdmaMemoryRegions), _bytes: bytes })
    }

    /// The scatter/gather entry covering the first `len` bytes of `slot`.
    pub fn sge(&self, slot: usize, len: usize) -> ibv_sge {
        debug_assert!(slot < self.slots && len <= self.slot_size);
        // SAFETY: mr is a live registration.
        let lkey = unsafe { (*self.mr).lkey };
        ibv_sge { addr: self.buf.as_ptr() as u64 + (slot * self.slot_size) as u64, length: len as u32, lkey }
    }

    pub fn slot(&self, slot: usize) -> &[u8] {
        &self.buf[slot * self.slot_size..(slot + 1) * self.slot_size]
    }

    pub fn slot_mut(&mut self, slot: usize) -> &mut [u8] {
        &mut self.buf[slot * self.slot_size..(slot + 1) * self.slot_size]
    }
}

/// ibv_reg_mr failed. ENOMEM/EPERM there almost always mean RLIMIT_MEMLOCK: say how much was
/// asked, what is registered already and what the limit is, and how to raise it.
pub fn registration_error(asked: usize) -> TransportError {
    let err = std::io::Error::last_os_error();
    let errno = err.raw_os_error().unwrap_or(0);
    if errno != libc::ENOMEM && errno != libc::EPERM && errno != libc::EAGAIN {
        return verbs_error("ibv_reg_mr");
    }
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: lim is a valid out-parameter.
    let limit = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0 {
        if lim.rlim_cur == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            format!("{} bytes", lim.rlim_cur)
        }
    } else {
        "unknown".to_string()
    };
    let registered = Kind::RdmaRegisteredBytes.get();
    TransportError::new(
        ErrorCode::ResourceLimit,
        format!(
            "cannot register {asked} bytes of buffers with the RDMA device ({err}): this process has \
             {registered} bytes registered and RLIMIT_MEMLOCK (locked memory) is {limit}; raise it to at \
             least {} bytes (ulimit -l, LimitMEMLOCK= in a systemd unit, --ulimit memlock= for docker)",
            registered as u64 + asked as u64
        ),
    )
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: mr is ours and the QP that used it is already destroyed.
        let rc = unsafe { (self.lib.verbs.ibv_dereg_mr)(self.mr) };
        if rc != 0 {
            // The memory may still be pinned by the device: leak it rather than free memory the
            // hardware could still write into.
            crate::report(&format!(
                "ibv_dereg_mr failed: {}; leaking its buffer",
                std::io::Error::from_raw_os_error(rc)
            ));
            std::mem::forget(std::mem::take(&mut self.buf));
        }
    }
}
