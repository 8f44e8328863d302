//! `RdmaTransport`: the `Transport` commands over the reactor, which owns every resource. It runs
//! on the caller's thread and is driven through `Pollable` (Node's loop, or `EventLoop` in tests).

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::time::Instant;

use rdma_graceful_core::transport::{validate_host, validate_max_payload};
use rdma_graceful_core::{
    ConnId, ConnectOptions, ErrorCode, Event, ListenOptions, ListenerId, Pollable, Transport, TransportError,
};

use crate::reactor::Reactor;

/// Reliable connections over RDMA RC queue pairs (rdma-cm for setup). Every resource ends when the
/// transport is dropped.
pub struct RdmaTransport {
    reactor: Reactor,
}

impl RdmaTransport {
    /// Loads libibverbs/librdmacm and checks that an RDMA device exists.
    /// `ErrorCode::Unavailable` names what is missing (a library and its package, or a device).
    pub fn new() -> Result<RdmaTransport, TransportError> {
        let lib = crate::loader::lib().map_err(|m| TransportError::new(ErrorCode::Unavailable, m))?;
        let n = crate::device::count_devices(lib).map_err(|m| TransportError::new(ErrorCode::Unavailable, m))?;
        if n == 0 {
            return Err(TransportError::new(
                ErrorCode::Unavailable,
                "no RDMA device found: libibverbs is installed but lists no device (load a driver, e.g. \
                 `modprobe rdma_rxe && rdma link add rxe0 type rxe netdev <if>` for Soft-RoCE)",
            ));
        }
        Ok(RdmaTransport { reactor: Reactor::new(lib)? })
    }

    /// The device pools' receive buffers: (posted in the shared receive queues, set aside for
    /// peers as link windows, pools). Registered bytes are in the live counters.
    /// Tests of zero-copy: the last offer connection `conn` received (peer address, rkey, length,
    /// whether the key is a memory window's).
    #[doc(hidden)]
    pub fn last_offer(&self, conn: ConnId) -> Option<(u64, u32, u32, bool)> {
        self.reactor.last_offer(conn)
    }

    /// Tests of zero-copy: registrations made by the registration caches, and cache hits.
    #[doc(hidden)]
    pub fn cache_stats(&self) -> (u64, u64) {
        self.reactor.cache_stats()
    }

    /// Tests of zero-copy: a raw RDMA READ of `len` bytes of the peer's memory at `addr` with
    /// `rkey` on `conn`'s queue pair. A key the peer revoked fails it (remote access error), and
    /// the connection with it (`Closed` says why).
    #[doc(hidden)]
    pub fn probe_read(&mut self, conn: ConnId, addr: u64, rkey: u32, len: usize) -> Result<(), TransportError> {
        self.reactor.probe_read(conn, addr, rkey, len)
    }

    /// Tests of the link credits: `n` empty frames of `kind` on `conn`, posted without taking
    /// credits, as a peer that ignores them would send them.
    #[doc(hidden)]
    pub fn send_ignoring_credits(&mut self, conn: ConnId, kind: u8, n: usize) -> Result<(), TransportError> {
        self.reactor.send_ignoring_credits(conn, kind, n)
    }

    pub fn pool_usage(&self) -> (u32, u32, usize) {
        self.reactor.pool_usage()
    }
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

impl Pollable for RdmaTransport {
    fn fd(&self) -> RawFd {
        self.reactor.fd()
    }

    fn flush(&mut self) {
        self.reactor.flush();
    }

    fn poll(&mut self, _now: Instant, out: &mut Vec<Event>) {
        self.reactor.poll(out);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.reactor.next_deadline()
    }
}

impl Transport for RdmaTransport {
    fn listen(&mut self, opts: &ListenOptions) -> Result<(ListenerId, u16), TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        let addr = resolve(&opts.host, opts.port)?;
        self.reactor.listen(opts.clone(), addr)
    }

    fn close_listener(&mut self, listener: ListenerId) -> Result<(), TransportError> {
        self.reactor.close_listener(listener)
    }

    fn connect(&mut self, opts: &ConnectOptions) -> Result<ConnId, TransportError> {
        validate_host(&opts.host)?;
        validate_max_payload(opts.max_payload)?;
        let addr = resolve(&opts.host, opts.port)?;
        let id = rdma_graceful_core::ids::next_id();
        self.reactor.connect(id, opts.clone(), addr);
        Ok(id)
    }

    fn send(&mut self, conn: ConnId, kind: u8, credits: u16, payload: &[u8]) -> Result<(), TransportError> {
        self.reactor.send(conn, kind, credits, payload)
    }

    fn send_shared(
        &mut self,
        conn: ConnId,
        kind: u8,
        credits: u16,
        payload: rdma_graceful_core::transport::SharedPayload,
    ) -> Result<bool, TransportError> {
        self.reactor.send_shared(conn, kind, credits, payload)
    }

    fn close(&mut self, conn: ConnId) -> Result<(), TransportError> {
        self.reactor.close(conn)
    }

    fn abort(&mut self, conn: ConnId) -> Result<(), TransportError> {
        self.reactor.abort(conn)
    }

    fn busy_poll_window(&self) -> std::time::Duration {
        self.reactor.busy_window()
    }

    fn set_busy_polling(&mut self, on: bool, _now: Instant, out: &mut Vec<Event>) {
        self.reactor.set_busy(on, out);
    }

    fn busy_poll(&mut self, _now: Instant, out: &mut Vec<Event>) -> bool {
        self.reactor.busy_poll(out)
    }
}

impl Drop for RdmaTransport {
    /// Aborts every connection and listener and frees everything, bounded by the drain deadline.
    fn drop(&mut self) {
        self.reactor.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without rdma-core or without a device (this is what CI hosts are), `new`
    /// must fail with Unavailable and say which of the two is missing.
    #[test]
    fn without_rdma_new_is_unavailable_and_names_what_is_missing() {
        match RdmaTransport::new() {
            Ok(_) => eprintln!("SKIPPED: this machine has an RDMA device, so the no-device path cannot be shown here"),
            Err(e) => {
                eprintln!("as expected: {e}");
                assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
                assert!(
                    e.message.contains("no RDMA device")
                        || e.message.contains("libibverbs.so.1 not found")
                        || e.message.contains("librdmacm.so.1 not found"),
                    "{e}"
                );
            }
        }
    }
}
