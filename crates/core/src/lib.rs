//! The Rust core of rdma-graceful: it owns every transport resource (sockets, and for the rdma crate
//! every verbs object) and moves frames. It knows nothing of the lifecycle protocol: that lives in
//! TypeScript, which reads `Event`s in batches and issues commands through `Transport`. Transports
//! own no thread: whoever drives them watches one fd and calls `poll` (`poll` module).

pub mod conformance;
pub mod counters;
pub mod error;
pub mod event;
pub mod frame;
pub mod ids;
pub mod liveness;
pub mod poll;
pub mod tcp;
pub mod transport;

pub use error::{ErrorCode, TransportError};
pub use event::Event;
pub use frame::Frame;
pub use liveness::Liveness;
pub use poll::{EventLoop, Pollable};
pub use transport::{ConnId, ConnectOptions, ListenOptions, ListenerId, RdmaTuning, Transport};
