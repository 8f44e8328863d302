//! The tcp transport: the same frame semantics as rdma, over TCP, for machines without RDMA.
//!
//! One tokio runtime (a single worker thread) per transport. Each connection is one task that
//! drives a reader and a writer concurrently (so two peers writing to each other never deadlock)
//! and ends by freeing the socket and pushing exactly one `Closed`. Idle connections cost no CPU:
//! everything waits on readiness, nothing polls.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::counters::{Kind, Live};
use crate::error::{ErrorCode, TransportError};
use crate::event::{Event, EventSink};
use crate::frame::{check_preamble, Decoder, Frame, PREAMBLE};
use crate::ids::next_id;
use crate::transport::{
    validate_host, validate_max_payload, ConnId, ConnectOptions, ListenOptions, ListenerId, Transport,
};

/// After a local close has flushed and half-closed, how long to wait for the peer's end of stream
/// before dropping the socket anyway.
const LINGER: Duration = Duration::from_secs(2);
/// After a failed accept (e.g. out of file descriptors), wait before trying again instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const READ_CHUNK: usize = 64 * 1024;

enum Command {
    /// A frame to write; the `Live` counts it as a send buffer until written or dropped.
    Frame(Frame, Live),
    /// Write what is queued, half-close, then wait (bounded) for the peer's end of stream.
    Close,
}

struct ConnHandle {
    commands: mpsc::UnboundedSender<Command>,
    abort: Option<oneshot::Sender<()>>,
    closing: Arc<AtomicBool>,
    max_payload: u32,
}

struct Shared {
    sink: Arc<dyn EventSink>,
    conns: Mutex<HashMap<ConnId, ConnHandle>>,
    listeners: Mutex<HashMap<ListenerId, oneshot::Sender<()>>>,
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, ConnHandle>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<ListenerId, oneshot::Sender<()>>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct TcpTransport {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
}

impl TcpTransport {
    pub fn new(sink: Arc<dyn EventSink>) -> Result<TcpTransport, TransportError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rdma-graceful-tcp")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| TransportError::from_io("starting the tcp transport thread", &e))?;
        let shared = Arc::new(Shared {
            sink,
            conns: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
        });
        Ok(TcpTransport { runtime: Some(runtime), shared })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("runtime lives until drop").handle()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        // Dropping the runtime drops every task, and with them every socket and live guard.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        self.shared.conns().clear();
        self.shared.listeners().clear();
    }
}

/// Everything a connection task owns.
struct ConnParts {
    id: ConnId,
    max_payload: u32,
    command_rx: mpsc::UnboundedReceiver<Command>,
    abort_rx: oneshot::Receiver<()>,
    closing: Arc<AtomicBool>,
    live: Live,
}

