//! The rdma link layer: what one connection's two transports tell each other beneath the frames.
//! Pure logic (no verbs), so it is tested on any machine.
//!
//! Receive buffers live in one shared receive queue per device (`pool`), so a peer must never send
//! more messages than buffers we set aside for it: an RDMA send that finds no buffer is an RNR NAK,
//! and after a few retries the connection dies. `Credits` is that guarantee, one level below the
//! lifecycle protocol's own credits (which pace the application: messages delivered but not read).
//!
//! - A message is one fragment of a frame, at most the peer's buffer size (`Hello::buffer_size`);
//!   larger frames go as several fragments, all but the last flagged MORE.
//! - Each message uses one of the peer's buffers, so it needs one link credit. Credits come back
//!   in the immediate data of any message (6 bits, up to 63 at a time) or, when we have nothing to
//!   send, in a zero-length UPDATE message (16 bits).
//! - The last credit is kept for an UPDATE: data never takes it. So either side can always grant,
//!   and two peers whose data waits for credits cannot deadlock (docs/rdma.md has the argument).
//!
//! Immediate data of an rdma message (the tcp header's first word; bits 16-23 are reserved there
//! and belong to this layer on rdma):
//!
//! ```text
//!  31      24 23   22     21      16 15               0
//!  |  kind   | MORE | UPDATE | grant |     credits      |   a fragment of a frame
//!  |    0    |  0   |   1    |   0   |      grant       |   an UPDATE (no payload, no frame)
//!  |    0    |  1   |   1    |   1   |      grant       |   an OFFER (payload: a rendezvous descriptor)
//!  |    0    |  1   |   1    |   2   |      count       |   DONE: `count` offers read (no payload)
//! ```
//!
//! OFFER and DONE (`rndv`) are sent only to a peer whose Hello offered rendezvous; each uses one
//! of the peer's buffers like a fragment.

use rdma_graceful_core::frame::parse_imm;
use rdma_graceful_core::{ErrorCode, TransportError};

const MORE: u32 = 1 << 23;
const UPDATE: u32 = 1 << 22;
const GRANT_SHIFT: u32 = 16;
const LINK_BITS: u32 = 0x00ff_0000;
/// UPDATE and MORE together (meaningless for a fragment or an update): a control message, whose
/// type is in the grant bits.
const CONTROL: u32 = UPDATE | MORE;
const CONTROL_OFFER: u32 = 1;
const CONTROL_DONE: u32 = 2;
/// The largest grant that rides on a fragment.
pub const MAX_PIGGYBACK: u32 = 0x3f;
/// The largest grant one UPDATE carries.
pub const MAX_UPDATE: u32 = 0xffff;

/// Below this many credits held by the peer (as far as we know), we grant what we can at once.
pub const LOW: u32 = 2;

/// What the immediate data of a received message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imm {
    /// A fragment of a frame (`more`: others follow), carrying `grant` credits back.
    Fragment { kind: u8, credits: u16, more: bool, grant: u32 },
    /// Credits back, nothing else.
    Update { grant: u32 },
    /// A rendezvous descriptor in the payload, and credits back.
    Offer { grant: u32 },
    /// The peer read `count` more of our offers.
    Done { count: u32 },
}

/// The immediate data of a fragment: the frame header's word plus this layer's bits.
pub fn fragment_imm(frame_imm: u32, more: bool, grant: u32) -> u32 {
    debug_assert!(frame_imm & LINK_BITS == 0 && grant <= MAX_PIGGYBACK);
    frame_imm | if more { MORE } else { 0 } | (grant << GRANT_SHIFT)
}

pub fn update_imm(grant: u32) -> u32 {
    debug_assert!(grant <= MAX_UPDATE);
    UPDATE | grant
}

pub fn offer_imm(grant: u32) -> u32 {
    debug_assert!(grant <= MAX_UPDATE);
    CONTROL | (CONTROL_OFFER << GRANT_SHIFT) | grant
}

