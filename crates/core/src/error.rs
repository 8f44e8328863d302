//! Typed transport errors. Each has a stable code (the string JS sees in `err.code`) and a message a
//! person can read.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Nothing listens at the address (TCP RST on connect, rdma-cm REJECTED with no listener).
    ConnectionRefused,
    /// The peer reset the connection or the transport failed under it (TCP reset, QP fatal,
    /// completion error such as retry exceeded, CM DISCONNECTED before a close handshake).
    ConnectionReset,
    /// The peer ended the transport connection in an orderly way (TCP FIN, rdma-cm DISCONNECTED)
    /// without the local side having asked to close it.
    PeerClosed,
    /// Address could not be resolved or reached.
    AddressUnreachable,
    /// A frame announced or carried more than the connection's maximum payload.
    FrameTooLarge,
    /// The byte stream or a frame header is not this protocol (bad magic, bad version, reserved bits).
    MalformedFrame,
    /// A wait inside the transport (connect, address resolution, drain) passed its deadline.
    Timeout,
    /// The id names no live connection or listener (closed, destroyed, or never existed).
    NotFound,
    /// Bad argument from the caller (port out of range, empty host, kind out of range ...).
    InvalidArgument,
    /// The transport is not available on this machine (no rdma-core libraries, no RDMA device).
    Unavailable,
    /// Address already in use, or the listener could not be created.
    ListenFailed,
    /// A resource limit stopped the transport: locked memory (RLIMIT_MEMLOCK) too small for the
    /// buffers to register, or a device's buffer pool full.
    ResourceLimit,
    /// The transport's own send queue for the connection is full: the frame was not queued (the
    /// connection stays up).
    QueueFull,
    /// An operating-system or verbs call failed in a way not covered above.
    Io,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ConnectionRefused => "ERR_CONNECTION_REFUSED",
            ErrorCode::ConnectionReset => "ERR_CONNECTION_RESET",
            ErrorCode::PeerClosed => "ERR_PEER_CLOSED",
            ErrorCode::AddressUnreachable => "ERR_ADDRESS_UNREACHABLE",
            ErrorCode::FrameTooLarge => "ERR_FRAME_TOO_LARGE",
            ErrorCode::MalformedFrame => "ERR_MALFORMED_FRAME",
            ErrorCode::Timeout => "ERR_TRANSPORT_TIMEOUT",
            ErrorCode::NotFound => "ERR_NOT_FOUND",
            ErrorCode::InvalidArgument => "ERR_INVALID_ARGUMENT",
            ErrorCode::Unavailable => "ERR_TRANSPORT_UNAVAILABLE",
            ErrorCode::ListenFailed => "ERR_LISTEN_FAILED",
            ErrorCode::ResourceLimit => "ERR_RESOURCE_LIMIT",
            ErrorCode::QueueFull => "ERR_TRANSPORT_QUEUE_FULL",
            ErrorCode::Io => "ERR_IO",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    pub code: ErrorCode,
    pub message: String,
}

impl TransportError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TransportError { code, message: message.into() }
    }

    /// Maps an I/O error from the OS to the closest code, keeping the OS text in the message.
    pub fn from_io(context: &str, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let code = match err.kind() {
            K::ConnectionRefused => ErrorCode::ConnectionRefused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => ErrorCode::ConnectionReset,
            K::AddrInUse | K::AddrNotAvailable => ErrorCode::ListenFailed,
            K::TimedOut => ErrorCode::Timeout,
            K::InvalidInput => ErrorCode::InvalidArgument,
            K::HostUnreachable | K::NetworkUnreachable => ErrorCode::AddressUnreachable,
            _ => ErrorCode::Io,
        };
        TransportError::new(code, format!("{context}: {err}"))
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for TransportError {}
