//! The #[napi] surface: one `Reactor` per transport kind. JS calls commands synchronously (they
//! return at once); events come back in batches: the transport's threads queue them, the first
//! event of a batch wakes JS through a threadsafe function, and JS takes the whole batch with
//! `drain()`. So crossings are per batch, not per message.
//!
//! Errors thrown here carry the core's stable code (ERR_...) as `err.code`.

use std::collections::HashMap;
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Function};
use napi::threadsafe_function::ThreadsafeFunctionCallMode;
use napi_derive::napi;
use rdma_graceful_core::event::{BatchQueue, Event, QpInfo};
use rdma_graceful_core::tcp::TcpTransport;
use rdma_graceful_rdma::RdmaTransport;
use rdma_graceful_core::{
    counters, ConnectOptions, ErrorCode, EventSink, Frame, ListenOptions, Transport, TransportError,
};

type Result<T> = napi::Result<T, String>;

fn js_error(e: TransportError) -> napi::Error<String> {
    napi::Error::new(e.code.as_str().to_string(), e.message)
}

fn invalid(message: impl Into<String>) -> napi::Error<String> {
    js_error(TransportError::new(ErrorCode::InvalidArgument, message))
}

#[napi(object)]
pub struct NativeListenOptions {
    pub host: String,
    pub port: u32,
    pub max_payload: u32,
    pub backlog: Option<u32>,
    pub handshake_timeout_ms: Option<u32>,
}

#[napi(object)]
pub struct NativeConnectOptions {
    pub host: String,
    pub port: u32,
    pub max_payload: u32,
    pub timeout_ms: u32,
}

#[napi(object)]
pub struct NativeListening {
    pub id: u32,
    pub port: u32,
}

/// One transport event. `type` says which fields are set:
/// accepted (listener, conn, peer, qp), acceptFailed (listener, peer, code, message),
/// listenerClosed (listener, code?, message?), connected (conn, peer, qp),
/// connectFailed (conn, code, message), message (conn, kind, credits, payload),
/// closed (conn, code?, message?: absent when the local side closed it).
#[napi(object)]
pub struct NativeEvent {
    #[napi(js_name = "type")]
    pub kind: String,
    pub conn: Option<u32>,
    pub listener: Option<u32>,
    pub peer: Option<String>,
    pub local_qpn: Option<u32>,
    pub remote_qpn: Option<u32>,
    pub frame_kind: Option<u32>,
    pub credits: Option<u32>,
    pub payload: Option<Buffer>,
    pub code: Option<String>,
    pub message: Option<String>,
}

impl NativeEvent {
    fn new(kind: &str) -> NativeEvent {
        NativeEvent {
            kind: kind.to_string(),
            conn: None,
            listener: None,
            peer: None,
            local_qpn: None,
            remote_qpn: None,
            frame_kind: None,
            credits: None,
            payload: None,
            code: None,
            message: None,
        }
    }

    fn with_error(mut self, error: Option<TransportError>) -> NativeEvent {
        if let Some(e) = error {
            self.code = Some(e.code.as_str().to_string());
            self.message = Some(e.message);
        }
        self
    }

    fn with_qp(mut self, qp: Option<QpInfo>) -> NativeEvent {
        if let Some(qp) = qp {
            self.local_qpn = Some(qp.local_qpn);
            self.remote_qpn = Some(qp.remote_qpn);
        }
        self
    }
}

impl From<Event> for NativeEvent {
    fn from(event: Event) -> NativeEvent {
        match event {
            Event::Accepted { listener, conn, peer, qp } => NativeEvent {
                listener: Some(listener),
                conn: Some(conn),
                peer: Some(peer),
                ..NativeEvent::new("accepted")
            }
            .with_qp(qp),
            Event::AcceptFailed { listener, peer, error } => NativeEvent {
                listener: Some(listener),
                peer: Some(peer),
                ..NativeEvent::new("acceptFailed")
            }
            .with_error(Some(error)),
            Event::ListenerClosed { listener, error } => {
                NativeEvent { listener: Some(listener), ..NativeEvent::new("listenerClosed") }.with_error(error)
            }
            Event::Connected { conn, peer, qp } => {
                NativeEvent { conn: Some(conn), peer: Some(peer), ..NativeEvent::new("connected") }.with_qp(qp)
            }
            Event::ConnectFailed { conn, error } => {
                NativeEvent { conn: Some(conn), ..NativeEvent::new("connectFailed") }.with_error(Some(error))
            }
            Event::Message { conn, frame } => NativeEvent {
                conn: Some(conn),
                frame_kind: Some(frame.kind as u32),
                credits: Some(frame.credits as u32),
                payload: Some(frame.payload.into()),
                ..NativeEvent::new("message")
            },
            Event::Closed { conn, error } => {
                NativeEvent { conn: Some(conn), ..NativeEvent::new("closed") }.with_error(error)
            }
        }
    }
}

