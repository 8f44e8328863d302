//! RDMA transport tests on a real device (run them inside the Soft-RoCE guest:
//! scripts/softroce/rust-tests.sh): the transport contract (`conformance`, the same suite tcp runs
//! on the host), then what only rdma has (queue-pair numbers, a killed peer process, teardown when
//! the transport is dropped). Without a device each test prints why it is SKIPPED and returns: it
//! proves nothing about RDMA behaviour there. Under RDMA_REQUIRED=1 (rust-tests.sh sets it in the
//! guest) a missing device fails the test instead, so the guest run cannot pass by skipping.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdma_graceful_core::conformance::{self as contract, WAIT};
use rdma_graceful_core::counters;
use rdma_graceful_core::frame::split;
use rdma_graceful_core::{ConnectOptions, ErrorCode, Event, EventLoop, ListenOptions, Pollable, Transport};
use rdma_graceful_rdma::{RdmaTransport, BUFFER_SIZE, INITIAL_WINDOW};

/// Live counters are process-wide: run these tests one at a time even without --test-threads=1.
static SERIAL: Mutex<()> = Mutex::new(());

/// The address of the RDMA netdev (rdma-cm does not work on 127.0.0.1).
fn ip() -> String {
    std::env::var("SOFTROCE_IP").or_else(|_| std::env::var("RDMA_TEST_IP")).unwrap_or_else(|_| "10.99.0.1".into())
}

/// The serial lock and a loop over a new transport, or None after printing why the test is skipped
/// (a panic under RDMA_REQUIRED=1).
fn setup() -> Option<(MutexGuard<'static, ()>, EventLoop<RdmaTransport>)> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    match RdmaTransport::new() {
        Ok(t) => Some((serial, EventLoop::new(t))),
        Err(e) if e.code == ErrorCode::Unavailable => {
            if std::env::var("RDMA_REQUIRED").as_deref() == Ok("1") {
                panic!("RDMA_REQUIRED=1 but there is no RDMA device: {e}");
            }
            eprintln!("SKIPPED: no RDMA device: {e}");
            None
        }
        Err(e) => panic!("RdmaTransport::new failed unexpectedly: {e}"),
    }
}

/// Every rdma counter, the transport's own event channel included: call after dropping it.
fn assert_rdma_zero(when: &str) {
    let c: Vec<_> =
        counters::ALL.iter().filter(|k| k.name().starts_with("rdma")).map(|k| (k.name(), k.get())).collect();
    eprintln!("live counts {when}: {c:?}");
    assert!(c.iter().all(|(_, n)| *n == 0), "rdma resources leaked {when}: {c:?}");
}

#[test]
fn contract_frames_in_order_then_close_frees_everything() {
    let Some((_g, mut el)) = setup() else { return };
    contract::frames_in_order_then_close_frees_everything(&mut el, &ip());
    drop(el);
    assert_rdma_zero("after close and drop");
}

#[test]
fn contract_close_delivers_everything_sent_before_it() {
    let Some((_g, mut el)) = setup() else { return };
    // Far more frames than the peer's link window: the rest waits in the software queue for
    // credits, and close waits for all of it.
    contract::close_delivers_everything_sent_before_it(&mut el, &ip(), 4096, 1000);
}

#[test]
fn contract_abort_closes_at_once_and_the_peer_sees_it() {
    let Some((_g, mut el)) = setup() else { return };
    contract::abort_closes_at_once_and_the_peer_sees_it(&mut el, &ip());
}

#[test]
fn contract_connect_without_listener_is_refused() {
    let Some((_g, mut el)) = setup() else { return };
    // rdma-cm ports are their own space: no tcp listener interferes with port 1.
    contract::connect_without_listener_is_refused(&mut el, &ip(), 1);
}

#[test]
fn contract_bad_arguments_are_typed_errors() {
    let Some((_g, mut el)) = setup() else { return };
    contract::bad_arguments_are_typed_errors(&mut el);
}

