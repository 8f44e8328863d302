//! The transport contract as tests, written once and run against every transport: tcp on the host
//! (crates/core/tests/tcp.rs) and rdma on a real device (crates/rdma/tests/softroce.rs). Each
//! function drives one `EventLoop` holding both ends and panics with what it saw on a breach.

use std::time::Duration;

use crate::counters;
use crate::error::ErrorCode;
use crate::event::Event;
use crate::frame::{split, Frame};
use crate::poll::EventLoop;
use crate::transport::{ConnId, ConnectOptions, ListenOptions, Transport};

pub const WAIT: Duration = Duration::from_secs(10);

/// Every live counter of a per-connection or per-listener resource is zero (tests run one at a
/// time: the counters are process-wide). The transport's own event channel (rdma) lives as long as
/// the transport and is not counted here.
pub fn assert_all_zero(when: &str) {
    for (name, n) in counters::snapshot() {
        if name != counters::Kind::RdmaCmEventChannels.name() {
            assert_eq!(n, 0, "{name} still live {when}");
        }
    }
}

/// Connects to `port` on `host` and returns (client conn, server conn).
pub fn pair<T: Transport>(el: &mut EventLoop<T>, host: &str, port: u16, max_payload: u32) -> (ConnId, ConnId) {
    let opts = ConnectOptions { host: host.into(), port, max_payload, ..Default::default() };
    let c = el.transport.connect(&opts).expect("connect");
    el.expect("Connected", WAIT, |e| matches!(e, Event::Connected { conn, .. } if *conn == c));
    let s = match el.expect("Accepted", WAIT, |e| matches!(e, Event::Accepted { .. })) {
        Event::Accepted { conn, .. } => conn,
        _ => unreachable!(),
    };
    (c, s)
}

/// Receives frames on `conn` until `n` arrived (or a Closed), returning them in order.
pub fn receive<T: Transport>(el: &mut EventLoop<T>, conn: ConnId, n: usize) -> Vec<Frame> {
    let mut got = Vec::new();
    while got.len() < n {
        let what = format!("frames on {conn} ({} of {n} so far)", got.len());
        match el.expect(
            &what,
            WAIT,
            |e| matches!(e, Event::Frames { conn: c, .. } | Event::Closed { conn: c, .. } if *c == conn),
        ) {
            Event::Frames { data, count, .. } => {
                let frames = split(&data);
                assert_eq!(frames.len(), count as usize, "Frames.count must match its data");
                got.extend(frames);
            }
            e => panic!("{conn} closed after {} of {n} frames: {e:?}", got.len()),
        }
    }
    got
}

fn listen<T: Transport>(el: &mut EventLoop<T>, host: &str, max_payload: u32) -> (u32, u16) {
    el.transport.listen(&ListenOptions { host: host.into(), max_payload, ..Default::default() }).expect("listen")
}

/// 1,000 frames each way arrive in order with their kind and credits; the closer's Closed has no
/// error, the peer's says PeerClosed; closing the listener reports it; every counter is zero.
pub fn frames_in_order_then_close_frees_everything<T: Transport>(el: &mut EventLoop<T>, host: &str) {
    let (lid, port) = listen(el, host, 4096);
    let (c, s) = pair(el, host, port, 4096);
    // Bounded bursts: rdma's receive window is the peer's posted buffers.
    for burst in 0..20u32 {
        for i in burst * 50..(burst + 1) * 50 {
            el.transport.send(c, 0, (i % 7) as u16, &i.to_be_bytes()).unwrap();
            el.transport.send(s, 1, 0, &(i * 3).to_be_bytes()).unwrap();
        }
        for (conn, mul, kind) in [(s, 1u32, 0u8), (c, 3, 1)] {
            for (k, f) in receive(el, conn, 50).into_iter().enumerate() {
                let i = burst * 50 + k as u32;
                let credits = if kind == 0 { (i % 7) as u16 } else { 0 };
                assert_eq!(f, Frame::new(kind, credits, (i * mul).to_be_bytes().to_vec()), "frame {i} on {conn}");
            }
        }
    }
    el.transport.close(c).unwrap();
    el.expect("client Closed", WAIT, |e| *e == Event::Closed { conn: c, error: None });
    match el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s)) {
        Event::Closed { error: Some(e), .. } => assert_eq!(e.code, ErrorCode::PeerClosed, "{e}"),
        e => panic!("the peer's close must read PeerClosed: {e:?}"),
    }
    el.transport.close_listener(lid).unwrap();
    el.expect("ListenerClosed", WAIT, |e| *e == Event::ListenerClosed { listener: lid, error: None });
    assert_all_zero("after close");
    assert_eq!(el.transport.send(c, 0, 0, &[]).unwrap_err().code, ErrorCode::NotFound);
}