fn port(p: u32) -> Result<u16> {
    u16::try_from(p).map_err(|_| invalid(format!("port {p} is out of range 0..65535")))
}

#[napi]
pub struct Reactor {
    /// None once shut down: every command then fails with ERR_NOT_FOUND.
    transport: Option<Box<dyn Transport>>,
    queue: Arc<BatchQueue>,
}

#[napi]
impl Reactor {
    /// `kind` is "tcp" or "rdma"; `onEvents` is called with no arguments when a
    /// batch of events is ready: call `drain()` then. The callback does not keep Node alive.
    #[napi(constructor)]
    pub fn new(kind: String, on_events: Function<(), ()>) -> Result<Self> {
        let wake = on_events
            .build_threadsafe_function::<()>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()
            .map_err(|e| napi::Error::new("ERR_IO".to_string(), e.reason))?;
        let queue = Arc::new(BatchQueue::new(move || {
            wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
        }));
        let sink: Arc<dyn EventSink> = queue.clone();
        let transport: Box<dyn Transport> = match kind.as_str() {
            "tcp" => Box::new(TcpTransport::new(sink).map_err(js_error)?),
            // Loads libibverbs/librdmacm now (dlopen): without them this fails with Unavailable.
            "rdma" => Box::new(RdmaTransport::new(sink).map_err(js_error)?),
            other => return Err(invalid(format!("unknown transport {other:?}: expected \"tcp\" or \"rdma\""))),
        };
        Ok(Reactor { transport: Some(transport), queue })
    }

    fn transport(&self) -> Result<&dyn Transport> {
        self.transport.as_deref().ok_or_else(|| {
            js_error(TransportError::new(ErrorCode::NotFound, "the transport was shut down"))
        })
    }

    /// Stops the transport now and frees everything it holds (its thread, and for rdma its CM
    /// event channel and devices). JS calls this when nothing is open, so that live counts read
    /// zero; a later listen/connect starts a new Reactor.
    #[napi]
    pub fn shutdown(&mut self) {
        self.transport = None;
    }

    /// Every event queued since the last call, in order.
    #[napi]
    pub fn drain(&self) -> Vec<NativeEvent> {
        self.queue.drain().into_iter().map(NativeEvent::from).collect()
    }

    #[napi]
    pub fn listen(&self, opts: NativeListenOptions) -> Result<NativeListening> {
        let defaults = ListenOptions::default();
        let options = ListenOptions {
            host: opts.host,
            port: port(opts.port)?,
            backlog: opts.backlog.unwrap_or(defaults.backlog),
            max_payload: opts.max_payload,
            handshake_timeout_ms: opts.handshake_timeout_ms.unwrap_or(defaults.handshake_timeout_ms),
        };
        let (id, port) = self.transport()?.listen(&options).map_err(js_error)?;
        Ok(NativeListening { id, port: port as u32 })
    }

    #[napi]
    pub fn close_listener(&self, listener: u32) -> Result<()> {
        self.transport()?.close_listener(listener).map_err(js_error)
    }

    #[napi]
    pub fn connect(&self, opts: NativeConnectOptions) -> Result<u32> {
        let options = ConnectOptions {
            host: opts.host,
            port: port(opts.port)?,
            max_payload: opts.max_payload,
            timeout_ms: opts.timeout_ms,
        };
        self.transport()?.connect(&options).map_err(js_error)
    }

    /// Queues one frame. The payload is copied, so the caller may reuse its buffer at once.
    #[napi]
    pub fn send(&self, conn: u32, kind: u32, credits: u32, payload: &[u8]) -> Result<()> {
        let kind = u8::try_from(kind).map_err(|_| invalid(format!("frame kind {kind} out of range")))?;
        let credits = u16::try_from(credits).map_err(|_| invalid(format!("credits {credits} out of range")))?;
        self.transport()?.send(conn, Frame::new(kind, credits, payload.to_vec())).map_err(js_error)
    }

    #[napi]
    pub fn close(&self, conn: u32) -> Result<()> {
        self.transport()?.close(conn).map_err(js_error)
    }

    #[napi]
    pub fn abort(&self, conn: u32) -> Result<()> {
        self.transport()?.abort(conn).map_err(js_error)
    }
}

/// Live count of every resource kind the native core owns, process-wide.
#[napi]
pub fn live_counts() -> HashMap<String, i64> {
    counters::snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[napi(object)]
pub struct RdmaLimits {
    /// Receive buffers posted per rdma connection: the peer may never have more frames in flight.
    pub recv_depth: u32,
    /// Default largest message on rdma (each connection registers buffers of this size).
    pub suggested_max_payload: u32,
}

/// Fixed sizes of the rdma transport that the protocol's credit window must respect.
#[napi]
pub fn rdma_limits() -> RdmaLimits {
    RdmaLimits {
        recv_depth: rdma_graceful_rdma::RECV_DEPTH,
        suggested_max_payload: rdma_graceful_rdma::SUGGESTED_MAX_PAYLOAD,
    }
}
