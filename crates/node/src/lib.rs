//! The #[napi] surface: one `BindingTransport` per transport kind per Node environment (main
//! thread or worker). It runs on that environment's own libuv loop (`loop_driver`): JS calls
//! commands synchronously (a send is written or posted before the call returns) and receives
//! events in one call per batch (`events::BindingEvent[]`).
//!
//! Errors thrown here carry the core's stable code (ERR_...) as `err.code`.

mod events;
mod loop_driver;
mod uv;

use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

use napi::bindgen_prelude::{Buffer, Function, JsValue};
use napi::{sys, Env};
use napi_derive::napi;
use rdma_graceful_core::liveness::WatchOptions;
use rdma_graceful_core::tcp::TcpTransport;
use rdma_graceful_core::{
    counters, ConnectOptions, ErrorCode, ListenOptions, Liveness, Pollable, RdmaTuning, Transport, TransportError,
};
use rdma_graceful_rdma::RdmaTransport;

pub use events::{BindingError, BindingErrorCode, BindingEvent, BindingQp};
use loop_driver::LoopDriver;

type Result<T> = napi::Result<T, String>;

fn js_error(e: TransportError) -> napi::Error<String> {
    napi::Error::new(e.code.as_str().to_string(), e.message)
}

fn invalid(message: impl Into<String>) -> napi::Error<String> {
    js_error(TransportError::new(ErrorCode::InvalidArgument, message))
}

fn stopped() -> napi::Error<String> {
    js_error(TransportError::new(ErrorCode::NotFound, "the transport was shut down"))
}

/// Where the binding reports what it cannot throw (it must never panic into Node).
pub(crate) fn report(msg: &str) {
    eprintln!("rdma-graceful: {msg}");
}

#[napi(object)]
pub struct BindingListenOptions {
    pub host: String,
    pub port: u32,
    pub max_payload: u32,
    pub backlog: Option<u32>,
    pub handshake_timeout_ms: Option<u32>,
    pub rdma_ack_timeout_exponent: Option<u32>,
    pub rdma_busy_poll_us: Option<u32>,
    pub rdma_zero_copy_threshold: Option<u32>,
}

#[napi(object)]
pub struct BindingConnectOptions {
    pub host: String,
    pub port: u32,
    pub max_payload: u32,
    pub timeout_ms: u32,
    pub rdma_retry_count: Option<u32>,
    pub rdma_ack_timeout_exponent: Option<u32>,
    pub rdma_busy_poll_us: Option<u32>,
    pub rdma_zero_copy_threshold: Option<u32>,
}

#[napi(object)]
pub struct BindingListening {
    pub id: u32,
    pub port: u32,
}

/// An rdma tuning value within `range`, named as the JS option is.
fn tuning(name: &str, v: Option<u32>, range: std::ops::RangeInclusive<u32>) -> Result<Option<u8>> {
    match v {
        None => Ok(None),
        Some(n) if range.contains(&n) => Ok(Some(n as u8)),
        Some(n) => Err(invalid(format!("{name} must be an integer in {}..={}, got {n}", range.start(), range.end()))),
    }
}

/// The most a connection may busy-poll after a completion: 1 s.
const MAX_BUSY_POLL_US: u32 = 1_000_000;

fn busy_poll_us(v: Option<u32>) -> Result<Option<u32>> {
    match v {
        Some(n) if n > MAX_BUSY_POLL_US => {
            Err(invalid(format!("rdmaBusyPollUs must be an integer in 0..={MAX_BUSY_POLL_US}, got {n}")))
        }
        v => Ok(v),
    }
}

fn port(p: u32) -> Result<u16> {
    u16::try_from(p).map_err(|_| invalid(format!("port {p} is out of range 0..65535")))
}

