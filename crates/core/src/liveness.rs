//! Heartbeats and silence deadlines of every watched connection of a transport, in one sweep per
//! tick: the cost of an idle connection is a few comparisons a tick and its heartbeat's syscalls,
//! not a JS timer and a protocol step per connection end (issue 23).
//!
//! `Liveness` wraps a transport and passes every command and event through. The protocol (in JS)
//! hands a connection over once its HELLOs are exchanged (`watch`: the heartbeat kind, the
//! interval, the silence timeout); from then on the sweep
//! - sends a heartbeat when nothing was sent for the interval (repeating the credits field of the
//!   connection's last frame, so it grants nothing new: the protocol's own frames do that);
//! - takes in the peer's heartbeats itself (an empty frame of that kind repeating the last credits
//!   field seen: it tells the protocol nothing but "alive"), so they never reach JS;
//! - reports `Event::Silent` when nothing at all came for the timeout; the protocol then goes DOWN.
//!
//! A busy process judges fairly: the time its loop did not run (a tick that ran later than
//! scheduled) is not counted against the peer, and before a connection is reported silent the
//! transport is polled again for what it already holds. A frozen peer is judged on time, since
//! then our loop runs on time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::error::TransportError;
use crate::event::Event;
use crate::frame::{parse_header, HEADER_LEN};
use crate::poll::Pollable;
use crate::transport::{ConnId, ConnectOptions, ListenOptions, ListenerId, SharedPayload, Transport};

/// A tick that runs this much later than scheduled counts the excess as the loop's own stall.
const STALL_TOLERANCE: Duration = Duration::from_millis(10);
/// Bounds of the period at which the loop's stalls are sampled while a silence deadline is armed.
const MIN_PROBE: Duration = Duration::from_millis(20);
const MAX_PROBE: Duration = Duration::from_secs(1);
/// A heartbeat may go this fraction of its interval early (so that due ones share a tick).
const HEARTBEAT_EARLY: u32 = 4;
/// Polls of the transport before a connection is reported silent, while they keep finding events.
const PUMPS_BEFORE_JUDGING: usize = 8;

/// What the protocol asks of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// The frame kind of a heartbeat (the transport knows no frame kinds of its own).
    pub heartbeat_kind: u8,
    /// The credits field of the last frame sent on the connection: a heartbeat repeats it (until
    /// a later `send` gives another), so that it grants nothing. A heartbeat carrying any other
    /// value would move the peer's cumulative limit (a 0 would grant it ~65,000 messages).
    pub credits: u16,
    /// Send a heartbeat after this long without sending anything; None: never.
    pub interval: Option<Duration>,
    /// Report `Silent` after this long without receiving anything; None: never.
    pub timeout: Option<Duration>,
}

/// Heartbeats sent and taken in by the sweep for one connection (the protocol counts its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatCounts {
    pub sent: u64,
    pub received: u64,
}

struct Watched {
    opts: WatchOptions,
    last_sent: Instant,
    last_received: Instant,
    /// The stall clock when something was last received (see `silent_for`).
    stalled_at_receive: Duration,
    /// The credits field of the last frame sent and received (a heartbeat repeats it).
    credits_sent: u16,
    credits_received: Option<u16>,
    counts: HeartbeatCounts,
    /// Closed, closing or reported silent: no more heartbeats or judging.
    done: bool,
}

impl Watched {
    /// How long the peer has been silent, less the time our own loop stood still meanwhile.
    fn silent_for(&self, now: Instant, stalled: Duration) -> Duration {
        now.saturating_duration_since(self.last_received).saturating_sub(stalled - self.stalled_at_receive)
    }

    fn silence_deadline(&self, stalled: Duration) -> Option<Instant> {
        self.opts.timeout.map(|t| self.last_received + t + (stalled - self.stalled_at_receive))
    }

    fn heartbeat_due(&self) -> Option<Instant> {
        self.opts.interval.map(|i| self.last_sent + i)
    }

