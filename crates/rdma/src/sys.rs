//! Small OS helpers: non-blocking fds, epoll, an eventfd waker, and errno-carrying errors.

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

/// A failed verbs/rdma-cm call that reports through errno.
pub fn verbs_error(what: &str) -> TransportError {
    let e = std::io::Error::last_os_error();
    TransportError::new(ErrorCode::Io, format!("{what} failed: {e}"))
}

pub struct Epoll(RawFd);

impl Epoll {
    pub fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    pub fn add(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: both fds are open; ev is valid.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as add; an fd that is no longer registered just fails, which is harmless.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms` (-1: forever); returns the tokens that are ready.
    pub fn wait(&self, timeout_ms: i32, out: &mut Vec<u64>) {
        out.clear();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: evs has room for 64 events.
        let n = unsafe { libc::epoll_wait(self.0, evs.as_mut_ptr(), evs.len() as i32, timeout_ms) };
        for ev in evs.iter().take(n.max(0) as usize) {
            out.push(ev.u64);
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}

/// Wakes the reactor from other threads.
pub struct EventFd(RawFd);

impl EventFd {
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    pub fn fd(&self) -> RawFd {
        self.0
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; EAGAIN (counter saturated) still means awake.
        unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }

    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; non-blocking.
        unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.0) };
    }
}