#[test]
fn queue_pair_numbers_match_and_oversized_frames_are_refused() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 4096, ..Default::default() }).unwrap();
    let cid = el
        .transport
        .connect(&ConnectOptions { host: ip(), port, max_payload: 4096, timeout_ms: 10_000, ..Default::default() })
        .unwrap();
    let Event::Connected { qp: cqp, .. } =
        el.expect("Connected", WAIT, |e| matches!(e, Event::Connected { conn, .. } if *conn == cid))
    else {
        unreachable!()
    };
    let Event::Accepted { qp: sqp, .. } = el.expect("Accepted", WAIT, |e| matches!(e, Event::Accepted { .. })) else {
        unreachable!()
    };
    let (cqp, sqp) = (cqp.expect("client qp info"), sqp.expect("server qp info"));
    assert_eq!(cqp.local_qpn, sqp.remote_qpn, "server must see the client's QP number");
    assert_eq!(sqp.local_qpn, cqp.remote_qpn, "client must see the server's QP number");
    let e = el.transport.send(cid, 0, 0, &[0; 4097]).unwrap_err();
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    // The connection lives on.
    el.transport.send(cid, 0, 0, b"after").unwrap();
    let got = el.expect("a frame after the refused one", WAIT, |e| matches!(e, Event::Frames { .. }));
    let Event::Frames { data, .. } = got else { unreachable!() };
    assert_eq!(split(&data)[0].payload, b"after");
}

#[test]
fn dropping_the_transport_with_connections_open_frees_everything() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 1024, ..Default::default() }).unwrap();
    contract::pair(&mut el, &ip(), port, 1024);
    contract::pair(&mut el, &ip(), port, 1024);
    drop(el);
    assert_rdma_zero("after the transport was dropped with two connections open");
}

/// Frames larger than a buffer go as fragments and arrive whole; a burst far beyond the link
/// window waits for credits instead of overrunning the shared receive queue (an RNR would end the
/// connection with a completion error).
#[test]
fn large_frames_are_fragmented_and_bursts_wait_for_credits() {
    let Some((_g, mut el)) = setup() else { return };
    let max = 1024 * 1024;
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: max, ..Default::default() }).unwrap();
    let (c, s) = contract::pair(&mut el, &ip(), port, max);
    let sizes =
        [0, 1, BUFFER_SIZE as usize - 1, BUFFER_SIZE as usize, BUFFER_SIZE as usize + 1, 64 * 1024, max as usize];
    let frames: Vec<Vec<u8>> =
        sizes.iter().enumerate().map(|(i, &n)| (0..n).map(|b| (b * 7 + i) as u8).collect()).collect();
    for f in &frames {
        el.transport.send(c, 1, 0, f).unwrap();
    }
    let got = contract::receive(&mut el, s, frames.len());
    for (g, f) in got.iter().zip(&frames) {
        assert_eq!(g.payload.len(), f.len());
        assert!(g.payload == *f, "a frame of {} bytes arrived changed", f.len());
    }
    // 4,000 small frames queued at once (the software queue holds 4,096), both ways: everything
    // arrives, in order.
    for i in 0..4000u32 {
        el.transport.send(c, 1, 0, &i.to_be_bytes()).unwrap();
        el.transport.send(s, 1, 0, &i.to_be_bytes()).unwrap();
    }
    let at_s = contract::receive(&mut el, s, 4000);
    let at_c = contract::receive(&mut el, c, 4000);
    for (i, (a, b)) in at_s.iter().zip(&at_c).enumerate() {
        assert_eq!(a.payload, (i as u32).to_be_bytes());
        assert_eq!(b.payload, (i as u32).to_be_bytes());
    }
}