impl Transport for TcpTransport {
    fn listen(&self, opts: &ListenOptions) -> Result<(ListenerId, u16), TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        let addr = resolve_one(&opts.host, opts.port)?;
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let _guard = self.handle().enter();
        let listener = socket
            .and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(addr)?;
                s.listen(opts.backlog.max(1))
            })
            .map_err(|e| TransportError::from_io(&format!("listening on {addr}"), &e))?;
        let port = listener
            .local_addr()
            .map_err(|e| TransportError::from_io("reading the listener's address", &e))?
            .port();
        let id = next_id();
        let (stop, stop_rx) = oneshot::channel();
        self.shared.listeners().insert(id, stop);
        let live = Live::new(Kind::TcpListeners);
        let shared = self.shared.clone();
        let opts = opts.clone();
        self.handle().spawn(accept_loop(shared, id, listener, live, opts, stop_rx));
        Ok((id, port))
    }

    fn close_listener(&self, listener: ListenerId) -> Result<(), TransportError> {
        match self.shared.listeners().remove(&listener) {
            Some(stop) => {
                let _ = stop.send(());
                Ok(())
            }
            None => Err(not_found("listener", listener)),
        }
    }

    fn connect(&self, opts: &ConnectOptions) -> Result<ConnId, TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        if opts.port == 0 {
            return Err(TransportError::new(ErrorCode::InvalidArgument, "port must be between 1 and 65535"));
        }
        let id = next_id();
        let parts = self.shared.register(id, opts.max_payload);
        let shared = self.shared.clone();
        let opts = opts.clone();
        self.handle().spawn(async move {
            let mut parts = parts;
            let deadline = Duration::from_millis(opts.timeout_ms as u64);
            let target = format!("{}:{}", opts.host, opts.port);
            let attempt = async {
                let stream = TcpStream::connect(&target)
                    .await
                    .map_err(|e| TransportError::from_io(&format!("connecting to {target}"), &e))?;
                handshake(stream).await
            };
            // An abort during the attempt ends it at once (as on rdma), not once it connected.
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(deadline, attempt) => outcome.unwrap_or_else(|_| {
                    Err(TransportError::new(
                        ErrorCode::Timeout,
                        format!("connecting to {target} took longer than {} ms", opts.timeout_ms),
                    ))
                }),
                _ = &mut parts.abort_rx => Err(TransportError::new(
                    ErrorCode::ConnectionReset,
                    "connection aborted locally before it was established",
                )),
            };
            match outcome {
                Ok((stream, peer)) => {
                    shared.sink.push(Event::Connected { conn: id, peer, qp: None });
                    run_connection(shared, parts, stream).await;
                }
                Err(error) => {
                    shared.conns().remove(&id);
                    drop(parts);
                    shared.sink.push(Event::ConnectFailed { conn: id, error });
                }
            }
        });
        Ok(id)
    }

    fn send(&self, conn: ConnId, frame: Frame) -> Result<(), TransportError> {
        let conns = self.shared.conns();
        let handle = conns.get(&conn).ok_or_else(|| not_found("connection", conn))?;
        if handle.closing.load(Ordering::SeqCst) {
            return Err(TransportError::new(
                ErrorCode::NotFound,
                format!("connection {conn} is closing: no more frames can be sent"),
            ));
        }
        frame.validate(handle.max_payload)?;
        handle
            .commands
            .send(Command::Frame(frame, Live::new(Kind::TcpSendBuffers)))
            .map_err(|_| not_found("connection", conn))
    }

    fn close(&self, conn: ConnId) -> Result<(), TransportError> {
        let conns = self.shared.conns();
        let handle = conns.get(&conn).ok_or_else(|| not_found("connection", conn))?;
        if !handle.closing.swap(true, Ordering::SeqCst) {
            let _ = handle.commands.send(Command::Close);
        }
        Ok(())
    }

    fn abort(&self, conn: ConnId) -> Result<(), TransportError> {
        let mut conns = self.shared.conns();
        let handle = conns.get_mut(&conn).ok_or_else(|| not_found("connection", conn))?;
        handle.closing.store(true, Ordering::SeqCst);
        if let Some(abort) = handle.abort.take() {
            let _ = abort.send(());
        }
        Ok(())
    }
}

impl Shared {
    /// Registers a connection's command channel; the returned parts go to its task.
    fn register(self: &Arc<Self>, id: ConnId, max_payload: u32) -> ConnParts {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (abort, abort_rx) = oneshot::channel();
        let closing = Arc::new(AtomicBool::new(false));
        self.conns().insert(id, ConnHandle { commands, abort: Some(abort), closing: closing.clone(), max_payload });
        ConnParts { id, max_payload, command_rx, abort_rx, closing, live: Live::new(Kind::TcpConnections) }
    }
}

fn not_found(what: &str, id: u32) -> TransportError {
    TransportError::new(ErrorCode::NotFound, format!("{what} {id} is closed or does not exist"))
}

fn resolve_one(host: &str, port: u16) -> Result<SocketAddr, TransportError> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map_err(|e| TransportError::new(ErrorCode::AddressUnreachable, format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| TransportError::new(ErrorCode::AddressUnreachable, format!("{host} resolves to no address")))
}

/// Exchanges preambles: sends ours, reads and checks the peer's. Both sides do the same, so
/// neither waits for the other to speak first.
async fn handshake(mut stream: TcpStream) -> Result<(TcpStream, String), TransportError> {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "unknown".into());
    let _ = stream.set_nodelay(true);
    stream
        .write_all(&PREAMBLE)
        .await
        .map_err(|e| TransportError::from_io(&format!("sending the preamble to {peer}"), &e))?;
    let mut got = [0u8; PREAMBLE.len()];
    let mut n = 0;
    while n < got.len() {
        let r = stream
            .read(&mut got[n..])
            .await
            .map_err(|e| TransportError::from_io(&format!("reading the preamble from {peer}"), &e))?;
        if r == 0 {
            return Err(TransportError::new(
                ErrorCode::PeerClosed,
                format!("{peer} closed the connection before completing the handshake"),
            ));
        }
        n += r;
        check_preamble(&got[..n]).map_err(|e| TransportError::new(e.code, format!("{peer}: {}", e.message)))?;
    }
    Ok((stream, peer))
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener_id: ListenerId,
    listener: TcpListener,
    live: Live,
    opts: ListenOptions,
    mut stop: oneshot::Receiver<()>,
) {
    // Peers still in their transport handshake belong to the listener: closing it ends them (they
    // never became connections) before ListenerClosed, so nothing outlives the listener's close.
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    handshakes.spawn(accept_one(shared.clone(), listener_id, stream, addr.to_string(), opts.clone()));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
        }
    }
    drop(listener);
    handshakes.abort_all();
    while handshakes.join_next().await.is_some() {}
    drop(live);
    shared.listeners().remove(&listener_id);
    shared.sink.push(Event::ListenerClosed { listener: listener_id, error: None });
}

