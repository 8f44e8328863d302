//! The tcp transport over loopback: the transport contract (`conformance`, shared with rdma), then
//! what only tcp can show (raw sockets speaking something else). Tests share the process-wide
//! live counters, so they run one at a time (SERIAL), each with its own transport.

use std::io::{Read, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdma_graceful_core::conformance::{self as contract, WAIT};
use rdma_graceful_core::frame::{split, PREAMBLE};
use rdma_graceful_core::tcp::TcpTransport;
use rdma_graceful_core::{ErrorCode, Event, EventLoop, Frame, ListenOptions, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

fn setup() -> (MutexGuard<'static, ()>, EventLoop<TcpTransport>) {
    let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    (serial, EventLoop::new(TcpTransport::new().unwrap()))
}

const HOST: &str = "127.0.0.1";

#[test]
fn frames_in_order_then_close_frees_everything() {
    let (_s, mut el) = setup();
    contract::frames_in_order_then_close_frees_everything(&mut el, HOST);
}

#[test]
fn close_delivers_everything_sent_before_it() {
    let (_s, mut el) = setup();
    // 10 MiB: far more than the socket buffers take at once, so most of it waits in our queue.
    contract::close_delivers_everything_sent_before_it(&mut el, HOST, 512 * 1024, 20);
}

#[test]
fn abort_closes_at_once_and_the_peer_sees_it() {
    let (_s, mut el) = setup();
    contract::abort_closes_at_once_and_the_peer_sees_it(&mut el, HOST);
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let (_s, mut el) = setup();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    contract::connect_without_listener_is_refused(&mut el, HOST, port);
}

#[test]
fn bad_arguments_are_typed_errors() {
    let (_s, mut el) = setup();
    contract::bad_arguments_are_typed_errors(&mut el);
    let e = el.transport.connect(&rdma_graceful_core::ConnectOptions { port: 0, ..Default::default() }).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

#[test]
fn garbage_and_oversized_frames_are_refused_and_the_listener_keeps_serving() {
    let (_s, mut el) = setup();
    let (_lid, port) = el.transport.listen(&ListenOptions { max_payload: 1024, ..Default::default() }).unwrap();

    // A raw socket speaking something else.
    let mut raw = std::net::TcpStream::connect((HOST, port)).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    match el.expect("AcceptFailed", WAIT, |e| matches!(e, Event::AcceptFailed { .. })) {
        Event::AcceptFailed { error, .. } => {
            assert_eq!(error.code, ErrorCode::MalformedFrame);
            assert!(error.message.contains("not an rdma-graceful endpoint"), "{}", error.message);
        }
        _ => unreachable!(),
    }

    // A raw socket with the right preamble and then a header announcing too much.
    let mut raw = std::net::TcpStream::connect((HOST, port)).unwrap();
    raw.write_all(&PREAMBLE).unwrap();
    let s = match el.expect("Accepted", WAIT, |e| matches!(e, Event::Accepted { .. })) {
        Event::Accepted { conn, .. } => conn,
        _ => unreachable!(),
    };
    raw.write_all(&Frame::new(0, 0, vec![0; 2048]).header()).unwrap();
    match el.expect("Closed", WAIT, |e| matches!(e, Event::Closed { .. })) {
        Event::Closed { conn, error: Some(e) } => {
            assert_eq!(conn, s);
            assert_eq!(e.code, ErrorCode::FrameTooLarge);
        }
        e => panic!("unexpected {e:?}"),
    }
    let mut sink = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = raw.read_to_end(&mut sink); // the server hung up on it

    // Meanwhile a well-behaved client is served as usual.
    let (c, s2) = contract::pair(&mut el, HOST, port, 1 << 20);
    el.transport.send(c, 0, 0, b"still here").unwrap();
    assert_eq!(contract::receive(&mut el, s2, 1), vec![Frame::new(0, 0, b"still here".to_vec())]);
    assert_eq!(el.transport.send(c, 0, 0, &vec![0; 2 << 20]).unwrap_err().code, ErrorCode::FrameTooLarge);
}

#[test]
fn frames_split_across_reads_and_packed_into_one_arrive_whole() {
    let (_s, mut el) = setup();
    let (_lid, port) = el.transport.listen(&ListenOptions::default()).unwrap();
    let mut raw = std::net::TcpStream::connect((HOST, port)).unwrap();
    raw.set_nodelay(true).unwrap();
    raw.write_all(&PREAMBLE).unwrap();
    let s = match el.expect("Accepted", WAIT, |e| matches!(e, Event::Accepted { .. })) {
        Event::Accepted { conn, .. } => conn,
        _ => unreachable!(),
    };
    let frames: Vec<Frame> = (0..5u8).map(|i| Frame::new(i, i as u16 * 100, vec![i; 10 * i as usize])).collect();
    let mut bytes = Vec::new();
    for f in &frames {
        bytes.extend_from_slice(&f.header());
        bytes.extend_from_slice(&f.payload);
    }
    // A frame cut in the middle of its header, then the rest in one write.
    raw.write_all(&bytes[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let _ = el.take(Duration::from_millis(50), |_| false);
    raw.write_all(&bytes[3..]).unwrap();
    let got = contract::receive(&mut el, s, frames.len());
    assert_eq!(got, frames);
    assert!(split(&[]).is_empty());
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_deadline() {
    let (_s, mut el) = setup();
    let (_lid, port) = el.transport.listen(&ListenOptions { handshake_timeout_ms: 100, ..Default::default() }).unwrap();
    let _raw = std::net::TcpStream::connect((HOST, port)).unwrap();
    match el.expect("AcceptFailed", WAIT, |e| matches!(e, Event::AcceptFailed { .. })) {
        Event::AcceptFailed { error, .. } => assert_eq!(error.code, ErrorCode::Timeout),
        _ => unreachable!(),
    }
}

#[test]
fn a_peer_that_never_reads_fills_the_send_queue_to_its_bound_not_memory() {
    let (_s, mut el) = setup();
    let raw_listener = std::net::TcpListener::bind((HOST, 0)).unwrap();
    let port = raw_listener.local_addr().unwrap().port();
    let max = 1024 * 1024;
    let opts = rdma_graceful_core::ConnectOptions { host: HOST.into(), port, max_payload: max, ..Default::default() };
    let c = el.transport.connect(&opts).unwrap();
    let (mut raw, _) = raw_listener.accept().unwrap();
    raw.write_all(&PREAMBLE).unwrap();
    el.expect("Connected", WAIT, |e| matches!(e, Event::Connected { conn, .. } if *conn == c));
    let frame = vec![7u8; max as usize];
    let mut accepted = 0usize;
    let err = loop {
        match el.transport.send(c, 1, 0, &frame) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 200, "200 MiB queued for a peer that never reads");
    };
    assert_eq!(err.code, ErrorCode::QueueFull, "{err}");
    assert!(accepted * max as usize >= rdma_graceful_core::tcp::SEND_QUEUE_LIMIT_BYTES, "{accepted} MiB");
    // Refused, not failed: the connection is still there.
    assert!(el.take(Duration::from_millis(100), |e| matches!(e, Event::Closed { .. })).is_none());
    drop(raw);
}
