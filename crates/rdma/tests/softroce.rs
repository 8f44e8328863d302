//! RDMA transport tests on a real device (run them inside the Soft-RoCE guest:
//! scripts/softroce/rust-tests.sh): the transport contract (`conformance`, the same suite tcp runs
//! on the host), then what only rdma has (queue-pair numbers, a killed peer process, teardown when
//! the transport is dropped). Without a device each test prints why it is SKIPPED and returns: it
//! proves nothing about RDMA behaviour there.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdma_graceful_core::conformance::{self as contract, WAIT};
use rdma_graceful_core::counters;
use rdma_graceful_core::frame::split;
use rdma_graceful_core::{ConnectOptions, ErrorCode, Event, EventLoop, ListenOptions, Pollable, Transport};
use rdma_graceful_rdma::{RdmaTransport, RECV_DEPTH};

/// Live counters are process-wide: run these tests one at a time even without --test-threads=1.
static SERIAL: Mutex<()> = Mutex::new(());

/// The address of the RDMA netdev (rdma-cm does not work on 127.0.0.1).
fn ip() -> String {
    std::env::var("SOFTROCE_IP").or_else(|_| std::env::var("RDMA_TEST_IP")).unwrap_or_else(|_| "10.99.0.1".into())
}

/// The serial lock and a loop over a new transport, or None after printing why the test is skipped.
fn setup() -> Option<(MutexGuard<'static, ()>, EventLoop<RdmaTransport>)> {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    match RdmaTransport::new() {
        Ok(t) => Some((serial, EventLoop::new(t))),
        Err(e) if e.code == ErrorCode::Unavailable => {
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
    // Bursts of 50 frames: within RECV_DEPTH, as the lifecycle layer's credits guarantee.
    const { assert!(50 <= RECV_DEPTH) };
    contract::frames_in_order_then_close_frees_everything(&mut el, &ip());
    drop(el);
    assert_rdma_zero("after close and drop");
}

#[test]
fn contract_close_delivers_everything_sent_before_it() {
    let Some((_g, mut el)) = setup() else { return };
    // More frames than the send slots: the rest waits in the software queue, and close waits for it.
    contract::close_delivers_everything_sent_before_it(&mut el, &ip(), 4096, RECV_DEPTH as usize - 4);
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
/// timed while 20 connections are set up (MR registration, QP/CQ creation inside the polls that
/// accept and connect) and closed (QP/CQ destruction, MR deregistration). A measurement, printed for
/// docs/event-loop.md; the assertions are only that everything was set up and freed.
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
    eprintln!("longest blocking of the caller's loop, 20 connections of 64 KiB buffers (5 MiB registered each):");
    for (what, d) in &worst {
        eprintln!("  {what}: {d:?}");
    }
    drop(el);
    assert_rdma_zero("after the measurement");
}
