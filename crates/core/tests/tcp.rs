//! The tcp transport over loopback, end to end: frames in order, close semantics, bad input.
//! Tests share the process-wide live counters, so they run one at a time (SERIAL) and each drops
//! its transports (which frees everything they still hold) before the next starts.

use std::io::{Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rdma_graceful_core::counters;
use rdma_graceful_core::event::Event;
use rdma_graceful_core::frame::PREAMBLE;
use rdma_graceful_core::tcp::TcpTransport;
use rdma_graceful_core::{ConnectOptions, ErrorCode, EventSink, Frame, ListenOptions, Transport};

static SERIAL: Mutex<()> = Mutex::new(());

struct ChannelSink(Mutex<mpsc::Sender<Event>>);
impl EventSink for ChannelSink {
    fn push(&self, e: Event) {
        let _ = self.0.lock().unwrap().send(e);
    }
}

fn transport() -> (TcpTransport, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    (TcpTransport::new(Arc::new(ChannelSink(Mutex::new(tx)))).unwrap(), rx)
}

fn next(rx: &mpsc::Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(10)).expect("an event within 10 s")
}

fn listen(t: &TcpTransport, max_payload: u32) -> (u32, u16) {
    t.listen(&ListenOptions { max_payload, ..Default::default() }).unwrap()
}

fn connect(t: &TcpTransport, port: u16) -> u32 {
    t.connect(&ConnectOptions { port, ..Default::default() }).unwrap()
}

/// Connects client to server and returns (client conn, server conn).
fn pair(server: &TcpTransport, srx: &mpsc::Receiver<Event>, client: &TcpTransport, crx: &mpsc::Receiver<Event>, port: u16) -> (u32, u32) {
    let c = connect(client, port);
    assert!(matches!(next(crx), Event::Connected { conn, .. } if conn == c));
    let s = match next(srx) {
        Event::Accepted { conn, .. } => conn,
        e => panic!("expected Accepted, got {e:?}"),
    };
    let _ = server;
    (c, s)
}

#[test]
fn thousand_frames_each_way_arrive_in_order_and_close_frees_everything() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (server, srx) = transport();
    let (client, crx) = transport();
    let (lid, port) = listen(&server, 1 << 20);
    let (c, s) = pair(&server, &srx, &client, &crx, port);
    for i in 0..1000u32 {
        client.send(c, Frame::new(0, (i % 7) as u16, i.to_be_bytes().to_vec())).unwrap();
        server.send(s, Frame::new(1, 0, (i * 3).to_be_bytes().to_vec())).unwrap();
    }
    for (rx, conn, mul, kind) in [(&srx, s, 1u32, 0u8), (&crx, c, 3, 1)] {
        for i in 0..1000u32 {
            match next(rx) {
                Event::Message { conn: got, frame } => {
                    assert_eq!(got, conn);
                    assert_eq!(frame.kind, kind);
                    assert_eq!(frame.payload, (i * mul).to_be_bytes().to_vec(), "frame {i} out of order");
                }
                e => panic!("expected message {i}, got {e:?}"),
            }
        }
    }
    client.close(c).unwrap();
    assert_eq!(next(&crx), Event::Closed { conn: c, error: None });
    match next(&srx) {
        Event::Closed { conn, error: Some(e) } => assert_eq!((conn, e.code), (s, ErrorCode::PeerClosed)),
        e => panic!("unexpected {e:?}"),
    }
    server.close_listener(lid).unwrap();
    assert_eq!(next(&srx), Event::ListenerClosed { listener: lid, error: None });
    for (name, n) in counters::snapshot() {
        assert_eq!(n, 0, "{name} still live after close");
    }
    assert_eq!(client.send(c, Frame::new(0, 0, vec![])).unwrap_err().code, ErrorCode::NotFound);
}