unsafe extern "C" fn on_env_cleanup(arg: *mut c_void) {
    // The environment is going away (process exit, or a worker ending) with the transport still
    // running: close its handles now (a worker that exits with an open uv handle aborts). The
    // strong count lent to the hook stays with `BindingTransport`, which gives it back when it is
    // finalized (or leaks one small struct, if the environment never finalizes it).
    let driver = &*(arg as *const LoopDriver);
    driver.environment_ended();
}

#[napi]
pub struct BindingTransport {
    driver: Rc<LoopDriver>,
    env: sys::napi_env,
    /// The strong count lent to the environment's cleanup hook, until shutdown takes it back.
    cleanup_arg: Option<*const LoopDriver>,
}

#[napi]
impl BindingTransport {
    /// `kind` is "tcp" or "rdma". `onEvents` receives every batch of events, in order, on this
    /// thread: `onEvents(events)`, or for a batch that is one Frames event (the hot path)
    /// `onEvents(undefined, data, conn, count)`, the Frames event's fields without its object. The
    /// transport keeps the loop alive (see `setRef`) until `shutdown`.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        kind: String,
        #[napi(
            ts_arg_type = "(events: BindingEvent[] | undefined, data?: Buffer, conn?: number, count?: number) => void"
        )]
        on_events: Function<'_, Vec<BindingEvent>, ()>,
    ) -> Result<Self> {
        let transport: Box<dyn Transport> = match kind.as_str() {
            "tcp" => Box::new(TcpTransport::new().map_err(js_error)?),
            // Loads libibverbs/librdmacm now (dlopen): without them this fails with Unavailable.
            "rdma" => Box::new(RdmaTransport::new().map_err(js_error)?),
            other => return Err(invalid(format!("unknown transport {other:?}: expected \"tcp\" or \"rdma\""))),
        };
        let raw_env = env.raw();
        let driver = LoopDriver::start(raw_env, transport, on_events.raw())
            .map_err(|e| js_error(TransportError::new(ErrorCode::Io, e.reason)))?;
        let arg = Rc::into_raw(driver.clone());
        // SAFETY: registering a hook on our own environment; `shutdown` removes it with the same pair.
        let status = unsafe { sys::napi_add_env_cleanup_hook(raw_env, Some(on_env_cleanup), arg as *mut c_void) };
        let cleanup_arg = if status == sys::Status::napi_ok {
            Some(arg)
        } else {
            // SAFETY: the hook was not registered: take the count back.
            drop(unsafe { Rc::from_raw(arg) });
            None
        };
        Ok(BindingTransport { driver, env: raw_env, cleanup_arg })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Liveness) -> std::result::Result<T, TransportError>) -> Result<T> {
        self.driver.with(f).ok_or_else(stopped)?.map_err(js_error)
    }

    /// Stops the transport now and frees everything it holds. JS calls this when nothing is open,
    /// so that live counts read zero; a later listen/connect starts a new transport.
    #[napi]
    pub fn shutdown(&mut self) {
        self.driver.stop();
        if let Some(arg) = self.cleanup_arg.take() {
            // SAFETY: removes the hook registered in `new` with the same function and argument
            // (unless it ran: the environment is gone), then takes back the strong count it held.
            unsafe {
                if !self.driver.environment_is_gone() {
                    sys::napi_remove_env_cleanup_hook(self.env, Some(on_env_cleanup), arg as *mut c_void);
                }
                drop(Rc::from_raw(arg));
            }
        }
    }

    /// Whether the open transport keeps the process alive (like `net.Socket#ref/unref`).
    #[napi]
    pub fn set_ref(&self, on: bool) {
        self.driver.set_ref(on);
    }

    /// Polls now and returns what is ready instead of waiting for the loop to deliver it.
    #[napi]
    pub fn poll_now(&self) -> Vec<BindingEvent> {
        self.driver.poll_now().into_iter().map(BindingEvent::from).collect()
    }

    #[napi]
    pub fn listen(&self, opts: BindingListenOptions) -> Result<BindingListening> {
        let defaults = ListenOptions::default();
        let options = ListenOptions {
            host: opts.host,
            port: port(opts.port)?,
            backlog: opts.backlog.unwrap_or(defaults.backlog),
            max_payload: opts.max_payload,
            handshake_timeout_ms: opts.handshake_timeout_ms.unwrap_or(defaults.handshake_timeout_ms),
            rdma: RdmaTuning {
                retry_count: None,
                ack_timeout_exponent: tuning("rdmaAckTimeoutExponent", opts.rdma_ack_timeout_exponent, 1..=31)?,
                busy_poll_us: busy_poll_us(opts.rdma_busy_poll_us)?,
                zero_copy_threshold: opts.rdma_zero_copy_threshold,
            },
        };
        let (id, port) = self.with(|t| t.listen(&options))?;
        Ok(BindingListening { id, port: port as u32 })
    }

    #[napi]
    pub fn close_listener(&self, listener: u32) -> Result<()> {
        self.with(|t| t.close_listener(listener))?;
        self.driver.rearm();
        Ok(())
    }

    #[napi]
    pub fn connect(&self, opts: BindingConnectOptions) -> Result<u32> {
        let options = ConnectOptions {
            host: opts.host,
            port: port(opts.port)?,
            max_payload: opts.max_payload,
            timeout_ms: opts.timeout_ms,
            rdma: RdmaTuning {
                retry_count: tuning("rdmaRetryCount", opts.rdma_retry_count, 0..=7)?,
                ack_timeout_exponent: tuning("rdmaAckTimeoutExponent", opts.rdma_ack_timeout_exponent, 1..=31)?,
                busy_poll_us: busy_poll_us(opts.rdma_busy_poll_us)?,
                zero_copy_threshold: opts.rdma_zero_copy_threshold,
            },
        };
        let id = self.with(|t| t.connect(&options))?;
        self.driver.rearm();
        Ok(id)
    }

    /// Sends one frame after every earlier one: gathered until `flush` (or written at once when
    /// large). The payload is copied or written before this returns: the caller may reuse it.
    #[napi]
    pub fn send(&self, conn: u32, kind: u32, credits: u32, payload: &[u8]) -> Result<()> {
        let kind = u8::try_from(kind).map_err(|_| invalid(format!("frame kind {kind} out of range")))?;
        let credits = u16::try_from(credits).map_err(|_| invalid(format!("credits {credits} out of range")))?;
        self.with(|t| t.send(conn, kind, credits, payload))
    }

    /// `send` of a large Buffer without copying it (rdma, from the connection's
    /// `rdmaZeroCopyThreshold` up): true when the transport keeps the Buffer until it reports a
    /// `sent` event for it (the caller must not change it until then); false when it was copied
    /// as by `send`.
    #[napi]
    pub fn send_shared(&self, conn: u32, kind: u32, credits: u32, payload: Buffer) -> Result<bool> {
        let kind = u8::try_from(kind).map_err(|_| invalid(format!("frame kind {kind} out of range")))?;
        let credits = u16::try_from(credits).map_err(|_| invalid(format!("credits {credits} out of range")))?;
        self.with(|t| t.send_shared(conn, kind, credits, Box::new(payload)))
    }

    /// Writes (tcp) or posts (rdma) the frames `send` gathered since the last flush. JS calls it
    /// once per turn of its loop after sending (a microtask), so a burst of small frames becomes
    /// one write; a poll flushes too.
    #[napi]
    pub fn flush(&self) {
        self.driver.with(|t| t.flush());
    }

    #[napi]
    pub fn close(&self, conn: u32) -> Result<()> {
        self.with(|t| t.close(conn))?;
        self.driver.rearm();
        Ok(())
    }

    #[napi]
    pub fn abort(&self, conn: u32) -> Result<()> {
        self.with(|t| t.abort(conn))?;
        self.driver.rearm();
        Ok(())
    }

    /// Hands an open connection's liveness to the native sweep: a heartbeat frame of
    /// `heartbeatKind` after `intervalMs` without sending, and a `Silent` event after `timeoutMs`
    /// without receiving (Infinity or 0: never), both counted from now. A heartbeat carries the
    /// credits field of the last frame sent: `credits` until the next `send`.
    #[napi]
    pub fn watch_liveness(
        &self,
        conn: u32,
        heartbeat_kind: u32,
        credits: u32,
        interval_ms: f64,
        timeout_ms: f64,
    ) -> Result<()> {
        let opts = WatchOptions {
            heartbeat_kind: u8::try_from(heartbeat_kind)
                .map_err(|_| invalid(format!("heartbeat kind {heartbeat_kind} out of range")))?,
            credits: u16::try_from(credits).map_err(|_| invalid(format!("credits {credits} out of range")))?,
            interval: period("intervalMs", interval_ms)?,
            timeout: period("timeoutMs", timeout_ms)?,
        };
        self.with(|t| t.watch(conn, opts, std::time::Instant::now()))?;
        self.driver.rearm();
        Ok(())
    }

    /// The heartbeats the native sweep sent and took in for `conn` (null once it is gone).
    #[napi]
    pub fn heartbeats(&self, conn: u32) -> Option<BindingHeartbeats> {
        let counts = self.driver.with(|t| t.heartbeats(conn)).flatten()?;
        Some(BindingHeartbeats { sent: counts.sent as f64, received: counts.received as f64 })
    }
}