/// What an idle connection costs: registered bytes and buffers set aside per connection, with
/// 200 connections open (both ends in this process), printed for bench/NOTES.md.
#[test]
fn idle_connections_cost_their_window_not_their_message_size() {
    let Some((_g, mut el)) = setup() else { return };
    let max = 64 * 1024;
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: max, ..Default::default() }).unwrap();
    let (c0, s0) = contract::pair(&mut el, &ip(), port, max);
    let base = counters::Kind::RdmaRegisteredBytes.get();
    let n = 200;
    let mut pairs = Vec::new();
    for _ in 0..n {
        pairs.push(contract::pair(&mut el, &ip(), port, max));
    }
    let per_end = (counters::Kind::RdmaRegisteredBytes.get() - base) as f64 / (2 * n) as f64;
    let (posted, committed, pools) = el.transport.pool_usage();
    eprintln!(
        "{} connections (both ends here): {} bytes registered, {per_end:.0} more per connection end; {posted} receive \
         buffers posted, {committed} set aside, {pools} pool(s)",
        2 * (n + 1),
        counters::Kind::RdmaRegisteredBytes.get()
    );
    assert_eq!(committed, 2 * (n as u32 + 1) * INITIAL_WINDOW, "each end sets its initial window aside");
    assert!(per_end <= 64.0 * 1024.0, "an idle connection end costs {per_end} registered bytes");
    // Every one of them still works.
    for &(c, s) in pairs.iter().chain([(c0, s0)].iter()) {
        el.transport.send(c, 1, 0, b"ping").unwrap();
        el.transport.send(s, 1, 0, b"pong").unwrap();
    }
    for &(c, s) in pairs.iter().chain([(c0, s0)].iter()) {
        assert_eq!(contract::receive(&mut el, s, 1)[0].payload, b"ping");
        assert_eq!(contract::receive(&mut el, c, 1)[0].payload, b"pong");
    }
    drop(el);
    assert_rdma_zero("after 402 connection ends");
}

/// Many connections, each end sending a small frame now and then (heartbeat-like traffic, both
/// ends in this process so their pool's send slots and credits are shared): every frame arrives,
/// round after round. A link-credit or send-slot stall would leave some connection silent.
#[test]
fn many_connections_keep_exchanging_small_frames() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 1024, ..Default::default() }).unwrap();
    let pairs: Vec<_> = (0..500).map(|_| contract::pair(&mut el, &ip(), port, 1024)).collect();
    let mut got: std::collections::HashMap<rdma_graceful_core::ConnId, u32> = Default::default();
    for round in 0..12u32 {
        for &(c, s) in &pairs {
            el.transport.send(c, 1, 0, &round.to_be_bytes()).unwrap();
            el.transport.send(s, 1, 0, &round.to_be_bytes()).unwrap();
        }
        let end = Instant::now() + WAIT;
        let want = (round + 1) * 2 * pairs.len() as u32;
        while got.values().sum::<u32>() < want {
            assert!(
                Instant::now() < end,
                "round {round}: {} of {want} frames arrived; silent ends: {:?}",
                got.values().sum::<u32>(),
                pairs
                    .iter()
                    .flat_map(|&(c, s)| [c, s])
                    .filter(|id| got.get(id).copied().unwrap_or(0) <= round)
                    .take(10)
                    .collect::<Vec<_>>()
            );
            if let Some(Event::Frames { conn, count, .. }) =
                el.take(Duration::from_millis(50), |e| matches!(e, Event::Frames { .. }))
            {
                *got.entry(conn).or_default() += count;
            }
        }
    }
}

