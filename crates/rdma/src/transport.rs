//! `RdmaTransport`: the `Transport` commands. Calls validate what they can at once (unknown ids,
//! frame size, queue bound) and hand the rest to the reactor thread, which owns every resource.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use rdma_graceful_core::transport::{validate_host, validate_max_payload};
use rdma_graceful_core::{
    ConnId, ConnectOptions, ErrorCode, EventSink, Frame, ListenOptions, ListenerId, Transport, TransportError,
};

use crate::conn::Gate;
use crate::sys::EventFd;
use crate::SEND_QUEUE_LIMIT;

pub(crate) enum Cmd {
    Listen { opts: ListenOptions, addr: SocketAddr, reply: mpsc::Sender<Result<(ListenerId, u16), TransportError>> },
    CloseListener { id: ListenerId, reply: mpsc::Sender<Result<(), TransportError>> },
    Connect { id: ConnId, opts: ConnectOptions, addr: Result<SocketAddr, TransportError> },
    Send { id: ConnId, frame: Frame },
    Close { id: ConnId },
    Abort { id: ConnId },
    Shutdown,
}

pub(crate) struct Shared {
    cmds: Mutex<VecDeque<Cmd>>,
    pub waker: EventFd,
    pub gates: Mutex<HashMap<ConnId, Arc<Gate>>>,
    pub sink: Arc<dyn EventSink>,
}

impl Shared {
    pub fn push(&self, cmd: Cmd) {
        lock(&self.cmds).push_back(cmd);
        self.waker.wake();
    }

    pub fn take(&self) -> VecDeque<Cmd> {
        std::mem::take(&mut *lock(&self.cmds))
    }

    pub fn gate(&self, id: ConnId) -> Option<Arc<Gate>> {
        lock(&self.gates).get(&id).cloned()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reliable connections over RDMA RC queue pairs (rdma-cm for setup). One reactor thread per
/// transport; the thread and every resource end when the transport is dropped.
pub struct RdmaTransport {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl RdmaTransport {
    /// Loads libibverbs/librdmacm, checks that an RDMA device exists and starts the reactor.
    /// `ErrorCode::Unavailable` names what is missing (a library and its package, or a device).
    pub fn new(sink: Arc<dyn EventSink>) -> Result<RdmaTransport, TransportError> {
        let lib = crate::loader::lib().map_err(|m| TransportError::new(ErrorCode::Unavailable, m))?;
        let n = crate::device::count_devices(lib).map_err(|m| TransportError::new(ErrorCode::Unavailable, m))?;
        if n == 0 {
            return Err(TransportError::new(
                ErrorCode::Unavailable,
                "no RDMA device found: libibverbs is installed but lists no device (load a driver, e.g. \
                 `modprobe rdma_rxe && rdma link add rxe0 type rxe netdev <if>` for Soft-RoCE)",
            ));
        }
        let waker = EventFd::new().map_err(|e| TransportError::from_io("eventfd", &e))?;
        let shared = Arc::new(Shared { cmds: Mutex::new(VecDeque::new()), waker, gates: Mutex::new(HashMap::new()), sink });
        let (ready_tx, ready_rx) = mpsc::channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rdma-graceful-rdma".into())
            .spawn(move || crate::reactor::run(lib, s, ready_tx))
            .map_err(|e| TransportError::from_io("spawning the rdma reactor thread", &e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(RdmaTransport { shared, thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(TransportError::new(ErrorCode::Io, "the rdma reactor thread died while starting"))
            }
        }
    }

    fn gate(&self, id: ConnId) -> Result<Arc<Gate>, TransportError> {
        self.shared.gate(id).ok_or_else(|| not_found(id))
    }
}

fn not_found(id: ConnId) -> TransportError {
    TransportError::new(ErrorCode::NotFound, format!("no open rdma connection with id {id}"))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, TransportError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| TransportError::new(ErrorCode::AddressUnreachable, format!("cannot resolve {host}: {e}")))?
        .collect();
    // rdma-cm over RoCE is most often IPv4; prefer it when a name has both.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| TransportError::new(ErrorCode::AddressUnreachable, format!("{host} has no address")))
}

fn reactor_gone() -> TransportError {
    TransportError::new(ErrorCode::Io, "the rdma reactor thread is gone")
}

impl Transport for RdmaTransport {
    fn listen(&self, opts: &ListenOptions) -> Result<(ListenerId, u16), TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        let addr = resolve(&opts.host, opts.port)?;
        let (reply, rx) = mpsc::channel();
        self.shared.push(Cmd::Listen { opts: opts.clone(), addr, reply });
        rx.recv().map_err(|_| reactor_gone())?
    }

    fn close_listener(&self, listener: ListenerId) -> Result<(), TransportError> {
        let (reply, rx) = mpsc::channel();
        self.shared.push(Cmd::CloseListener { id: listener, reply });
        rx.recv().map_err(|_| reactor_gone())?
    }

    fn connect(&self, opts: &ConnectOptions) -> Result<ConnId, TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        let id = rdma_graceful_core::ids::next_id();
        lock(&self.shared.gates).insert(id, Arc::new(Gate::new(opts.max_payload)));
        let addr = resolve(&opts.host, opts.port);
        self.shared.push(Cmd::Connect { id, opts: opts.clone(), addr });
        Ok(id)
    }

    fn send(&self, conn: ConnId, frame: Frame) -> Result<(), TransportError> {
        let gate = self.gate(conn)?;
        if gate.closing.load(Ordering::SeqCst) {
            return Err(TransportError::new(ErrorCode::NotFound, format!("rdma connection {conn} is closing")));
        }
        frame.validate(gate.max_payload.load(Ordering::SeqCst))?;
        if gate.queued.fetch_add(1, Ordering::SeqCst) >= SEND_QUEUE_LIMIT {
            gate.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(TransportError::new(
                ErrorCode::Io,
                format!("rdma connection {conn} has {SEND_QUEUE_LIMIT} frames queued: send queue full"),
            ));
        }
        self.shared.push(Cmd::Send { id: conn, frame });
        Ok(())
    }

    fn close(&self, conn: ConnId) -> Result<(), TransportError> {
        self.gate(conn)?.closing.store(true, Ordering::SeqCst);
        self.shared.push(Cmd::Close { id: conn });
        Ok(())
    }

    fn abort(&self, conn: ConnId) -> Result<(), TransportError> {
        self.gate(conn)?.closing.store(true, Ordering::SeqCst);
        self.shared.push(Cmd::Abort { id: conn });
        Ok(())
    }
}

impl Drop for RdmaTransport {
    /// Aborts every connection and listener (their Closed/ListenerClosed events are still
    /// reported), frees everything, and joins the reactor; bounded by the drain deadline.
    fn drop(&mut self) {
        self.shared.push(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                crate::report("the rdma reactor thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdma_graceful_core::Event;

    struct Discard;
    impl EventSink for Discard {
        fn push(&self, _: Event) {}
    }

    /// On a machine without rdma-core or without a device (this is what CI hosts are), `new`
    /// must fail with Unavailable and say which of the two is missing.
    #[test]
    fn without_rdma_new_is_unavailable_and_names_what_is_missing() {
        match RdmaTransport::new(Arc::new(Discard)) {
            Ok(_) => eprintln!("SKIPPED: this machine has an RDMA device, so the no-device path cannot be shown here"),
            Err(e) => {
                eprintln!("as expected: {e}");
                assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
                assert!(
                    e.message.contains("no RDMA device") || e.message.contains("libibverbs.so.1 not found") || e.message.contains("librdmacm.so.1 not found"),
                    "{e}"
                );
            }
        }
    }
}
