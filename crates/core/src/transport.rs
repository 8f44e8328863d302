//! The commands every transport (tcp here, rdma in its own crate) accepts. A transport is driven
//! from one thread (Node's loop, or `poll::EventLoop` in tests): commands return at once, and
//! outcomes come out of `poll` as `Event`s.

use crate::error::TransportError;
use crate::frame::DEFAULT_MAX_PAYLOAD;
use crate::poll::Pollable;

pub type ConnId = u32;
pub type ListenerId = u32;

/// A payload the caller lends instead of copying (a JS Buffer, kept alive by this box): the
/// transport may read it until it reports `Event::Sent` for it.
pub type SharedPayload = Box<dyn AsRef<[u8]>>;

#[derive(Debug, Clone)]
pub struct ListenOptions {
    pub host: String,
    /// 0 picks a free port; the chosen one is returned by `listen`.
    pub port: u16,
    pub backlog: u32,
    /// Largest frame payload accepted from, and sendable to, connections of this listener.
    pub max_payload: u32,
    /// How long an accepted peer has to complete the transport handshake.
    pub handshake_timeout_ms: u32,
    /// rdma only: the ACK timeout exponent of accepted connections' QPs (see `RdmaTuning`).
    pub rdma: RdmaTuning,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            host: "127.0.0.1".into(),
            port: 0,
            backlog: 511,
            max_payload: DEFAULT_MAX_PAYLOAD,
            handshake_timeout_ms: 10_000,
            rdma: RdmaTuning::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub max_payload: u32,
    /// Deadline for the whole transport-level connect (resolve, connect, handshake).
    pub timeout_ms: u32,
    /// rdma only: retry count and ACK timeout of the connection's QP.
    pub rdma: RdmaTuning,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            host: "127.0.0.1".into(),
            port: 0,
            max_payload: DEFAULT_MAX_PAYLOAD,
            timeout_ms: 10_000,
            rdma: RdmaTuning::default(),
        }
    }
}

/// How long an rdma queue pair waits for the peer's acknowledgement before it gives up on a send
/// (retry-exceeded, which takes the connection down): about (retry_count + 1) x 4.096 us x
/// 2^ack_timeout_exponent. None: the rdma crate's defaults. tcp ignores it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RdmaTuning {
    /// Transport retries, 0..=7 (the active side's value applies to both QPs). Soft-RoCE treats 7
    /// as "retry forever".
    pub retry_count: Option<u8>,
    /// Local ACK timeout exponent, 1..=31 (4.096 us x 2^n per try).
    pub ack_timeout_exponent: Option<u8>,
    /// Microseconds to keep polling the completion queue after the last completion before
    /// sleeping again (0 or None: never busy-poll). The transport polls for the largest value of
    /// its open connections.
    pub busy_poll_us: Option<u32>,
    /// Frames of at least this many bytes go zero-copy (rendezvous: the peer reads them from
    /// the caller's buffer); 0 turns it off. None: the rdma crate's default.
    pub zero_copy_threshold: Option<u32>,
}

pub trait Transport: Pollable {
    /// Starts listening; returns the listener's id and its bound port.
    fn listen(&mut self, opts: &ListenOptions) -> Result<(ListenerId, u16), TransportError>;
    /// Stops accepting; `ListenerClosed` follows. Accepted connections are not touched.
    fn close_listener(&mut self, listener: ListenerId) -> Result<(), TransportError>;
    /// Starts connecting; `Connected` or `ConnectFailed` follows for the returned id.
    fn connect(&mut self, opts: &ConnectOptions) -> Result<ConnId, TransportError>;
    /// Sends one frame, after every frame sent before it; the payload is copied or written at once,
    /// so the caller may reuse it. Fails at once for an unknown or closing id, or a bad frame; a
    /// failure of the connection itself is reported by its `Closed` event.
    fn send(&mut self, conn: ConnId, kind: u8, credits: u16, payload: &[u8]) -> Result<(), TransportError>;
    /// `send` of a payload the caller lends: a transport that can move it without copying
    /// (rdma rendezvous, from the connection's threshold up) keeps it until the transfer ends and
    /// returns true; every such send is then reported once by `Event::Sent` (in order) when the
    /// peer has it, unless the connection's `Closed` comes first, which releases the rest. Otherwise it is copied as by `send` and false returned.
    fn send_shared(
        &mut self,
        conn: ConnId,
        kind: u8,
        credits: u16,
        payload: SharedPayload,
    ) -> Result<bool, TransportError> {
        self.send(conn, kind, credits, payload.as_ref().as_ref()).map(|()| false)
    }
    /// Sends every frame queued so far, then closes; `Closed` follows once resources are freed.
    fn close(&mut self, conn: ConnId) -> Result<(), TransportError>;
    /// Closes now, dropping queued frames; `Closed` follows once resources are freed.
    fn abort(&mut self, conn: ConnId) -> Result<(), TransportError>;

    /// Busy polling (rdma): how long to keep polling after the last work found, without waiting
    /// for a wake-up; zero (the default) never busy-polls.
    fn busy_poll_window(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// Busy polling started (`on`) or ended: while on, the transport need not ask for wake-ups
    /// of the work that `busy_poll` finds; when it ends it asks again, then takes what came
    /// meanwhile (into `out`).
    fn set_busy_polling(&mut self, _on: bool, _now: std::time::Instant, _out: &mut Vec<crate::Event>) {}
    /// One busy poll: takes what is ready without a wake-up; true when it found any work.
    fn busy_poll(&mut self, now: std::time::Instant, out: &mut Vec<crate::Event>) -> bool {
        let before = out.len();
        self.poll(now, out);
        out.len() > before
    }
}

pub fn validate_host(host: &str) -> Result<(), TransportError> {
    if host.is_empty() {
        return Err(TransportError::new(crate::ErrorCode::InvalidArgument, "host must not be empty"));
    }
    Ok(())
}

pub fn validate_max_payload(max: u32) -> Result<(), TransportError> {
    if max == 0 || max > crate::frame::ABSOLUTE_MAX_PAYLOAD {
        return Err(TransportError::new(
            crate::ErrorCode::InvalidArgument,
            format!("maxMessageSize {max} must be between 1 and {}", crate::frame::ABSOLUTE_MAX_PAYLOAD),
        ));
    }
    Ok(())
}