/// The peer half of `a_killed_peer_is_detected`: run as a child process of the test binary.
#[test]
#[ignore = "child process of a_killed_peer_is_detected"]
fn child_peer() {
    let Ok(addr) = std::env::var("RDMA_GRACEFUL_CHILD_CONNECT") else { return };
    let addr: SocketAddr = addr.parse().unwrap();
    let mut el = EventLoop::new(RdmaTransport::new().expect("child transport"));
    let opts = ConnectOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        max_payload: 1024,
        timeout_ms: 10_000,
        ..Default::default()
    };
    let c = el.transport.connect(&opts).unwrap();
    el.expect("Connected", WAIT, |e| matches!(e, Event::Connected { .. }));
    el.transport.send(c, 1, 0, b"hello from the child").unwrap();
    el.transport.flush();
    println!("CHILD READY");
    // Keep polling (acknowledging) until killed.
    let _ = el.take(Duration::from_secs(120), |_| false);
}

#[test]
fn a_killed_peer_is_detected() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 1024, ..Default::default() }).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_peer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RDMA_GRACEFUL_CHILD_CONNECT", format!("{}:{port}", ip()))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn child");
    let Event::Accepted { conn: sid, .. } = el.expect("Accepted", WAIT, |e| matches!(e, Event::Accepted { .. })) else {
        unreachable!()
    };
    let frames = contract::receive(&mut el, sid, 1);
    assert_eq!(frames[0].payload, b"hello from the child");
    let t0 = Instant::now();
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    let closed = el.expect(
        "Closed after SIGKILL",
        Duration::from_secs(60),
        |e| matches!(e, Event::Closed { conn, .. } if *conn == sid),
    );
    let Event::Closed { error, .. } = closed else { unreachable!() };
    let error = error.expect("a killed peer must be reported with an error");
    eprintln!("SIGKILLed peer detected after {:?}: {error}", t0.elapsed());
    assert!(matches!(error.code, ErrorCode::PeerClosed | ErrorCode::ConnectionReset), "{error}");
    drop(el);
    assert_rdma_zero("after the killed peer's connection was closed");
}

/// How long the verbs calls that run on the caller's loop block it: every `poll` and command is
/// timed while 20 connections are set up (the device pool's registration for the first, then QP
/// creation inside the polls that accept and connect) and closed (QP destruction). A measurement,
/// printed for docs/event-loop.md; the assertions are only that everything was set up and freed.
#[test]
fn measure_how_long_setup_and_teardown_block_the_loop() {
    type Worst = std::collections::BTreeMap<&'static str, Duration>;
    fn note(worst: &mut Worst, what: &'static str, d: Duration) {
        let w = worst.entry(what).or_default();
        *w = (*w).max(d);
    }
    /// Polls (timing each poll) until `done` holds for the events gathered so far.
    fn poll_until(
        el: &mut EventLoop<RdmaTransport>,
        events: &mut Vec<Event>,
        worst: &mut Worst,
        what: &'static str,
        done: &dyn Fn(&[Event]) -> bool,
    ) {
        let end = Instant::now() + WAIT;
        while !done(events) {
            assert!(Instant::now() < end, "{what}: not done within {WAIT:?}: {events:?}");
            let mut pfd = libc::pollfd { fd: el.transport.fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 10) };
            let t = Instant::now();
            el.transport.poll(Instant::now(), events);
            note(worst, what, t.elapsed());
        }
    }
    let Some((_g, mut el)) = setup() else { return };
    let mut worst = Worst::new();
    let (lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 64 * 1024, ..Default::default() }).unwrap();
    let mut events = Vec::new();
    let mut pairs = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let c = el
            .transport
            .connect(&ConnectOptions {
                host: ip(),
                port,
                max_payload: 64 * 1024,
                timeout_ms: 10_000,
                ..Default::default()
            })
            .unwrap();
        note(&mut worst, "connect() call", t.elapsed());
        events.clear();
        poll_until(&mut el, &mut events, &mut worst, "a poll during setup", &|ev| {
            ev.iter().any(|e| matches!(e, Event::Connected { conn, .. } if *conn == c))
                && ev.iter().any(|e| matches!(e, Event::Accepted { .. }))
        });
        let s =
            events.iter().find_map(|e| if let Event::Accepted { conn, .. } = e { Some(*conn) } else { None }).unwrap();
        pairs.push((c, s));
    }
    for (c, s) in pairs {
        let t = Instant::now();
        el.transport.abort(c).unwrap();
        el.transport.abort(s).unwrap();
        note(&mut worst, "abort() calls (both ends)", t.elapsed());
        events.clear();
        poll_until(&mut el, &mut events, &mut worst, "a poll during teardown", &|ev| {
            ev.iter().filter(|e| matches!(e, Event::Closed { .. })).count() == 2
        });
    }
    el.transport.close_listener(lid).unwrap();
    eprintln!("longest blocking of the caller's loop, 20 connections of 64 KiB messages (one shared pool):");
    for (what, d) in &worst {
        eprintln!("  {what}: {d:?}");
    }
    drop(el);
    assert_rdma_zero("after the measurement");
}