/// Frames sent before close() all arrive before the peer sees the end, even when they exceed what
/// the socket or the send queue takes at once.
pub fn close_delivers_everything_sent_before_it<T: Transport>(
    el: &mut EventLoop<T>,
    host: &str,
    size: usize,
    n: usize,
) {
    let (lid, port) = listen(el, host, size as u32);
    let (c, s) = pair(el, host, port, size as u32);
    let big: Vec<u8> = (0..size).map(|i| i as u8).collect();
    for _ in 0..n {
        el.transport.send(c, 0, 0, &big).unwrap();
    }
    el.transport.close(c).unwrap();
    assert_eq!(el.transport.send(c, 0, 0, &[]).unwrap_err().code, ErrorCode::NotFound, "no send after close");
    for f in receive(el, s, n) {
        assert!(f.payload == big, "payload changed in flight");
    }
    el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s));
    el.expect("client Closed", WAIT, |e| *e == Event::Closed { conn: c, error: None });
    el.transport.close_listener(lid).unwrap();
    el.expect("ListenerClosed", WAIT, |e| matches!(e, Event::ListenerClosed { .. }));
    assert_all_zero("after close");
}

/// abort() ends a connection at once (Closed without error); the peer learns of it.
pub fn abort_closes_at_once_and_the_peer_sees_it<T: Transport>(el: &mut EventLoop<T>, host: &str) {
    let (lid, port) = listen(el, host, 1024);
    let (c, s) = pair(el, host, port, 1024);
    el.transport.abort(c).unwrap();
    el.expect("client Closed", WAIT, |e| *e == Event::Closed { conn: c, error: None });
    match el.expect("server Closed", WAIT, |e| matches!(e, Event::Closed { conn, .. } if *conn == s)) {
        Event::Closed { error: Some(e), .. } => {
            assert!(matches!(e.code, ErrorCode::PeerClosed | ErrorCode::ConnectionReset), "{e}")
        }
        e => panic!("the peer must see an error: {e:?}"),
    }
    el.transport.close_listener(lid).unwrap();
    el.expect("ListenerClosed", WAIT, |e| matches!(e, Event::ListenerClosed { .. }));
    assert_all_zero("after abort");
}

/// A connect to a port nobody listens on fails with ConnectionRefused, as an event.
pub fn connect_without_listener_is_refused<T: Transport>(el: &mut EventLoop<T>, host: &str, port: u16) {
    let c = el.transport.connect(&ConnectOptions { host: host.into(), port, ..Default::default() }).unwrap();
    match el.expect("ConnectFailed", WAIT, |e| matches!(e, Event::ConnectFailed { conn, .. } if *conn == c)) {
        Event::ConnectFailed { error, .. } => assert_eq!(error.code, ErrorCode::ConnectionRefused, "{error}"),
        _ => unreachable!(),
    }
    assert_all_zero("after a refused connect");
}

/// Bad arguments and unknown ids are typed errors, returned at once.
pub fn bad_arguments_are_typed_errors<T: Transport>(el: &mut EventLoop<T>) {
    let t = &mut el.transport;
    let e = t.connect(&ConnectOptions { host: "".into(), port: 1, ..Default::default() }).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = t.listen(&ListenOptions { max_payload: 0, ..Default::default() }).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(t.send(424242, 0, 0, &[]).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(t.close(424242).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(t.abort(424242).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(t.close_listener(424242).unwrap_err().code, ErrorCode::NotFound);
}
