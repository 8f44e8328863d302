//! The RDMA transport of rdma-graceful: reliable-connected queue pairs set up with rdma-cm, moving
//! `Frame`s with SEND_WITH_IMM (the frame header rides in the 32-bit immediate data).
//!
//! libibverbs and librdmacm are opened at runtime (`loader`), so a binary using this crate loads
//! and runs on machines without rdma-core; there `RdmaTransport::new` returns `Unavailable`.
//!
//! One Rust type owns each verbs resource and its Drop releases it: `Device` (a device context in
//! use), `Pd`, `CompChannel`, `Cq`, `Srq`, `Mr`, `Qp`, `EventChannel`, `CmId`. What connections on
//! one device share lives in a `pool::Pool` (field order = teardown order); a connection adds its
//! QP and link state (`verbs::Link`). The reactor (`reactor`) owns every object, drives rdma-cm and
//! completions from their fds in one epoll set that the caller's loop watches, and reports
//! `Event`s. No thread of its own.

mod cm;
mod conn;
mod cq;
mod device;
mod ffi;
mod handshake;
mod link;
mod loader;
mod mr;
mod pd;
mod pool;
mod qp;
mod reactor;
mod rndv;
mod srq;
mod sys;
mod transport;
mod verbs;

pub use transport::RdmaTransport;

/// The largest lifecycle-protocol credit window on rdma, control reserve included (the JS side
/// allows `receiveWindow` up to this less its control reserve). No longer a count of buffers:
/// those are the link layer's (`link`), from the device pool.
pub const RECV_DEPTH: u32 = 64;
/// Work requests one connection's QP has posted at once (its send queue); fragments beyond wait.
pub const SEND_DEPTH: u32 = 64;
/// Frames a connection queues in software; `send` fails with QueueFull past it.
pub const SEND_QUEUE_LIMIT: usize = 4096;
/// A suggested `max_payload` for rdma. Frames are sent as fragments of at most `BUFFER_SIZE`, so
/// this costs nothing per connection; it bounds one frame's reassembly.
pub const SUGGESTED_MAX_PAYLOAD: u32 = 64 * 1024;
/// Size of every registered buffer (receive and send): one message, a frame or a fragment of one.
/// 8 KiB: most messages fit in one, and a connection's minimum window costs 32 KiB.
pub const BUFFER_SIZE: u32 = 8 * 1024;
/// Buffers each connection starts with for its peer (its link window); a window grows, doubling,
/// while its peer uses it up, to `MAX_WINDOW`, and shrinks back when the pool runs short.
pub const INITIAL_WINDOW: u32 = 4;
/// The largest link window: 1 MiB in flight per connection at `BUFFER_SIZE`.
pub const MAX_WINDOW: u32 = 128;
/// Receive buffers registered at a time when a pool grows (2 MiB at `BUFFER_SIZE`).
pub const POOL_CHUNK: u32 = 256;
/// The most receive buffers one device pool holds (the SRQ's size; 128 MiB at `BUFFER_SIZE`).
pub const POOL_MAX_BUFFERS: u32 = 16 * 1024;
/// Registered send slots per device pool (4 MiB at `BUFFER_SIZE`), shared by its connections.
pub const SEND_POOL_SLOTS: u32 = 512;
/// Frames of at least this many bytes go zero-copy (rendezvous, `rndv`) by default.
pub const ZERO_COPY_THRESHOLD: u32 = 256 * 1024;
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