/// A connection pair whose client sent 5 small frames (fewer than one signaled send in 16), all
/// received: the client holds unsignaled sends that completed with no completion of their own.
fn pair_after_unsignaled_sends(el: &mut EventLoop<RdmaTransport>) -> (u32, u32) {
    let (_lid, port) = el.transport.listen(&ListenOptions { host: ip(), ..Default::default() }).unwrap();
    let (c, s) = contract::pair(el, &ip(), port, 1 << 20);
    for i in 0..5u32 {
        el.transport.send(c, 1, 0, &i.to_be_bytes()).unwrap();
    }
    let got = contract::receive(el, s, 5);
    assert_eq!(got.last().unwrap().payload, 4u32.to_be_bytes());
    (c, s)
}

/// Small sends go inline and unsignaled (no completion, no wake-up each): a connection whose last
/// sends were unsignaled still learns at close that they are done (close posts one signaled
/// UPDATE after them), instead of waiting out the close deadline (10 s) and aborting.
#[test]
fn close_after_unsignaled_sends_completes_at_once() {
    let Some((_g, mut el)) = setup() else { return };
    let (c, s) = pair_after_unsignaled_sends(&mut el);
    // The client closes only once all of them arrived: nothing of its own is left to signal.
    let t0 = Instant::now();
    el.transport.close(c).unwrap();
    el.expect("client Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == c));
    let took = t0.elapsed();
    eprintln!("close after 5 unsignaled sends took {took:?}");
    assert!(took < Duration::from_secs(2), "close waited {took:?} for sends it had no completion of");
    el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s));
}

/// Busy polling: while on, completions are taken by `busy_poll` and the CQ is not armed (no
/// wake-up of the fd); when it ends, the CQ is armed again (the next completion wakes the fd).
/// The window is the largest of the open connections'.
#[test]
fn busy_polling_takes_completions_without_wake_ups() {
    let Some((_g, mut el)) = setup() else { return };
    let busy = |us| rdma_graceful_core::RdmaTuning { busy_poll_us: Some(us), ..Default::default() };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), rdma: busy(50_000), ..Default::default() }).unwrap();
    let c =
        el.transport.connect(&ConnectOptions { host: ip(), port, rdma: busy(100_000), ..Default::default() }).unwrap();
    el.expect("Connected", WAIT, |e| matches!(e, Event::Connected { conn, .. } if *conn == c));
    let Event::Accepted { conn: s, .. } = el.expect("Accepted", WAIT, |e| matches!(e, Event::Accepted { .. })) else {
        unreachable!()
    };
    assert_eq!(
        el.transport.busy_poll_window(),
        Duration::from_millis(100),
        "the largest window of the open connections"
    );
    let readable = |el: &EventLoop<RdmaTransport>, ms: i32| {
        let mut pfd = libc::pollfd { fd: el.transport.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
    };
    let mut out = Vec::new();
    el.transport.set_busy_polling(true, Instant::now(), &mut out);
    // An exchange to take the one event the CQ was armed for before busy polling began.
    let exchange = |el: &mut EventLoop<RdmaTransport>, out: &mut Vec<Event>, i: u32| {
        el.transport.send(c, 1, 0, &i.to_be_bytes()).unwrap();
        let t0 = Instant::now();
        while !out.iter().any(|e| matches!(e, Event::Frames { conn, .. } if *conn == s)) {
            assert!(t0.elapsed() < WAIT, "busy polling did not take the frame");
            el.transport.busy_poll(Instant::now(), out);
        }
        out.clear();
    };
    exchange(&mut el, &mut out, 0);
    el.transport.poll(Instant::now(), &mut out); // consumes the channel event of the first exchange
    out.clear();
    for i in 1..20 {
        exchange(&mut el, &mut out, i);
    }
    assert!(!readable(&el, 200), "a completion woke the fd while busy polling (the CQ was armed)");
    el.transport.set_busy_polling(false, Instant::now(), &mut out);
    el.transport.send(c, 1, 0, b"after").unwrap();
    el.transport.flush();
    assert!(readable(&el, 2_000), "no wake-up after busy polling ended (the CQ was not armed again)");
    let got = contract::receive(&mut el, s, 1);
    assert_eq!(got[0].payload, b"after");
    el.transport.close(c).unwrap();
    el.expect("client Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == c));
    el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s));
    assert_eq!(el.transport.busy_poll_window(), Duration::ZERO, "no open connection: no busy polling");
}