async fn accept_one(shared: Arc<Shared>, listener: ListenerId, stream: TcpStream, peer: String, opts: ListenOptions) {
    let live = Live::new(Kind::TcpConnections);
    let deadline = Duration::from_millis(opts.handshake_timeout_ms as u64);
    let result = match tokio::time::timeout(deadline, handshake(stream)).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::new(
            ErrorCode::Timeout,
            format!("{peer} sent no handshake within {} ms", opts.handshake_timeout_ms),
        )),
    };
    drop(live);
    match result {
        Ok((stream, peer)) => {
            let id = next_id();
            let parts = shared.register(id, opts.max_payload);
            shared.sink.push(Event::Accepted { listener, conn: id, peer, qp: None });
            // From here it is a connection of its own: it outlives the listener.
            tokio::spawn(run_connection(shared, parts, stream));
        }
        Err(error) => shared.sink.push(Event::AcceptFailed { listener, peer, error }),
    }
}

/// How a writer stopped.
enum WriterEnd {
    /// Everything queued before `Close` is written and our side is half-closed.
    Flushed,
    /// The transport dropped the command channel (shutting down).
    Dropped,
}

async fn run_connection(shared: Arc<Shared>, parts: ConnParts, stream: TcpStream) {
    let ConnParts { id, max_payload, command_rx, mut abort_rx, closing, live } = parts;
    let (rd, wr) = stream.into_split();
    // The futures own the two halves of the socket: this block ends, and so frees the socket,
    // before the Closed event goes out.
    let error = {
        let reader = read_frames(id, rd, max_payload, shared.sink.clone());
        let writer = write_frames(wr, command_rx);
        tokio::pin!(reader, writer);
        tokio::select! {
            _ = &mut abort_rx => None,
            read = &mut reader => match read {
                // The peer ended its stream. If we are closing too, let our writer finish (bounded).
                Ok(()) if closing.load(Ordering::SeqCst) => {
                    let _ = tokio::time::timeout(LINGER, &mut writer).await;
                    None
                }
                Ok(()) => Some(TransportError::new(ErrorCode::PeerClosed, "the peer closed the connection")),
                Err(e) => Some(e),
            },
            written = &mut writer => match written {
                Ok(WriterEnd::Flushed) => {
                    // Wait for the peer's end of stream, so that closing never resets data it still sends.
                    tokio::select! {
                        _ = &mut abort_rx => {}
                        _ = tokio::time::timeout(LINGER, &mut reader) => {}
                    }
                    None
                }
                Ok(WriterEnd::Dropped) => None,
                Err(e) => Some(e),
            },
        }
    };
    // Free everything before telling JS, so live counts read zero once it sees Closed.
    shared.conns().remove(&id);
    drop(live);
    shared.sink.push(Event::Closed { conn: id, error });
}

async fn read_frames(
    conn: ConnId,
    mut rd: OwnedReadHalf,
    max_payload: u32,
    sink: Arc<dyn EventSink>,
) -> Result<(), TransportError> {
    let mut decoder = Decoder::new(max_payload);
    // Not zero-filled: read_buf reads into the spare capacity, so a connection that only ever
    // receives small frames keeps most of these pages untouched (not resident).
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        buf.clear();
        let n = rd.read_buf(&mut buf).await.map_err(|e| TransportError::from_io("reading from the peer", &e))?;
        if n == 0 {
            if decoder.pending() > 0 {
                return Err(TransportError::new(
                    ErrorCode::MalformedFrame,
                    format!("the peer closed the connection in the middle of a frame ({} bytes pending)", decoder.pending()),
                ));
            }
            return Ok(());
        }
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame()? {
            sink.push(Event::Message { conn, frame });
        }
    }
}

async fn write_frames(
    wr: OwnedWriteHalf,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> Result<WriterEnd, TransportError> {
    let io = |e: std::io::Error| TransportError::from_io("writing to the peer", &e);
    let mut out = BufWriter::with_capacity(READ_CHUNK, wr);
    loop {
        // Flush only when the queue is empty, so a burst of small frames becomes one write.
        let command = match commands.try_recv() {
            Ok(c) => c,
            Err(_) => {
                out.flush().await.map_err(io)?;
                match commands.recv().await {
                    Some(c) => c,
                    None => return Ok(WriterEnd::Dropped),
                }
            }
        };
        match command {
            Command::Frame(frame, _buffer) => {
                out.write_all(&frame.header()).await.map_err(io)?;
                out.write_all(&frame.payload).await.map_err(io)?;
            }
            Command::Close => {
                out.flush().await.map_err(io)?;
                out.shutdown().await.map_err(io)?;
                return Ok(WriterEnd::Flushed);
            }
        }
    }
}