    /// Removes the peer's plain heartbeats from `data` (frames in wire format) in place; returns
    /// how many went. A heartbeat whose credits field differs from the last one is kept: it
    /// grants credit, which only the protocol applies.
    fn absorb(&mut self, data: &mut Vec<u8>) -> u32 {
        let (mut read, mut write, mut absorbed) = (0, 0, 0);
        while read + HEADER_LEN <= data.len() {
            let Ok((kind, credits, len)) = parse_header(&data[read..], u32::MAX) else { break };
            let end = read + HEADER_LEN + len as usize;
            if kind == self.opts.heartbeat_kind && len == 0 && self.credits_received == Some(credits) {
                absorbed += 1;
            } else {
                if write != read {
                    data.copy_within(read..end, write);
                }
                write += end - read;
                self.credits_received = Some(credits);
            }
            read = end;
        }
        if absorbed > 0 {
            data.copy_within(read.., write);
            data.truncate(write + (data.len() - read));
        }
        absorbed
    }
}

/// A hasher for small integer ids (the std one is built to resist hostile keys; ours are ours).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub struct Liveness {
    inner: Box<dyn Transport>,
    watched: HashMap<ConnId, Watched, BuildHasherDefault<IdHasher>>,
    /// Connections that closed or were closed: dropped at the start of the next poll, so the
    /// protocol can still read their counts while it handles their end.
    ended: Vec<ConnId>,
    /// The total time the loop stood still beyond STALL_TOLERANCE (a monotonic clock of stalls).
    stalled: Duration,
    /// When the next sweep is due.
    tick_at: Option<Instant>,
}

impl Liveness {
    pub fn new(inner: Box<dyn Transport>) -> Liveness {
        Liveness { inner, watched: HashMap::default(), ended: Vec::new(), stalled: Duration::ZERO, tick_at: None }
    }

    /// Starts the heartbeats and the silence deadline of an open connection, both counted from
    /// now. Calling it again replaces the options.
    pub fn watch(&mut self, conn: ConnId, opts: WatchOptions, now: Instant) -> Result<(), TransportError> {
        if opts.heartbeat_kind > crate::frame::MAX_KIND {
            return Err(TransportError::new(
                crate::ErrorCode::InvalidArgument,
                format!("heartbeat kind {} out of range", opts.heartbeat_kind),
            ));
        }
        let prior = self.watched.remove(&conn);
        let w = Watched {
            opts,
            last_sent: now,
            last_received: now,
            stalled_at_receive: self.stalled,
            credits_sent: opts.credits,
            credits_received: prior.as_ref().and_then(|p| p.credits_received),
            counts: prior.map(|p| p.counts).unwrap_or_default(),
            done: false,
        };
        let first = [w.heartbeat_due(), w.silence_deadline(self.stalled)].into_iter().flatten().min();
        self.watched.insert(conn, w);
        self.schedule(first, now);
        Ok(())
    }

    /// What the sweep did for `conn` (until the poll after its end).
    pub fn heartbeats(&self, conn: ConnId) -> Option<HeartbeatCounts> {
        self.watched.get(&conn).map(|w| w.counts)
    }

    /// How many connections are watched (tests).
    pub fn watching(&self) -> usize {
        self.watched.values().filter(|w| !w.done).count()
    }

    fn schedule(&mut self, at: Option<Instant>, now: Instant) {
        if let Some(at) = at {
            let at = at.max(now);
            if self.tick_at.is_none_or(|t| at < t) {
                self.tick_at = Some(at);
            }
        }
    }

    fn end(&mut self, conn: ConnId) {
        if let Some(w) = self.watched.get_mut(&conn) {
            if !w.done {
                w.done = true;
                self.ended.push(conn);
            }
        }
    }