/// An abort after unsignaled sends: the sends completed without a completion, and a QP in ERR
/// flushes only what is still outstanding, so the teardown posts one signaled marker to learn that
/// the QP is done (instead of waiting out the 2 s drain deadline with "sends not flushed").
#[test]
fn abort_after_unsignaled_sends_drains_at_once() {
    let Some((_g, mut el)) = setup() else { return };
    let (c, s) = pair_after_unsignaled_sends(&mut el);
    let t0 = Instant::now();
    el.transport.abort(c).unwrap();
    el.expect("client Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == c));
    let took = t0.elapsed();
    eprintln!("abort after 5 unsignaled sends took {took:?}");
    assert!(took < Duration::from_millis(1500), "the teardown waited {took:?} for flushes that never come");
    el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s));
}

/// Zero-copy (rendezvous): the receiver READs an offered payload from the sender's memory with
/// the rkey of the offer (a memory window bound for that transfer). Once the transfer is done
/// (DONE, a SEND_WITH_INV of the key), that key must not work any more: a raw READ with it fails
/// with a remote access error (and takes the connection down), while the transfer itself
/// delivered the payload intact.
#[test]
fn a_finished_transfer_key_no_longer_reads() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 4 << 20, ..Default::default() }).unwrap();
    let (c, s) = contract::pair(&mut el, &ip(), port, 4 << 20);
    let payload: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
    assert!(el.transport.send_shared(c, 1, 0, Box::new(payload.clone())).unwrap(), "1 MiB went zero-copy");
    el.transport.flush();
    let got = contract::receive(&mut el, s, 1);
    assert!(got[0].payload == payload, "the payload arrived changed");
    el.expect("the sender's Sent", WAIT, |e| matches!(e, Event::Sent { conn, count: 1 } if *conn == c));
    let (addr, rkey, len, window) = el.transport.last_offer(s).expect("the server saw the offer");
    assert_eq!(len, 1 << 20);
    // Soft-RoCE has type-2 memory windows: the key is a window's, invalidated by the DONE.
    assert!(window, "the offer's key is not a memory window's");
    el.transport.probe_read(s, addr, rkey, 4096).unwrap();
    let closed = el.expect("the prober's Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s));
    let Event::Closed { error: Some(e), .. } = closed else { panic!("the probe did not fail: {closed:?}") };
    eprintln!("READ with the finished transfer's key: {e}");
    assert!(e.message.contains("status 10"), "expected a remote access error (status 10): {e}");
    el.expect("client Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == c));
    drop(el);
    assert_rdma_zero("after the probe");
}

/// A peer that ignores the link credits (sends with none of our buffers left to it) would drain
/// the shared receive queue of every connection on the device. It is cut off as a protocol
/// violation the moment it exceeds its window; another connection on the same device keeps
/// exchanging frames.
#[test]
fn a_peer_beyond_its_credits_is_cut_off_and_others_keep_working() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) = el.transport.listen(&ListenOptions { host: ip(), ..Default::default() }).unwrap();
    let (good_c, good_s) = contract::pair(&mut el, &ip(), port, 1 << 20);
    let (bad_c, bad_s) = contract::pair(&mut el, &ip(), port, 1 << 20);
    el.transport.send_ignoring_credits(bad_c, 1, 48).unwrap();
    el.transport.flush();
    let closed = el.expect("the flooder's Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == bad_s));
    let Event::Closed { error: Some(e), .. } = closed else { panic!("closed without a reason: {closed:?}") };
    eprintln!("flooder cut off: {e}");
    assert_eq!(e.code, ErrorCode::MalformedFrame, "{e}");
    assert!(e.message.contains("beyond its link credits"), "{e}");
    for i in 0..100u32 {
        el.transport.send(good_c, 1, 0, &i.to_be_bytes()).unwrap();
    }
    let got = contract::receive(&mut el, good_s, 100);
    assert!(
        got.iter().enumerate().all(|(i, f)| f.payload == (i as u32).to_be_bytes()),
        "the good connection lost or reordered frames"
    );
    el.expect("the flooder's own end Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == bad_c));
    el.transport.close(good_c).unwrap();
    el.expect("client Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == good_c));
    el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == good_s));
    drop(el);
    assert_rdma_zero("after the flood");
}