pub fn done_imm(count: u32) -> u32 {
    debug_assert!(count > 0 && count <= MAX_UPDATE);
    CONTROL | (CONTROL_DONE << GRANT_SHIFT) | count
}

pub fn parse(imm: u32) -> Result<Imm, TransportError> {
    if imm & CONTROL == CONTROL {
        let value = imm & 0xffff;
        return match ((imm >> GRANT_SHIFT) & MAX_PIGGYBACK, imm >> 24) {
            (CONTROL_OFFER, 0) => Ok(Imm::Offer { grant: value }),
            (CONTROL_DONE, 0) if value > 0 => Ok(Imm::Done { count: value }),
            _ => Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer sent an unknown link control message ({imm:#010x})"),
            )),
        };
    }
    if imm & UPDATE != 0 {
        if imm & !(UPDATE | 0xffff) != 0 {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer sent a credit update with other bits set ({imm:#010x})"),
            ));
        }
        return Ok(Imm::Update { grant: imm & 0xffff });
    }
    let (kind, credits) = parse_imm(imm & !LINK_BITS)?;
    Ok(Imm::Fragment { kind, credits, more: imm & MORE != 0, grant: (imm >> GRANT_SHIFT) & MAX_PIGGYBACK })
}

/// How many messages a frame of `len` bytes takes with buffers of `buffer` bytes (an empty frame
/// is one message).
pub fn fragments(len: usize, buffer: usize) -> usize {
    len.div_ceil(buffer).max(1)
}

/// One connection's link credits, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credits {
    /// Messages we may still send to the peer (its buffers set aside for us).
    held: u32,
    /// Buffers set aside for the peer: what it holds, what is in flight, and `owed`.
    window: u32,
    /// Buffers the peer used that are posted again and not yet granted back.
    owed: u32,
}

impl Credits {
    /// `window`: the buffers we set aside for the peer (announced in our Hello); `held`: what
    /// the peer set aside for us (its Hello).
    pub fn new(window: u32, held: u32) -> Credits {
        Credits { held, window, owed: 0 }
    }

    #[cfg(test)]
    pub fn held(&self) -> u32 {
        self.held
    }

    pub fn window(&self) -> u32 {
        self.window
    }

    #[cfg(test)]
    pub fn owed(&self) -> u32 {
        self.owed
    }

    /// Whether a fragment may go now: it needs a credit beyond the one kept for an UPDATE.
    pub fn can_send_fragment(&self) -> bool {
        self.held >= 2
    }

    /// Takes a credit for a fragment and the grant it carries back.
    pub fn send_fragment(&mut self) -> u32 {
        debug_assert!(self.can_send_fragment());
        self.held -= 1;
        self.take_owed(MAX_PIGGYBACK)
    }

    /// Takes a credit for a control message (`rndv`'s OFFER or DONE), which carries up to
    /// `max_grant` back.
    pub fn send_control(&mut self, max_grant: u32) -> u32 {
        debug_assert!(self.can_send_fragment());
        self.held -= 1;
        self.take_owed(max_grant)
    }

    /// Whether an UPDATE should go now: something is owed, the peer is (nearly) out of credits or
    /// half the window is owed, and we have a credit for it. Receiving an UPDATE owes one credit,
    /// which alone never triggers another (so idle peers exchange nothing).
    pub fn wants_update(&self) -> bool {
        self.held >= 1 && self.owed > 0 && (self.peer_holds() < LOW || self.owed >= (self.window / 2).max(2))
    }

    /// Whether an UPDATE may go now (the credit kept for it is there).
    pub fn can_send_update(&self) -> bool {
        self.held >= 1
    }

    /// Takes the credit for an UPDATE and its grant.
    pub fn send_update(&mut self) -> u32 {
        debug_assert!(self.held >= 1);
        self.held -= 1;
        self.take_owed(MAX_UPDATE)
    }

    fn take_owed(&mut self, max: u32) -> u32 {
        let g = self.owed.min(max);
        self.owed -= g;
        g
    }