    /// Notes what `out[from..]` says about watched connections: proof of life, their heartbeats
    /// (taken out), their end.
    fn take_in(&mut self, from: usize, out: &mut Vec<Event>, now: Instant) {
        if self.watched.is_empty() {
            return;
        }
        let mut i = from;
        while i < out.len() {
            match &mut out[i] {
                Event::Frames { conn, data, count } => {
                    if let Some(w) = self.watched.get_mut(conn) {
                        w.last_received = now;
                        w.stalled_at_receive = self.stalled;
                        let absorbed = w.absorb(data);
                        w.counts.received += absorbed as u64;
                        *count -= absorbed;
                        if *count == 0 {
                            out.remove(i);
                            continue;
                        }
                    }
                }
                Event::Closed { conn, .. } => {
                    let conn = *conn;
                    self.end(conn);
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// The tick: counts the loop's stall, sends due heartbeats, reports silent peers (after
    /// polling the transport again for what it holds), and schedules the next tick.
    fn sweep(&mut self, now: Instant, out: &mut Vec<Event>) {
        if let Some(at) = self.tick_at.take() {
            self.stalled += now.saturating_duration_since(at).saturating_sub(STALL_TOLERANCE);
        }
        let stalled = self.stalled;
        let suspect = |w: &Watched| !w.done && w.opts.timeout.is_some_and(|t| w.silent_for(now, stalled) >= t);
        if self.watched.values().any(suspect) {
            for _ in 0..PUMPS_BEFORE_JUDGING {
                let from = out.len();
                self.inner.poll(now, out);
                if out.len() == from {
                    break;
                }
                self.take_in(from, out, now);
            }
        }
        let mut sent = false;
        let mut next: Option<Instant> = None;
        let mut probe = MAX_PROBE;
        for (&conn, w) in self.watched.iter_mut() {
            if w.done {
                continue;
            }
            if w.opts.timeout.is_some_and(|t| w.silent_for(now, stalled) >= t) {
                w.done = true;
                self.ended.push(conn);
                out.push(Event::Silent { conn });
                continue;
            }
            // Heartbeats due within a quarter interval go now too: the connections' heartbeats
            // fall into a few ticks per interval instead of one tick (and sweep) each.
            if w.opts.interval.is_some_and(|i| w.last_sent + i <= now + i / HEARTBEAT_EARLY) {
                if self.inner.send(conn, w.opts.heartbeat_kind, w.credits_sent, &[]).is_err() {
                    // Gone or going: its Closed event (if it was ever open) says why.
                    w.done = true;
                    self.ended.push(conn);
                    continue;
                }
                w.last_sent = now;
                w.counts.sent += 1;
                sent = true;
            }
            if let Some(t) = w.opts.timeout {
                probe = probe.min(t / 16);
            }
            for at in [w.heartbeat_due(), w.silence_deadline(stalled)].into_iter().flatten() {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        if sent {
            self.inner.flush();
        }
        if let Some(n) = next {
            // While a silence deadline is armed, tick often enough to see the loop's stalls.
            let probe_at = now + probe.clamp(MIN_PROBE, MAX_PROBE);
            self.tick_at = Some(n.min(probe_at).max(now));
        }
    }

    fn after_poll(&mut self, from: usize, now: Instant, out: &mut Vec<Event>) {
        self.take_in(from, out, now);
        if self.tick_at.is_some_and(|t| now >= t) {
            self.sweep(now, out);
        }
    }
}

impl Pollable for Liveness {
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn poll(&mut self, now: Instant, out: &mut Vec<Event>) {
        for conn in std::mem::take(&mut self.ended) {
            self.watched.remove(&conn);
        }
        let from = out.len();
        self.inner.poll(now, out);
        self.after_poll(from, now, out);
    }

    fn next_deadline(&self) -> Option<Instant> {
        match (self.inner.next_deadline(), self.tick_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Transport for Liveness {
    fn listen(&mut self, opts: &ListenOptions) -> Result<(ListenerId, u16), TransportError> {
        self.inner.listen(opts)
    }

    fn close_listener(&mut self, listener: ListenerId) -> Result<(), TransportError> {
        self.inner.close_listener(listener)
    }

    fn connect(&mut self, opts: &ConnectOptions) -> Result<ConnId, TransportError> {
        self.inner.connect(opts)
    }

    fn send(&mut self, conn: ConnId, kind: u8, credits: u16, payload: &[u8]) -> Result<(), TransportError> {
        self.inner.send(conn, kind, credits, payload)?;
        self.sent(conn, credits);
        Ok(())
    }

    fn send_shared(
        &mut self,
        conn: ConnId,
        kind: u8,
        credits: u16,
        payload: SharedPayload,
    ) -> Result<bool, TransportError> {
        let lent = self.inner.send_shared(conn, kind, credits, payload)?;
        self.sent(conn, credits);
        Ok(lent)
    }

    fn close(&mut self, conn: ConnId) -> Result<(), TransportError> {
        self.inner.close(conn)?;
        self.end(conn);
        Ok(())
    }

    fn abort(&mut self, conn: ConnId) -> Result<(), TransportError> {
        self.inner.abort(conn)?;
        self.end(conn);
        Ok(())
    }

    fn busy_poll_window(&self) -> Duration {
        self.inner.busy_poll_window()
    }

    fn set_busy_polling(&mut self, on: bool, now: Instant, out: &mut Vec<Event>) {
        let from = out.len();
        self.inner.set_busy_polling(on, now, out);
        self.take_in(from, out, now);
    }

    fn busy_poll(&mut self, now: Instant, out: &mut Vec<Event>) -> bool {
        let from = out.len();
        let worked = self.inner.busy_poll(now, out);
        self.after_poll(from, now, out);
        worked
    }
}

impl Liveness {
    /// A frame went out on `conn`: its idle clock restarts, and a heartbeat repeats its credits.
    fn sent(&mut self, conn: ConnId, credits: u16) {
        if let Some(w) = self.watched.get_mut(&conn) {
            w.last_sent = Instant::now();
            w.credits_sent = credits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_header;

    fn frames(list: &[(u8, u16, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(kind, credits, payload) in list {
            v.extend_from_slice(&encode_header(kind, credits, payload.len() as u32));
            v.extend_from_slice(payload);
        }
        v
    }

    fn watched() -> Watched {
        let now = Instant::now();
        Watched {
            opts: WatchOptions { heartbeat_kind: 7, credits: 0, interval: None, timeout: None },
            last_sent: now,
            last_received: now,
            stalled_at_receive: Duration::ZERO,
            credits_sent: 0,
            credits_received: None,
            counts: HeartbeatCounts::default(),
            done: false,
        }
    }

    #[test]
    fn only_heartbeats_that_repeat_the_last_credits_field_are_taken_out() {
        let mut w = watched();
        let mut data = frames(&[(3, 5, b"data"), (7, 5, b""), (7, 9, b""), (7, 9, b""), (7, 9, b"x"), (3, 9, b"end")]);
        assert_eq!(w.absorb(&mut data), 2);
        // The one that grants credit (5 -> 9) and the one with a payload stay for the protocol.
        assert_eq!(data, frames(&[(3, 5, b"data"), (7, 9, b""), (7, 9, b"x"), (3, 9, b"end")]));
        assert_eq!(w.credits_received, Some(9));
    }

    #[test]
    fn the_first_heartbeat_goes_through_while_the_credits_field_is_unknown() {
        let mut w = watched();
        let mut data = frames(&[(7, 0, b""), (7, 0, b"")]);
        assert_eq!(w.absorb(&mut data), 1);
        assert_eq!(data, frames(&[(7, 0, b"")]));
    }

    #[test]
    fn silence_excludes_the_loops_stall_since_the_last_frame() {
        let mut w = watched();
        let t0 = w.last_received;
        w.stalled_at_receive = Duration::from_millis(100);
        let stalled = Duration::from_millis(400); // 300 ms of stall since the last frame
        assert_eq!(w.silent_for(t0 + Duration::from_millis(1000), stalled), Duration::from_millis(700));
        w.opts.timeout = Some(Duration::from_millis(500));
        assert_eq!(w.silence_deadline(stalled), Some(t0 + Duration::from_millis(800)));
    }
}