/// Zero-copy through the registration cache: the same buffer sent again is not registered again
/// (one registration, then hits), each transfer binding a fresh window key over it; a different
/// buffer is registered; every transfer arrives intact; closing the last connection lets the
/// cached buffers go (live counts back to zero).
#[test]
fn a_buffer_sent_again_is_registered_once() {
    let Some((_g, mut el)) = setup() else { return };
    let (_lid, port) =
        el.transport.listen(&ListenOptions { host: ip(), max_payload: 4 << 20, ..Default::default() }).unwrap();
    let (c, s) = contract::pair(&mut el, &ip(), port, 4 << 20);
    let shared = std::rc::Rc::new((0..(1u32 << 20)).map(|i| (i * 13 + 1) as u8).collect::<Vec<u8>>());
    struct Lent(std::rc::Rc<Vec<u8>>);
    impl AsRef<[u8]> for Lent {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    let mut keys = Vec::new();
    for _ in 0..5 {
        assert!(el.transport.send_shared(c, 1, 0, Box::new(Lent(shared.clone()))).unwrap());
        el.transport.flush();
        let got = contract::receive(&mut el, s, 1);
        assert!(got[0].payload == *shared, "a transfer arrived changed");
        el.expect("Sent", WAIT, |e| matches!(e, Event::Sent { conn, count: 1 } if *conn == c));
        keys.push(el.transport.last_offer(s).unwrap().1);
    }
    let other = vec![9u8; 1 << 20];
    assert!(el.transport.send_shared(c, 1, 0, Box::new(other.clone())).unwrap());
    el.transport.flush();
    assert!(contract::receive(&mut el, s, 1)[0].payload == other);
    let (registered, hits) = el.transport.cache_stats();
    eprintln!("registrations {registered}, cache hits {hits}, window keys {keys:x?}");
    assert_eq!(
        (registered, hits),
        (2, 4),
        "the same buffer five times: one registration and four hits; then another buffer"
    );
    keys.dedup();
    assert_eq!(keys.len(), 5, "each transfer binds a fresh key");
    el.transport.close(c).unwrap();
    el.expect("client Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == c));
    el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s));
    drop(el);
    assert_rdma_zero("after the cached transfers");
}
