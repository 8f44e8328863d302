//! The typed native boundary: what JS receives (`BindingEvent`, one array per batch) and the error
//! codes it can switch on (`BindingErrorCode`). index.d.ts is generated from these.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use rdma_graceful_core::event::QpInfo;
use rdma_graceful_core::{ErrorCode, Event, TransportError};

/// Every code a native error can carry (`err.code`), as in the core's `ErrorCode`.
#[napi(string_enum)]
pub enum BindingErrorCode {
    #[napi(value = "ERR_CONNECTION_REFUSED")]
    ConnectionRefused,
    #[napi(value = "ERR_CONNECTION_RESET")]
    ConnectionReset,
    #[napi(value = "ERR_PEER_CLOSED")]
    PeerClosed,
    #[napi(value = "ERR_ADDRESS_UNREACHABLE")]
    AddressUnreachable,
    #[napi(value = "ERR_FRAME_TOO_LARGE")]
    FrameTooLarge,
    #[napi(value = "ERR_MALFORMED_FRAME")]
    MalformedFrame,
    #[napi(value = "ERR_TRANSPORT_TIMEOUT")]
    Timeout,
    #[napi(value = "ERR_NOT_FOUND")]
    NotFound,
    #[napi(value = "ERR_INVALID_ARGUMENT")]
    InvalidArgument,
    #[napi(value = "ERR_TRANSPORT_UNAVAILABLE")]
    Unavailable,
    #[napi(value = "ERR_LISTEN_FAILED")]
    ListenFailed,
    #[napi(value = "ERR_RESOURCE_LIMIT")]
    ResourceLimit,
    #[napi(value = "ERR_TRANSPORT_QUEUE_FULL")]
    QueueFull,
    #[napi(value = "ERR_IO")]
    Io,
}

impl From<ErrorCode> for BindingErrorCode {
    fn from(c: ErrorCode) -> Self {
        match c {
            ErrorCode::ConnectionRefused => BindingErrorCode::ConnectionRefused,
            ErrorCode::ConnectionReset => BindingErrorCode::ConnectionReset,
            ErrorCode::PeerClosed => BindingErrorCode::PeerClosed,
            ErrorCode::AddressUnreachable => BindingErrorCode::AddressUnreachable,
            ErrorCode::FrameTooLarge => BindingErrorCode::FrameTooLarge,
            ErrorCode::MalformedFrame => BindingErrorCode::MalformedFrame,
            ErrorCode::Timeout => BindingErrorCode::Timeout,
            ErrorCode::NotFound => BindingErrorCode::NotFound,
            ErrorCode::InvalidArgument => BindingErrorCode::InvalidArgument,
            ErrorCode::Unavailable => BindingErrorCode::Unavailable,
            ErrorCode::ListenFailed => BindingErrorCode::ListenFailed,
            ErrorCode::ResourceLimit => BindingErrorCode::ResourceLimit,
            ErrorCode::QueueFull => BindingErrorCode::QueueFull,
            ErrorCode::Io => BindingErrorCode::Io,
        }
    }
}

#[napi(object)]
pub struct BindingError {
    pub code: BindingErrorCode,
    pub message: String,
}

impl From<TransportError> for BindingError {
    fn from(e: TransportError) -> Self {
        BindingError { code: e.code.into(), message: e.message }
    }
}

/// Queue-pair numbers of an rdma connection (for the READY check); absent on tcp.
#[napi(object)]
pub struct BindingQp {
    pub local_qpn: u32,
    pub remote_qpn: u32,
}

fn qp(q: Option<QpInfo>) -> Option<BindingQp> {
    q.map(|q| BindingQp { local_qpn: q.local_qpn, remote_qpn: q.remote_qpn })
}

/// One transport event (see the core's `Event`); `type` says which.
#[napi(discriminant = "type")]
pub enum BindingEvent {
    Accepted {
        listener: u32,
        conn: u32,
        peer: String,
        qp: Option<BindingQp>,
    },
    AcceptFailed {
        listener: u32,
        peer: String,
        error: BindingError,
    },
    ListenerClosed {
        listener: u32,
        error: Option<BindingError>,
    },
    Connected {
        conn: u32,
        peer: String,
        qp: Option<BindingQp>,
    },
    ConnectFailed {
        conn: u32,
        error: BindingError,
    },
    /// `count` frames in wire format: per frame an 8-byte header (kind u8, flags u8, credits u16
    /// BE, payload length u32 BE) and the payload, already checked.
    Frames {
        conn: u32,
        data: Buffer,
        count: u32,
    },
    /// The transport is done with `count` more of the Buffers `sendShared` kept (in order).
    Sent {
        conn: u32,
        count: u32,
    },
    /// Nothing came from the peer for the silence timeout of `watchLiveness` (less the time this
    /// process's loop stood still); the connection is still open.
    Silent {
        conn: u32,
    },
    Closed {
        conn: u32,
        error: Option<BindingError>,
    },
}

impl From<Event> for BindingEvent {
    fn from(e: Event) -> Self {
        match e {
            Event::Accepted { listener, conn, peer, qp: q } => {
                BindingEvent::Accepted { listener, conn, peer, qp: qp(q) }
            }
            Event::AcceptFailed { listener, peer, error } => {
                BindingEvent::AcceptFailed { listener, peer, error: error.into() }
            }
            Event::ListenerClosed { listener, error } => {
                BindingEvent::ListenerClosed { listener, error: error.map(Into::into) }
            }
            Event::Connected { conn, peer, qp: q } => BindingEvent::Connected { conn, peer, qp: qp(q) },
            Event::ConnectFailed { conn, error } => BindingEvent::ConnectFailed { conn, error: error.into() },
            Event::Frames { conn, data, count } => BindingEvent::Frames { conn, data: data.into(), count },
            Event::Sent { conn, count } => BindingEvent::Sent { conn, count },
            Event::Silent { conn } => BindingEvent::Silent { conn },
            Event::Closed { conn, error } => BindingEvent::Closed { conn, error: error.map(Into::into) },
        }
    }
}
