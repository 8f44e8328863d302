//! The native liveness sweep (`Liveness`) over the tcp transport on loopback: heartbeats that
//! never reach the protocol, a frozen peer reported silent on time, and a stalled loop that does
//! not blame its peer. The tests sleep and measure, so they run one at a time (SERIAL).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdma_graceful_core::conformance::{self as contract, WAIT};
use rdma_graceful_core::frame::split;
use rdma_graceful_core::liveness::WatchOptions;
use rdma_graceful_core::tcp::TcpTransport;
use rdma_graceful_core::{ConnId, ConnectOptions, Event, EventLoop, ListenOptions, Liveness, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

const HOST: &str = "127.0.0.1";
/// The protocol's HEARTBEAT kind (src/protocol/frames.ts); the sweep is told it, as here.
const HEARTBEAT: u8 = 7;
const DATA: u8 = 3;
/// The credits field the tests' frames carry (as a protocol's last frame before the watch would).
const CREDITS: u16 = 64;

fn setup() -> (MutexGuard<'static, ()>, EventLoop<Liveness>) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    (serial, EventLoop::new(Liveness::new(Box::new(TcpTransport::new().unwrap()))))
}

fn watch(interval_ms: u64, timeout_ms: u64) -> WatchOptions {
    WatchOptions {
        heartbeat_kind: HEARTBEAT,
        credits: CREDITS,
        interval: Some(Duration::from_millis(interval_ms)),
        timeout: Some(Duration::from_millis(timeout_ms)),
    }
}

/// Runs the loop for `d`, returning every event that came.
fn run_for(el: &mut EventLoop<Liveness>, d: Duration) -> Vec<Event> {
    let end = Instant::now() + d;
    let mut seen = Vec::new();
    while let Some(e) = el.take(end.saturating_duration_since(Instant::now()), |_| true) {
        seen.push(e);
    }
    seen
}

fn listen(el: &mut EventLoop<Liveness>) -> u16 {
    el.transport.listen(&ListenOptions { host: HOST.into(), ..Default::default() }).expect("listen").1
}

/// A connection to ourselves, both ends watched: heartbeat every 20 ms, silent after 150 ms.
fn watched_pair(el: &mut EventLoop<Liveness>) -> (ConnId, ConnId) {
    let port = listen(el);
    let (c, s) = contract::pair(el, HOST, port, 1024);
    let now = Instant::now();
    el.transport.watch(c, watch(20, 150), now).unwrap();
    el.transport.watch(s, watch(20, 150), now).unwrap();
    (c, s)
}

#[test]
fn idle_connections_keep_each_other_alive_without_waking_the_protocol() {
    let (_s, mut el) = setup();
    let (c, s) = watched_pair(&mut el);
    let seen = run_for(&mut el, Duration::from_millis(600));
    assert!(!seen.iter().any(|e| matches!(e, Event::Silent { .. })), "a healthy pair reported silent: {seen:?}");
    // The first heartbeat of each side reaches the protocol (the sweep learns the credits field
    // it repeats from it); every later one is taken in natively.
    for e in &seen {
        if let Event::Frames { data, .. } = e {
            for f in split(data) {
                assert_eq!((f.kind, f.credits), (HEARTBEAT, CREDITS), "a heartbeat must repeat the last credits field");
            }
        }
    }
    for conn in [c, s] {
        let frames = seen.iter().filter(|e| matches!(e, Event::Frames { conn: x, .. } if *x == conn)).count();
        assert!(frames <= 1, "{frames} Frames events on {conn} while idle");
        let counts = el.transport.heartbeats(conn).unwrap();
        assert!(counts.sent >= 10 && counts.received >= 10, "{conn}: {counts:?} in 600 ms at a 20 ms interval");
    }
    // A data frame still gets through, and the close drops the watch.
    el.transport.send(c, DATA, 0, b"still here").unwrap();
    let got = contract::receive(&mut el, s, 1);
    assert_eq!(got[0].payload, b"still here");
    el.transport.close(c).unwrap();
    el.transport.abort(s).unwrap();
    run_for(&mut el, Duration::from_millis(50));
    assert_eq!(el.transport.watching(), 0);
}

#[test]
fn a_frozen_peer_is_reported_silent_after_the_timeout_and_not_before() {
    let (_s, mut el) = setup();
    let port = listen(&mut el);
    // The peer is a transport of its own that this test stops polling once connected: its
    // kernel still acknowledges, as for a process frozen by SIGSTOP, but it sends nothing.
    let mut peer = EventLoop::new(TcpTransport::new().unwrap());
    let opts = ConnectOptions { host: HOST.into(), port, max_payload: 1024, ..Default::default() };
    let p = peer.transport.connect(&opts).unwrap();
    let mut ours = None;
    let deadline = Instant::now() + WAIT;
    while ours.is_none() && Instant::now() < deadline {
        peer.turn(Instant::now() + Duration::from_millis(5));
        if let Some(Event::Accepted { conn, .. }) =
            el.take(Duration::from_millis(5), |e| matches!(e, Event::Accepted { .. }))
        {
            ours = Some(conn);
        }
    }
    let ours = ours.expect("accepted");
    peer.expect("Connected", WAIT, |e| matches!(e, Event::Connected { conn, .. } if *conn == p));
    let timeout = Duration::from_millis(200);
    let t0 = Instant::now();
    el.transport.watch(ours, watch(20, 200), t0).unwrap();
    el.expect("Silent", WAIT, |e| matches!(e, Event::Silent { conn } if *conn == ours));
    let after = t0.elapsed();
    assert!(after >= timeout, "reported silent after {after:?}, before the {timeout:?} timeout");
    assert!(after <= timeout + Duration::from_millis(250), "reported silent only after {after:?}");
    assert!(el.transport.heartbeats(ours).unwrap().sent >= 5, "our heartbeats kept going out meanwhile");
}

#[test]
fn a_stalled_loop_does_not_count_its_own_stall_against_a_healthy_peer() {
    let (_s, mut el) = setup();
    let (c, s) = watched_pair(&mut el);
    run_for(&mut el, Duration::from_millis(100));
    // Both ends in this process, which stands still for over three timeouts (a long synchronous
    // task): neither end could send, so neither may blame the other.
    std::thread::sleep(Duration::from_millis(500));
    let seen = run_for(&mut el, Duration::from_millis(300));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Silent { .. })),
        "the loop's own stall was blamed on the peer: {seen:?}"
    );
    // And the judge still works after the stall: a peer that goes quiet is reported.
    el.transport.close(s).unwrap();
    el.transport.watch(c, watch(20, 150), Instant::now()).unwrap();
    let seen = run_for(&mut el, Duration::from_millis(400));
    assert!(
        seen.iter().any(|e| matches!(e, Event::Silent { conn } if *conn == c)
            || matches!(e, Event::Closed { conn, .. } if *conn == c)),
        "c neither silent nor closed once its peer closed: {seen:?}"
    );
}