#[napi(object)]
pub struct BindingHeartbeats {
    pub sent: f64,
    pub received: f64,
}

/// Periods beyond this are as good as never (and keep `Instant` arithmetic far from overflow).
const FOREVER_MS: f64 = 100.0 * 365.0 * 86_400_000.0;

/// A period in ms from JS: None for 0 or Infinity (never).
fn period(name: &str, ms: f64) -> Result<Option<std::time::Duration>> {
    if ms.is_nan() || ms < 0.0 {
        return Err(invalid(format!("{name} must be a number of ms >= 0, got {ms}")));
    }
    if ms == 0.0 || ms >= FOREVER_MS {
        return Ok(None);
    }
    Ok(Some(std::time::Duration::from_secs_f64(ms / 1000.0)))
}

impl Drop for BindingTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Live count of every resource kind the native core owns, process-wide.
#[napi]
pub fn live_counts() -> HashMap<String, i64> {
    counters::snapshot().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[napi(object)]
pub struct RdmaLimits {
    /// The largest lifecycle-protocol credit window on rdma, control reserve included.
    pub recv_depth: u32,
    /// Work requests one connection posts to the hardware at once (its QP's send queue).
    pub send_depth: u32,
    /// Default largest message on rdma (it bounds reassembly; it costs no registered memory).
    pub suggested_max_payload: u32,
    /// Size of every registered buffer: larger messages go as fragments of this size.
    pub buffer_size: u32,
    /// Buffers each connection sets aside for its peer at first (its link window).
    pub initial_window: u32,
    /// Receive buffers a device pool registers at a time, and at most.
    pub pool_chunk: u32,
    pub pool_max_buffers: u32,
    /// Registered send buffers per device pool.
    pub send_pool_slots: u32,
}

/// Fixed sizes of the rdma transport (the protocol's credit window and `doctor`'s memory estimate).
#[napi]
pub fn rdma_limits() -> RdmaLimits {
    use rdma_graceful_rdma as r;
    RdmaLimits {
        recv_depth: r::RECV_DEPTH,
        send_depth: r::SEND_DEPTH,
        suggested_max_payload: r::SUGGESTED_MAX_PAYLOAD,
        buffer_size: r::BUFFER_SIZE,
        initial_window: r::INITIAL_WINDOW,
        pool_chunk: r::POOL_CHUNK,
        pool_max_buffers: r::POOL_MAX_BUFFERS,
        send_pool_slots: r::SEND_POOL_SLOTS,
    }
}