#[test]
fn close_writes_everything_queued_before_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (server, srx) = transport();
    let (client, crx) = transport();
    let (_lid, port) = listen(&server, 1 << 20);
    let (c, s) = pair(&server, &srx, &client, &crx, port);
    let big = vec![7u8; 512 * 1024];
    for _ in 0..20 {
        client.send(c, Frame::new(0, 0, big.clone())).unwrap();
    }
    client.close(c).unwrap();
    assert_eq!(client.send(c, Frame::new(0, 0, vec![])).unwrap_err().code, ErrorCode::NotFound);
    let mut got = 0;
    loop {
        match next(&srx) {
            Event::Message { frame, .. } => {
                assert_eq!(frame.payload, big);
                got += 1;
            }
            Event::Closed { conn, error } => {
                assert_eq!(conn, s);
                assert_eq!(error.unwrap().code, ErrorCode::PeerClosed);
                break;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(got, 20);
    assert_eq!(next(&crx), Event::Closed { conn: c, error: None });
}

#[test]
fn abort_closes_at_once_and_the_peer_sees_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (server, srx) = transport();
    let (client, crx) = transport();
    let (_lid, port) = listen(&server, 1 << 20);
    let (c, s) = pair(&server, &srx, &client, &crx, port);
    client.abort(c).unwrap();
    assert_eq!(next(&crx), Event::Closed { conn: c, error: None });
    match next(&srx) {
        Event::Closed { conn, error: Some(e) } => {
            assert_eq!(conn, s);
            assert!(matches!(e.code, ErrorCode::PeerClosed | ErrorCode::ConnectionReset), "{e}");
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (client, crx) = transport();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = connect(&client, port);
    match next(&crx) {
        Event::ConnectFailed { conn, error } => {
            assert_eq!(conn, c);
            assert_eq!(error.code, ErrorCode::ConnectionRefused);
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn garbage_and_oversized_frames_are_refused_and_the_listener_keeps_serving() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (server, srx) = transport();
    let (client, crx) = transport();
    let (_lid, port) = listen(&server, 1024);

    // A raw socket speaking something else.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    match next(&srx) {
        Event::AcceptFailed { error, .. } => {
            assert_eq!(error.code, ErrorCode::MalformedFrame);
            assert!(error.message.contains("not an rdma-graceful endpoint"), "{}", error.message);
        }
        e => panic!("unexpected {e:?}"),
    }

    // A raw socket with the right preamble and then a header announcing too much.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.write_all(&PREAMBLE).unwrap();
    let s = match next(&srx) {
        Event::Accepted { conn, .. } => conn,
        e => panic!("unexpected {e:?}"),
    };
    raw.write_all(&Frame::new(0, 0, vec![0; 2048]).header()).unwrap();
    match next(&srx) {
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
    let (c, s2) = pair(&server, &srx, &client, &crx, port);
    client.send(c, Frame::new(0, 0, b"still here".to_vec())).unwrap();
    assert_eq!(next(&srx), Event::Message { conn: s2, frame: Frame::new(0, 0, b"still here".to_vec()) });
    assert_eq!(client.send(c, Frame::new(0, 0, vec![0; 2 << 20])).unwrap_err().code, ErrorCode::FrameTooLarge);
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_deadline() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (server, srx) = transport();
    let (_lid, port) =
        server.listen(&ListenOptions { handshake_timeout_ms: 100, ..Default::default() }).unwrap();
    let _raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    match next(&srx) {
        Event::AcceptFailed { error, .. } => assert_eq!(error.code, ErrorCode::Timeout),
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (t, _rx) = transport();
    let e = t.connect(&ConnectOptions { port: 0, ..Default::default() }).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = t.connect(&ConnectOptions { host: "".into(), port: 1, ..Default::default() }).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = t.listen(&ListenOptions { max_payload: 0, ..Default::default() }).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(t.send(424242, Frame::new(0, 0, vec![])).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(t.close_listener(424242).unwrap_err().code, ErrorCode::NotFound);
}
