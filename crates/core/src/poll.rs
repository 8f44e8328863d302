//! Readiness plumbing shared by both transports: an epoll set, an eventfd that marks "work is
//! pending", and a table of deadlines.
//!
//! A transport owns one `Poller`; its epoll fd is what the Node binding watches with a single
//! `uv_poll` handle (an epoll fd is readable while any fd in its set is ready), so the transport runs
//! on Node's own loop without a thread of its own, and the same transport runs under the small
//! `EventLoop` (below) in Rust tests. Registrations are level-triggered: work left undone because
//! a poll ran out of budget is reported again on the next turn, after Node has run its timers.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::event::Event;

pub const READABLE: u32 = libc::EPOLLIN as u32;
pub const WRITABLE: u32 = libc::EPOLLOUT as u32;

/// An epoll set plus a self-wake eventfd registered in it under token `WAKE`.
pub struct Poller {
    epoll: RawFd,
    wake: RawFd,
}

/// The token of the poller's own eventfd.
pub const WAKE: u64 = u64::MAX;

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain syscalls; each fd is closed on error or in Drop.
        unsafe {
            let epoll = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if epoll < 0 {
                return Err(io::Error::last_os_error());
            }
            let wake = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if wake < 0 {
                let e = io::Error::last_os_error();
                libc::close(epoll);
                return Err(e);
            }
            let p = Poller { epoll, wake };
            p.add(wake, WAKE, READABLE)?;
            Ok(p)
        }
    }

    /// The fd to watch: readable while anything registered here is ready.
    pub fn fd(&self) -> RawFd {
        self.epoll
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interest, u64: token };
        // SAFETY: both fds are open; ev is valid for the call.
        if unsafe { libc::epoll_ctl(self.epoll, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn add(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    pub fn modify(&self, fd: RawFd, token: u64, interest: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Unregisters `fd` (an fd that is not registered, or already closed, is fine).
    pub fn remove(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Makes the poller's fd readable, so the owner polls soon (events queued outside a poll).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; EAGAIN (counter saturated) still means awake.
        unsafe { libc::write(self.wake, (&one as *const u64).cast(), 8) };
    }

    /// Ready (token, events) pairs, at most `out`'s capacity, without blocking (or waiting up to
    /// `timeout_ms`, -1 forever). The wake eventfd is cleared and reported as `WAKE`.
    pub fn ready(&self, timeout_ms: i32, out: &mut Vec<(u64, u32)>) {
        out.clear();
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: evs has room for evs.len() events.
        let n = unsafe { libc::epoll_wait(self.epoll, evs.as_mut_ptr(), evs.len() as i32, timeout_ms) };
        for ev in evs.iter().take(n.max(0) as usize) {
            if ev.u64 == WAKE {
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a valid u64; non-blocking.
                unsafe { libc::read(self.wake, (&mut v as *mut u64).cast(), 8) };
            }
            out.push((ev.u64, ev.events));
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        // SAFETY: we own both fds.
        unsafe {
            libc::close(self.wake);
            libc::close(self.epoll);
        }
    }
}

/// Deadlines keyed by id: the earliest is found in O(log n), so thousands of idle connections cost
/// nothing per poll.
#[derive(Default)]
pub struct Deadlines {
    set: BTreeSet<(Instant, u32)>,
}

impl Deadlines {
    /// Replaces `old` (the id's previous deadline, if any) with `new`.
    pub fn set(&mut self, id: u32, old: Option<Instant>, new: Option<Instant>) {
        if let Some(o) = old {
            self.set.remove(&(o, id));
        }
        if let Some(n) = new {
            self.set.insert((n, id));
        }
    }

    /// Removes the id's deadline, whatever it was (O(n): for rare paths only).
    pub fn clear(&mut self, id: u32) {
        self.set.retain(|&(_, i)| i != id);
    }

    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|(at, _)| *at)
    }

    /// Removes and returns the ids whose deadline is at or before `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.set.first() {
            if at > now {
                break;
            }
            self.set.pop_first();
            due.push(id);
        }
        due
    }
}

/// What a transport needs from whoever drives it: the fd to watch, a poll when it is readable or
/// when the next deadline passes.
pub trait Pollable {
    fn fd(&self) -> RawFd;
    /// Writes what commands gathered since the last call (the caller runs it once per turn of its
    /// loop, after its commands); `poll` flushes first too.
    fn flush(&mut self) {}
    /// Does ready I/O and expired deadlines, bounded, and appends the resulting events to `out`.
    fn poll(&mut self, now: Instant, out: &mut Vec<Event>);
    fn next_deadline(&self) -> Option<Instant>;
}

/// A blocking loop over one transport, for Rust tests and tools (Node drives transports with
/// uv_poll instead): waits for readiness or the next deadline, polls, and hands out events.
pub struct EventLoop<T> {
    pub transport: T,
    queued: Vec<Event>,
}

impl<T: Pollable> EventLoop<T> {
    pub fn new(transport: T) -> EventLoop<T> {
        EventLoop { transport, queued: Vec::new() }
    }

    /// Removes and returns the first event (in arrival order) matching `f`, polling for up to
    /// `timeout`; events that do not match stay queued for later calls.
    pub fn take(&mut self, timeout: Duration, f: impl Fn(&Event) -> bool) -> Option<Event> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.queued.iter().position(&f) {
                return Some(self.queued.remove(i));
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            self.turn(end.min(self.transport.next_deadline().unwrap_or(end)));
        }
    }

    /// Like `take`, but a missing event is a test failure that lists what did arrive.
    pub fn expect(&mut self, what: &str, timeout: Duration, f: impl Fn(&Event) -> bool) -> Event {
        match self.take(timeout, f) {
            Some(e) => e,
            None => panic!("no {what} within {timeout:?}; events so far: {:?}", self.queued),
        }
    }

    /// The next event whatever it is.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        self.take(timeout, |_| true)
    }

    /// Waits until the transport's fd is readable or `until`, then polls once.
    pub fn turn(&mut self, until: Instant) {
        self.transport.flush();
        let ms = until.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd { fd: self.transport.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms.max(1)) };
        self.transport.poll(Instant::now(), &mut self.queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_out_in_order_and_can_be_moved() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.set(1, None, Some(ms(30)));
        d.set(2, None, Some(ms(10)));
        d.set(3, None, Some(ms(20)));
        d.set(2, Some(ms(10)), Some(ms(40)));
        assert_eq!(d.next(), Some(ms(20)));
        assert_eq!(d.expired(ms(30)), vec![3, 1]);
        assert_eq!(d.next(), Some(ms(40)));
        d.set(2, Some(ms(40)), None);
        assert_eq!(d.next(), None);
    }

    #[test]
    fn wake_makes_the_fd_readable_once() {
        let p = Poller::new().unwrap();
        let mut out = Vec::with_capacity(4);
        p.ready(0, &mut out);
        assert!(out.is_empty());
        p.wake();
        p.wake();
        p.ready(0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, WAKE);
        p.ready(0, &mut out);
        assert!(out.is_empty(), "the wake is consumed by the poll that reported it");
    }
}
