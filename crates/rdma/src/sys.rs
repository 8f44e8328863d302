//! Small OS helpers: non-blocking fds and errno-carrying errors (epoll lives in the core's `poll`).

use std::os::fd::RawFd;

use rdma_graceful_core::{ErrorCode, TransportError};

pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we were handed by the library; failure leaves it blocking, which the
    // caller would notice as a stall, so report it.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            crate::report(&format!("cannot make fd {fd} non-blocking: {}", std::io::Error::last_os_error()));
        }
    }
}

/// A verbs call that returns its error number (0: success), as a typed error.
pub fn rc_result(what: &str, rc: i32, code: ErrorCode) -> Result<(), TransportError> {
    if rc == 0 {
        return Ok(());
    }
    Err(TransportError::new(code, format!("{what} failed: {}", std::io::Error::from_raw_os_error(rc))))
}

/// A failed verbs/rdma-cm call that reports through errno.
pub fn verbs_error(what: &str) -> TransportError {
    let e = std::io::Error::last_os_error();
    TransportError::new(ErrorCode::Io, format!("{what} failed: {e}"))
}
