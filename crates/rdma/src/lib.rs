//! The RDMA transport of rdma-graceful: reliable-connected queue pairs set up with rdma-cm, moving
//! `Frame`s with SEND_WITH_IMM (the frame header rides in the 32-bit immediate data).
//!
//! libibverbs and librdmacm are opened at runtime (`loader`), so a binary using this crate loads
//! and runs on machines without rdma-core; there `RdmaTransport::new` returns `Unavailable`.
//!
//! One Rust type owns each verbs resource and its Drop releases it: `Device` (a device context in
//! use), `Pd`, `CompChannel`, `Cq`, `Mr`, `Qp`, `EventChannel`, `CmId`. `verbs::Resources` holds a
//! connection's set in teardown order; the reactor (`reactor`) owns every object, drives rdma-cm
//! and completions from their fds in one epoll set that the caller's loop watches, and reports
//! `Event`s. No thread of its own.

mod cm;
mod conn;
mod cq;
mod device;
mod ffi;
mod handshake;
mod loader;
mod mr;
mod pd;
mod qp;
mod reactor;
mod sys;
mod transport;
mod verbs;

pub use transport::RdmaTransport;

/// Receive buffers posted per connection, each `max_payload` bytes. A peer may have at most this
/// many frames in flight toward us: the lifecycle layer's credit scheme must never grant more
/// (counting its reserved control credits within it), so no send ever finds no receive posted.
pub const RECV_DEPTH: u32 = 64;
/// Sends posted to the hardware at once per connection (registered send slots of `max_payload`).
/// More frames wait in a software queue of up to `SEND_QUEUE_LIMIT` frames.
pub const SEND_DEPTH: u32 = 16;
/// Frames a connection queues in software beyond `SEND_DEPTH`; `send` fails past it.
pub const SEND_QUEUE_LIMIT: usize = 4096;
/// A suggested `max_payload` for rdma: each connection registers
/// (RECV_DEPTH + SEND_DEPTH) * max_payload bytes, 5 MiB at this size (80 MiB at the 1 MiB default).
pub const SUGGESTED_MAX_PAYLOAD: u32 = 64 * 1024;
/// How long a teardown waits for flush completions after moving the QP to ERR.
pub const DRAIN_TIMEOUT_MS: u64 = 2_000;
/// How long `close` waits for queued frames to be sent before giving up and aborting.
pub const CLOSE_SEND_TIMEOUT_MS: u64 = 10_000;

/// Default local ACK timeout exponent of every QP: 4.096 us * 2^16 = 268 ms per try. With
/// `RETRY_COUNT` retries a send to a peer that stopped acknowledging (cut off, powered off) fails
/// with retry-exceeded about 1.9 s after the last acknowledged message (exponent 14: 0.5-0.6 s,
/// measured on Soft-RoCE between two hosts; docs/rdma.md). Long enough that a stall shorter than a
/// typical heartbeat timeout (a busy or paused host) does not kill a healthy connection; dead
/// peers are the heartbeat's to detect. Per connection: `rdmaAckTimeoutExponent`.
pub const ACK_TIMEOUT_EXP: u8 = 16;

/// Transport retries asked for at connect (the passive side's QP takes the active side's value).
/// Not 7: Soft-RoCE treats 7 as "retry forever" (rxe_comp.c), so a silent peer never produced a
/// retry-exceeded error there; 6 is the largest bounded value. Per connection: `rdmaRetryCount`.
pub const RETRY_COUNT: u8 = 6;

/// Reports a failure that cannot be returned (inside Drop, or in a poll).
pub(crate) fn report(msg: &str) {
    eprintln!("rdma-graceful[rdma]: {msg}");
}