    /// The peer granted us `grant` more.
    pub fn granted(&mut self, grant: u32) {
        self.held = self.held.saturating_add(grant);
    }

    /// A message of the peer arrived and its buffer is posted again: owed back. A peer that sent
    /// it with none of our buffers left to it broke the credit contract (it would drain the
    /// shared receive queue of every connection on the device): an error, and nothing counted.
    pub fn consumed(&mut self) -> Result<(), TransportError> {
        if self.owed >= self.window {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer sent beyond its link credits (window of {} buffers)", self.window),
            ));
        }
        self.owed += 1;
        Ok(())
    }

    /// What the peer holds as far as we know (messages in flight toward us included).
    pub fn peer_holds(&self) -> u32 {
        self.window - self.owed
    }

    /// Whether the peer is sending as fast as our window lets it: it holds fewer than `LOW`.
    pub fn peer_is_limited(&self) -> bool {
        self.peer_holds() < LOW
    }

    /// Sets `extra` more buffers aside for the peer (granted with the next message).
    pub fn grow(&mut self, extra: u32) {
        self.window += extra;
        self.owed += extra;
    }

    /// Gives back up to `max` owed buffers, never below `floor`: the window shrinks. Returns how
    /// many the caller may return to the pool.
    pub fn shrink(&mut self, floor: u32, max: u32) -> u32 {
        let n = self.owed.min(self.window.saturating_sub(floor)).min(max);
        self.owed -= n;
        self.window -= n;
        n
    }
}

/// At most this many unsignaled sends in a row (the QP's send queue holds `SEND_DEPTH`; an
/// unsignaled send keeps its entry until a later signaled one completes).
pub const SIGNAL_EVERY: u64 = 16;
const SEQ_BITS: u32 = 30;
/// A send's sequence number as its work request carries it (mod 2^30).
pub const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

/// The sends of one QP with selective signaling: only some sends complete, and a completion
/// (signaled, or a flush, which every send gets) says that its send and every send before it are
/// done, since a QP completes in order. Counts, not a list: each work request carries its
/// sequence number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sends {
    /// Sends posted: a count, and the next send's sequence number.
    posted: u64,
    /// Sends known complete.
    done: u64,
    /// Sends posted up to and including the last signaled one.
    signaled_upto: u64,
}

impl Sends {
    pub fn in_flight(&self) -> u32 {
        (self.posted - self.done) as u32
    }

    /// Whether sends after the last signaled one wait for a later signaled send to complete.
    pub fn unsignaled_tail(&self) -> bool {
        self.posted > self.signaled_upto
    }

    /// Plans the next `n` sends: for each, its sequence number and whether it is signaled
    /// (`must(i)`: it has to be, e.g. it holds a buffer; else every `SIGNAL_EVERY`th is).
    pub fn plan(&self, n: usize, must: impl Fn(usize) -> bool) -> Vec<(u64, bool)> {
        let mut last = self.signaled_upto;
        (0..n)
            .map(|i| {
                let count = self.posted + i as u64 + 1;
                let signaled = must(i) || count - last >= SIGNAL_EVERY;
                if signaled {
                    last = count;
                }
                ((count - 1) & SEQ_MASK, signaled)
            })
            .collect()
    }

    /// The first `posted` sends of a plan went out.
    pub fn posted(&mut self, plan: &[(u64, bool)], posted: usize) {
        if let Some(last) = plan[..posted].iter().rposition(|p| p.1) {
            self.signaled_upto = self.posted + last as u64 + 1;
        }
        self.posted += posted as u64;
    }

