//! RDMA transport tests on a real device (run them inside the Soft-RoCE guest:
//! scripts/softroce/rust-tests.sh). Without a device each test prints why it is SKIPPED and
//! returns: it proves nothing about RDMA behaviour there.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdma_graceful_core::counters::{self, Kind};
use rdma_graceful_core::{ConnectOptions, ErrorCode, Event, EventSink, Frame, ListenOptions, Transport};
use rdma_graceful_rdma::{RdmaTransport, RECV_DEPTH};


/// Live counters are process-wide: run these tests one at a time even without --test-threads=1.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The address of the RDMA netdev (rdma-cm does not work on 127.0.0.1).
fn ip() -> String {
    std::env::var("SOFTROCE_IP").or_else(|_| std::env::var("RDMA_TEST_IP")).unwrap_or_else(|_| "10.99.0.1".into())
}

#[derive(Default)]
struct Events {
    q: Mutex<Vec<Event>>,
    cv: Condvar,
}

impl EventSink for Events {
    fn push(&self, e: Event) {
        self.q.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        self.cv.notify_all();
    }
}

impl Events {
    /// Removes and returns the first event matching `f`, waiting up to `timeout`.
    fn take(&self, timeout: Duration, f: impl Fn(&Event) -> bool) -> Option<Event> {
        let end = Instant::now() + timeout;
        let mut q = self.q.lock().unwrap();
        loop {
            if let Some(i) = q.iter().position(&f) {
                return Some(q.remove(i));
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            q = self.cv.wait_timeout(q, end - now).unwrap().0;
        }
    }

    fn expect(&self, what: &str, timeout: Duration, f: impl Fn(&Event) -> bool) -> Event {
        match self.take(timeout, f) {
            Some(e) => e,
            None => panic!("no {what} within {timeout:?}; events so far: {:?}", self.q.lock().unwrap()),
        }
    }
}

/// A transport, or None after printing why the test is skipped.
fn transport(sink: Arc<Events>) -> Option<RdmaTransport> {
    match RdmaTransport::new(sink) {
        Ok(t) => Some(t),
        Err(e) if e.code == ErrorCode::Unavailable => {
            eprintln!("SKIPPED: no RDMA device: {e}");
            None
        }
        Err(e) => panic!("RdmaTransport::new failed unexpectedly: {e}"),
    }
}

fn counts() -> Vec<(&'static str, i64)> {
    // Every rdma kind the core counts (one list to keep in sync: the core's).
    counters::ALL.iter().filter(|k| k.name().starts_with("rdma")).map(|k| (k.name(), k.get())).collect()
}

fn assert_all_zero(when: &str) {
    let c = counts();
    eprintln!("live counts {when}: {c:?}");
    assert!(c.iter().all(|(_, n)| *n == 0), "rdma resources leaked {when}: {c:?}");
}

fn listen_opts(max_payload: u32) -> ListenOptions {
    ListenOptions { host: ip(), port: 0, max_payload, ..Default::default() }
}

fn connect_opts(port: u16, max_payload: u32) -> ConnectOptions {
    ConnectOptions { host: ip(), port, max_payload, timeout_ms: 10_000 }
}

const T: Duration = Duration::from_secs(20);

#[test]
fn thousand_frames_each_way_in_order_then_close_frees_everything() {
    let _g = serial();
    let se = Arc::new(Events::default());
    let ce = Arc::new(Events::default());
    let Some(server) = transport(se.clone()) else { return };
    let client = RdmaTransport::new(ce.clone()).expect("second transport");
    let t0 = Instant::now();
    let (lid, port) = server.listen(&listen_opts(4096)).expect("listen");
    let cid = client.connect(&connect_opts(port, 4096)).expect("connect");
    let Event::Connected { qp: cqp, .. } = ce.expect("Connected", T, |e| matches!(e, Event::Connected { conn, .. } if *conn == cid)) else { unreachable!() };
    let Event::Accepted { conn: sid, qp: sqp, peer, .. } = se.expect("Accepted", T, |e| matches!(e, Event::Accepted { .. })) else { unreachable!() };
    eprintln!("connected in {:?}; peer {peer}; client qp {cqp:?}; server qp {sqp:?}", t0.elapsed());
    let (cqp, sqp) = (cqp.expect("client qp info"), sqp.expect("server qp info"));
    assert_eq!(cqp.local_qpn, sqp.remote_qpn, "server must see the client's QP number");
    assert_eq!(sqp.local_qpn, cqp.remote_qpn, "client must see the server's QP number");

    // The lifecycle layer's credits never let more than RECV_DEPTH frames be in flight; the test
    // keeps that contract with windows of 50.
    const N: u32 = 1000;
    const WINDOW: u32 = 50;
    const { assert!(WINDOW <= RECV_DEPTH) };
    let frame = |i: u32, from: u8| Frame::new((i % 16) as u8, i as u16, [&i.to_be_bytes()[..], &vec![from; (i % 300) as usize]].concat());
    let t1 = Instant::now();
    let mut next_c = 0u32;
    let mut next_s = 0u32;
    for w in 0..N / WINDOW {
        for i in w * WINDOW..(w + 1) * WINDOW {
            client.send(cid, frame(i, 0xC1)).expect("client send");
            server.send(sid, frame(i, 0x5E)).expect("server send");
        }
        for _ in 0..WINDOW {
            let Event::Message { frame: f, .. } = se.expect("message at server", T, |e| matches!(e, Event::Message { .. })) else { unreachable!() };
            assert_eq!(f, frame(next_s, 0xC1), "server got frame {next_s} out of order or damaged");
            next_s += 1;
            let Event::Message { frame: f, .. } = ce.expect("message at client", T, |e| matches!(e, Event::Message { .. })) else { unreachable!() };
            assert_eq!(f, frame(next_c, 0x5E), "client got frame {next_c} out of order or damaged");
            next_c += 1;
        }
    }
    eprintln!("{N} frames each way in order in {:?}", t1.elapsed());

    // A frame larger than the bound is refused at once, and the connection lives on.
    let e = client.send(cid, Frame::new(0, 0, vec![0; 4097])).unwrap_err();
    assert_eq!(e.code, ErrorCode::FrameTooLarge);

    let t2 = Instant::now();
    client.close(cid).expect("close");
    let closed = ce.expect("client Closed", T, |e| matches!(e, Event::Closed { conn, .. } if *conn == cid));
    assert_eq!(closed, Event::Closed { conn: cid, error: None }, "a local close reports no error");
    let Event::Closed { error, .. } = se.expect("server Closed", T, |e| matches!(e, Event::Closed { conn, .. } if *conn == sid)) else { unreachable!() };
    let error = error.expect("the server did not close: its Closed must say why");
    assert_eq!(error.code, ErrorCode::PeerClosed, "{error}");
    eprintln!("closed both in {:?} (server saw: {error})", t2.elapsed());
    assert_eq!(client.send(cid, Frame::new(0, 0, vec![])).unwrap_err().code, ErrorCode::NotFound);

    server.close_listener(lid).expect("close listener");
    se.expect("ListenerClosed", T, |e| matches!(e, Event::ListenerClosed { listener, error: None } if *listener == lid));
    // Only the two transports' CM event channels remain.
    let c = counts();
    eprintln!("live counts with both transports still up: {c:?}");
    assert_eq!(Kind::RdmaCmEventChannels.get(), 2);
    assert!(c.iter().filter(|(n, _)| *n != Kind::RdmaCmEventChannels.name()).all(|(_, n)| *n == 0), "{c:?}");
    drop(server);
    drop(client);
    assert_all_zero("after close and drop");
}

#[test]
fn connect_to_a_port_without_listener_is_refused() {
    let _g = serial();
    let ce = Arc::new(Events::default());
    let Some(client) = transport(ce.clone()) else { return };
    let t0 = Instant::now();
    // A port nobody listens on (rdma-cm ports are their own space: no tcp listener interferes).
    let cid = client.connect(&connect_opts(1, 4096)).expect("connect");
    let Event::ConnectFailed { error, .. } = ce.expect("ConnectFailed", T, |e| matches!(e, Event::ConnectFailed { conn, .. } if *conn == cid)) else { unreachable!() };
    eprintln!("refused in {:?}: {error}", t0.elapsed());
    assert_eq!(error.code, ErrorCode::ConnectionRefused, "{error}");
    drop(client);
    assert_all_zero("after a refused connect");
}

#[test]
fn abort_and_transport_drop_free_everything() {
    let _g = serial();
    let se = Arc::new(Events::default());
    let ce = Arc::new(Events::default());
    let Some(server) = transport(se.clone()) else { return };
    let client = RdmaTransport::new(ce.clone()).expect("second transport");
    let (_lid, port) = server.listen(&listen_opts(1024)).expect("listen");
    let cid = client.connect(&connect_opts(port, 1024)).expect("connect");
    ce.expect("Connected", T, |e| matches!(e, Event::Connected { .. }));
    let Event::Accepted { conn: sid, .. } = se.expect("Accepted", T, |e| matches!(e, Event::Accepted { .. })) else { unreachable!() };
    server.abort(sid).expect("abort");
    assert_eq!(se.expect("server Closed", T, |e| matches!(e, Event::Closed { .. })), Event::Closed { conn: sid, error: None });
    let Event::Closed { error, .. } = ce.expect("client Closed", T, |e| matches!(e, Event::Closed { .. })) else { unreachable!() };
    assert_eq!(error.map(|e| e.code), Some(ErrorCode::PeerClosed));
    // A second connection left open is freed by dropping the transports.
    let cid2 = client.connect(&connect_opts(port, 1024)).expect("connect");
    ce.expect("Connected", T, |e| matches!(e, Event::Connected { conn, .. } if *conn == cid2));
    se.expect("Accepted", T, |e| matches!(e, Event::Accepted { .. }));
    let _ = cid;
    drop(client);
    drop(server);
    assert_all_zero("after transports dropped with a connection open");
}

/// The peer half of `a_killed_peer_is_detected`: run as a child process of the test binary.
#[test]
#[ignore = "child process of a_killed_peer_is_detected"]
fn child_peer() {
    let Ok(addr) = std::env::var("RDMA_GRACEFUL_CHILD_CONNECT") else { return };
    let addr: SocketAddr = addr.parse().unwrap();
    let ev = Arc::new(Events::default());
    let t = RdmaTransport::new(ev.clone()).expect("child transport");
    let c = t
        .connect(&ConnectOptions { host: addr.ip().to_string(), port: addr.port(), max_payload: 1024, timeout_ms: 10_000 })
        .unwrap();
    ev.expect("Connected", T, |e| matches!(e, Event::Connected { .. }));
    t.send(c, Frame::new(1, 0, b"hello from the child".to_vec())).unwrap();
    println!("CHILD READY");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_peer_is_detected() {
    let _g = serial();
    let se = Arc::new(Events::default());
    let Some(server) = transport(se.clone()) else { return };
    let (_lid, port) = server.listen(&listen_opts(1024)).expect("listen");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_peer", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("RDMA_GRACEFUL_CHILD_CONNECT", format!("{}:{port}", ip()))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn child");
    let Event::Accepted { conn: sid, .. } = se.expect("Accepted", T, |e| matches!(e, Event::Accepted { .. })) else { unreachable!() };
    let Event::Message { frame, .. } = se.expect("the child's frame", T, |e| matches!(e, Event::Message { .. })) else { unreachable!() };
    assert_eq!(frame.payload, b"hello from the child");
    let t0 = Instant::now();
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    let Event::Closed { error, .. } = se.expect("Closed after SIGKILL", Duration::from_secs(60), |e| matches!(e, Event::Closed { conn, .. } if *conn == sid)) else {
        unreachable!()
    };
    let error = error.expect("a killed peer must be reported with an error");
    eprintln!("SIGKILLed peer detected after {:?}: {error}", t0.elapsed());
    assert!(matches!(error.code, ErrorCode::PeerClosed | ErrorCode::ConnectionReset), "{error}");
    drop(server);
    assert_all_zero("after the killed peer's connection was closed");
}

/// Removes the netem partition even when the test fails.
struct Partition;

impl Partition {
    fn cut() -> Option<Partition> {
        let ok = Command::new("tc").args(["qdisc", "add", "dev", "lo", "root", "netem", "loss", "100%"]).status().is_ok_and(|s| s.success());
        ok.then_some(Partition)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = Command::new("tc").args(["qdisc", "del", "dev", "lo", "root"]).status();
    }
}

/// A partition (netem drops everything on the guest's lo, which carries rxe traffic): the side
/// that sends gets a retry-exceeded completion error and reports ConnectionReset; an idle side
/// notices nothing (that is the lifecycle layer's heartbeat's job).
#[test]
#[ignore = "Soft-RoCE on the guest's 6.1 kernel: netem on lo does not cut an established rxe connection's \
            data (no retry-exceeded in 60 s, measured); run with --ignored on hardware or a newer rxe"]
fn a_partition_fails_the_sending_side_with_a_reset() {
    let _g = serial();
    if std::env::var("SOFTROCE_IP").is_err() {
        eprintln!("SKIPPED: not inside the Soft-RoCE guest (SOFTROCE_IP unset): this test cuts the guest's lo with netem");
        return;
    }
    let se = Arc::new(Events::default());
    let ce = Arc::new(Events::default());
    let Some(server) = transport(se.clone()) else { return };
    let client = RdmaTransport::new(ce.clone()).expect("second transport");
    let (_lid, port) = server.listen(&listen_opts(1024)).expect("listen");
    let cid = client.connect(&connect_opts(port, 1024)).expect("connect");
    ce.expect("Connected", T, |e| matches!(e, Event::Connected { .. }));
    let Event::Accepted { conn: sid, .. } = se.expect("Accepted", T, |e| matches!(e, Event::Accepted { .. })) else { unreachable!() };
    client.send(cid, Frame::new(0, 0, b"before".to_vec())).unwrap();
    se.expect("first frame", T, |e| matches!(e, Event::Message { .. }));
    let Some(cut) = Partition::cut() else {
        eprintln!("SKIPPED: `tc qdisc add dev lo root netem loss 100%` failed (needs root and sch_netem)");
        return;
    };
    let t0 = Instant::now();
    client.send(cid, Frame::new(0, 0, b"into the void".to_vec())).unwrap();
    let Event::Closed { error, .. } = ce.expect("client Closed", Duration::from_secs(60), |e| matches!(e, Event::Closed { conn, .. } if *conn == cid)) else {
        unreachable!()
    };
    let error = error.expect("a partition must be reported with an error");
    eprintln!("partition detected by the sender after {:?}: {error}", t0.elapsed());
    assert_eq!(error.code, ErrorCode::ConnectionReset, "{error}");
    drop(cut);
    server.abort(sid).unwrap();
    se.expect("server Closed", T, |e| matches!(e, Event::Closed { conn, .. } if *conn == sid));
    drop(client);
    drop(server);
    assert_all_zero("after the partitioned connection was closed");
}
