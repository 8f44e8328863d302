//! The Rust core of rdma-graceful: it owns every transport resource (sockets, and for the rdma crate
//! every verbs object) and moves frames. It knows nothing of the lifecycle protocol: that lives in
//! TypeScript, which reads `Event`s in batches and issues commands through `Transport`.

pub mod counters;
pub mod error;
pub mod event;
pub mod frame;
pub mod ids;
pub mod tcp;
pub mod transport;

pub use error::{ErrorCode, TransportError};
pub use event::{Event, EventSink};
pub use frame::Frame;
pub use transport::{ConnId, ConnectOptions, ListenOptions, ListenerId, Transport};