    /// A completion of the send with sequence number `seq`: it and all before it are done.
    pub fn completed(&mut self, seq: u64) {
        let ahead = seq.wrapping_sub(self.done) & SEQ_MASK;
        self.done = (self.done + ahead + 1).min(self.posted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdma_graceful_core::frame::imm_of;

    #[test]
    fn immediate_data_round_trips_and_rejects_stray_bits() {
        let imm = fragment_imm(imm_of(3, 0xbeef), true, 63);
        assert_eq!(parse(imm).unwrap(), Imm::Fragment { kind: 3, credits: 0xbeef, more: true, grant: 63 });
        let imm = fragment_imm(imm_of(0, 7), false, 0);
        assert_eq!(parse(imm).unwrap(), Imm::Fragment { kind: 0, credits: 7, more: false, grant: 0 });
        assert_eq!(parse(update_imm(65535)).unwrap(), Imm::Update { grant: 65535 });
        assert_eq!(parse(update_imm(1) | (5 << 24)).unwrap_err().code, ErrorCode::MalformedFrame);
        assert_eq!(parse(0xff00_0000).unwrap_err().code, ErrorCode::MalformedFrame, "kind out of range");
    }

    #[test]
    fn control_messages_round_trip_and_strays_are_refused() {
        assert_eq!(parse(offer_imm(7)).unwrap(), Imm::Offer { grant: 7 });
        assert_eq!(parse(done_imm(3)).unwrap(), Imm::Done { count: 3 });
        assert!(parse(CONTROL).is_err(), "no type");
        assert!(parse(CONTROL | (CONTROL_DONE << GRANT_SHIFT)).is_err(), "DONE of nothing");
        assert!(parse(offer_imm(1) | (5 << 24)).is_err(), "a kind on a control message");
        assert!(parse(CONTROL | (9 << GRANT_SHIFT) | 1).is_err(), "an unknown type");
        // A fragment flagged MORE and a plain UPDATE are still what they were.
        assert!(matches!(
            parse(fragment_imm(imm_of(1, 0), true, 3)).unwrap(),
            Imm::Fragment { more: true, grant: 3, .. }
        ));
        assert_eq!(parse(update_imm(9)).unwrap(), Imm::Update { grant: 9 });
    }

    #[test]
    fn a_message_beyond_the_window_is_refused() {
        let mut c = Credits::new(4, 0);
        for _ in 0..4 {
            c.consumed().unwrap();
        }
        let e = c.consumed().unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        assert_eq!(c.owed(), 4, "the refused message is not counted");
        assert_eq!(c.peer_holds(), 0);
        // Granted back (an UPDATE of all four), the peer may send again.
        c.granted(1);
        assert_eq!(c.send_update(), 4);
        c.consumed().unwrap();
    }

    #[test]
    fn fragments_count_an_empty_frame_as_one_message() {
        assert_eq!(fragments(0, 8192), 1);
        assert_eq!(fragments(8192, 8192), 1);
        assert_eq!(fragments(8193, 8192), 2);
        assert_eq!(fragments(65536, 8192), 8);
    }

    #[test]
    fn the_last_credit_is_kept_for_an_update() {
        let mut c = Credits::new(4, 2);
        assert!(c.can_send_fragment());
        c.send_fragment();
        assert!(!c.can_send_fragment(), "one credit left: kept for an UPDATE");
        c.consumed().unwrap();
        assert!(!c.wants_update(), "one owed and the peer still holds 3: nothing to say");
        c.consumed().unwrap();
        assert!(c.wants_update(), "half the window owed");
        assert_eq!(c.send_update(), 2);
        assert_eq!((c.held(), c.owed()), (0, 0));
        assert!(!c.wants_update());
    }

    /// Two peers, random traffic both ways, messages delivered after random delays, windows that
    /// grow and shrink: no message is ever sent without a buffer set aside for it, both sides
    /// always end with everything delivered (no deadlock), and once idle they exchange nothing.
    #[test]
    fn random_traffic_never_overruns_a_window_and_never_deadlocks() {
        #[derive(Clone, Copy)]
        enum Msg {
            Fragment(u32),
            Update(u32),
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..200 {
            let start = 3 + rand(6) as u32;
            let mut side = [Credits::new(start, start), Credits::new(start, start)];
            let mut queued = [rand(300) as u32, rand(300) as u32];
            let mut wire: [std::collections::VecDeque<Msg>; 2] = Default::default(); // wire[i]: toward i
            let mut steps = 0;
            loop {
                steps += 1;
                assert!(steps < 100_000, "round {round}: no progress (deadlock)");
                let i = rand(2) as usize;
                let j = 1 - i;
                match rand(4) {
                    // Side i sends a fragment or an UPDATE if it may.
                    0 | 1 => {
                        if queued[i] > 0 && side[i].can_send_fragment() {
                            queued[i] -= 1;
                            let g = side[i].send_fragment();
                            wire[j].push_back(Msg::Fragment(g));
                        } else if side[i].wants_update() {
                            let g = side[i].send_update();
                            wire[j].push_back(Msg::Update(g));
                        }
                    }
                    // Side i receives the oldest message toward it.
                    2 => {
                        if let Some(m) = wire[i].pop_front() {
                            let g = match m {
                                Msg::Fragment(g) | Msg::Update(g) => g,
                            };
                            side[i].granted(g);
                            side[i].consumed().expect("a peer that keeps to its credits is never refused");
                            if side[i].peer_is_limited() && rand(2) == 0 && side[i].window() < 64 {
                                let w = side[i].window();
                                side[i].grow(w);
                            }
                        }
                    }
                    _ => {
                        if rand(8) == 0 {
                            side[i].shrink(start, 1 + rand(8) as u32);
                        }
                    }
                }
                for k in 0..2 {
                    // Buffers set aside for side 1-k's messages toward k cover those in flight.
                    let in_flight = wire[k].len() as u32;
                    let held = side[1 - k].held();
                    assert!(
                        held + in_flight + side[k].owed() <= side[k].window(),
                        "round {round}: side {} may send more than side {k} set aside",
                        1 - k
                    );
                }
                let idle = queued == [0, 0] && wire[0].is_empty() && wire[1].is_empty();
                if idle && !side[0].wants_update() && !side[1].wants_update() {
                    break;
                }
            }
        }
    }

    #[test]
    fn a_signaled_completion_retires_the_unsignaled_sends_before_it_and_flushes_count_once() {
        let mut s = Sends::default();
        // 40 small sends: every 16th signaled.
        let plan = s.plan(40, |_| false);
        let signaled: Vec<usize> = plan.iter().enumerate().filter(|p| p.1 .1).map(|p| p.0).collect();
        assert_eq!(signaled, vec![15, 31]);
        s.posted(&plan, 40);
        assert_eq!(s.in_flight(), 40);
        assert!(s.unsignaled_tail(), "8 sends after the last signaled one");
        s.completed(plan[15].0);
        assert_eq!(s.in_flight(), 24, "the 16th send's completion covers the 15 before it");
        // The QP goes to ERR: every send left is flushed, each with its own completion, in order.
        for p in &plan[16..] {
            s.completed(p.0);
        }
        assert_eq!(s.in_flight(), 0);
        s.completed(plan[31].0);
        assert_eq!(s.in_flight(), 0, "a late duplicate changes nothing");
        // A send that must be signaled (it holds a buffer, or the connection closes) is.
        let plan = s.plan(3, |i| i == 2);
        assert_eq!(plan.iter().map(|p| p.1).collect::<Vec<_>>(), vec![false, false, true]);
        s.posted(&plan, 3);
        assert!(!s.unsignaled_tail());
        // Only the first of a chain went out: the plan's later signals do not count.
        let plan = s.plan(20, |i| i == 10);
        s.posted(&plan, 5);
        assert!(s.unsignaled_tail());
        assert_eq!(s.in_flight(), 8, "the 3 before and the 5 that went out");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut s = Sends { posted: SEQ_MASK - 2, done: SEQ_MASK - 2, signaled_upto: SEQ_MASK - 2 };
        let plan = s.plan(6, |i| i == 5);
        s.posted(&plan, 6);
        assert_eq!(plan[5].0, 2, "the sixth send's number wrapped");
        s.completed(plan[5].0);
        assert_eq!(s.in_flight(), 0);
    }
}
