//! rdma-cm: the event channel (one per transport; every CM id of the transport reports on it) and
//! CM ids (one per listener and per connection). Events are copied out and acknowledged at once,
//! so `rdma_destroy_id`, which waits for its id's events to be acknowledged, never blocks.

use std::ffi::{c_int, c_void};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::ptr;

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::loader::{c_text, Lib};
use crate::sys::{set_nonblocking, verbs_error};

pub struct EventChannel {
    lib: &'static Lib,
    ch: *mut rdma_event_channel,
    _live: Live,
}

/// A CM event, copied (private data included) before its acknowledgement.
#[derive(Debug, Clone)]
pub struct CmEvent {
    pub kind: u32,
    pub status: i32,
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub private_data: Vec<u8>,
    /// The peer's QP number, from the connection request or reply.
    pub remote_qpn: u32,
    /// The peer's RDMA READ depths from a connect request: READs it may have in flight towards
    /// us (`initiator_depth`) and that it serves (`responder_resources`).
    pub initiator_depth: u8,
    pub responder_resources: u8,
    pub name: String,
}

impl EventChannel {
    pub fn new(lib: &'static Lib) -> Result<EventChannel, TransportError> {
        // SAFETY: no preconditions.
        let ch = unsafe { (lib.cm.rdma_create_event_channel)() };
        if ch.is_null() {
            return Err(verbs_error("rdma_create_event_channel"));
        }
        let ch = EventChannel { lib, ch, _live: Live::new(Kind::RdmaCmEventChannels) };
        set_nonblocking(ch.fd());
        Ok(ch)
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: ch is live.
        unsafe { (*self.ch).fd }
    }

    /// The next event, None when none is pending (the fd is non-blocking).
    pub fn next(&self) -> Option<CmEvent> {
        let mut ev: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: ch is live; ev is a valid out-parameter.
        if unsafe { (self.lib.cm.rdma_get_cm_event)(self.ch, &mut ev) } != 0 || ev.is_null() {
            return None;
        }
        // SAFETY: ev is valid until acknowledged below; private data is copied first.
        let out = unsafe {
            let e = &*ev;
            let pd = if e.conn.private_data.is_null() || e.conn.private_data_len == 0 {
                Vec::new()
            } else {
                std::slice::from_raw_parts(e.conn.private_data as *const u8, e.conn.private_data_len as usize).to_vec()
            };
            CmEvent {
                kind: e.event,
                status: e.status,
                id: e.id,
                listen_id: e.listen_id,
                private_data: pd,
                remote_qpn: e.conn.qp_num,
                initiator_depth: e.conn.initiator_depth,
                responder_resources: e.conn.responder_resources,
                name: c_text((self.lib.cm.rdma_event_str)(e.event)),
            }
        };
        // SAFETY: acknowledged exactly once.
        unsafe { (self.lib.cm.rdma_ack_cm_event)(ev) };
        Some(out)
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        // SAFETY: every id on the channel was destroyed first (the reactor's drop order).
        unsafe { (self.lib.cm.rdma_destroy_event_channel)(self.ch) };
    }
}

pub struct CmId {
    lib: &'static Lib,
    id: *mut rdma_cm_id,
    _live: Live,
}

impl CmId {
    /// A new RC (RDMA_PS_TCP) id reporting on `channel`.
    pub fn new(lib: &'static Lib, channel: &EventChannel) -> Result<CmId, TransportError> {
        let mut id: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: channel is live; id is a valid out-parameter.
        let rc = unsafe { (lib.cm.rdma_create_id)(channel.ch, &mut id, ptr::null_mut(), RDMA_PS_TCP) };
        if rc != 0 {
            return Err(verbs_error("rdma_create_id"));
        }
        Ok(CmId { lib, id, _live: Live::new(Kind::RdmaCmIds) })
    }

    /// Takes ownership of the id a CONNECT_REQUEST created.
    ///
    /// # Safety
    /// `id` must be the new id of a connect-request event, not owned by anything else.
    pub unsafe fn adopt(lib: &'static Lib, id: *mut rdma_cm_id) -> CmId {
        CmId { lib, id, _live: Live::new(Kind::RdmaCmIds) }
    }

    pub fn as_ptr(&self) -> *mut rdma_cm_id {
        self.id
    }

    /// The device context rdma-cm bound this id to (null before address resolution).
    pub fn verbs(&self) -> *mut ibv_context {
        // SAFETY: id is live.
        unsafe { (*self.id).verbs }
    }

    pub fn bind(&self, addr: SocketAddr) -> Result<(), TransportError> {
        let mut sa = SockAddr::from(addr);
        // SAFETY: id is live; sa is a valid sockaddr.
        let rc = unsafe { (self.lib.cm.rdma_bind_addr)(self.id, sa.as_mut_ptr()) };
        check(rc, "rdma_bind_addr", ErrorCode::ListenFailed)
    }

    pub fn listen(&self, backlog: u32) -> Result<(), TransportError> {
        // SAFETY: id is live and bound.
        let rc = unsafe { (self.lib.cm.rdma_listen)(self.id, backlog.min(i32::MAX as u32) as c_int) };
        check(rc, "rdma_listen", ErrorCode::ListenFailed)
    }

    pub fn local_port(&self) -> u16 {
        // SAFETY: id is live.
        u16::from_be(unsafe { (self.lib.cm.rdma_get_src_port)(self.id) })
    }

    pub fn resolve_addr(&self, dst: SocketAddr, timeout_ms: u32) -> Result<(), TransportError> {
        let mut sa = SockAddr::from(dst);
        // SAFETY: id is live; sa is a valid sockaddr; src null lets rdma-cm pick.
        let rc = unsafe { (self.lib.cm.rdma_resolve_addr)(self.id, ptr::null_mut(), sa.as_mut_ptr(), ms(timeout_ms)) };
        check(rc, "rdma_resolve_addr", ErrorCode::AddressUnreachable)
    }

    pub fn resolve_route(&self, timeout_ms: u32) -> Result<(), TransportError> {
        // SAFETY: id is live with a resolved address.
        let rc = unsafe { (self.lib.cm.rdma_resolve_route)(self.id, ms(timeout_ms)) };
        check(rc, "rdma_resolve_route", ErrorCode::AddressUnreachable)
    }

    /// Sets the QP's local ACK timeout exponent (4.096 us * 2^exp per try) before connect/accept,
    /// so a silent peer turns into a retry-exceeded completion error in bounded time.
    pub fn set_ack_timeout(&self, exp: u8) {
        let mut v = exp;
        // SAFETY: id is live; optval points to one u8 as the option requires.
        let rc = unsafe {
            (self.lib.cm.rdma_set_option)(
                self.id,
                RDMA_OPTION_ID,
                RDMA_OPTION_ID_ACK_TIMEOUT,
                (&mut v as *mut u8).cast(),
                1,
            )
        };
        if rc != 0 {
            crate::report(&format!("rdma_set_option(ACK_TIMEOUT) failed: {}", crate::loader::errno_text()));
        }
    }

    /// `reads`: RDMA READs in flight each way (0: this side offers no rendezvous).
    pub fn connect(&self, private: &[u8], retry_count: u8, reads: u8) -> Result<(), TransportError> {
        let mut p = conn_param(private);
        p.responder_resources = reads;
        p.initiator_depth = reads;
        // Retry transport errors a bounded number of times (crate::RETRY_COUNT by default);
        // retry-exceeded surfaces as a completion error. The link credits (`link`) make RNR retries
        // unneeded, so those are few: an RNR would mean a peer broke the credit contract.
        p.retry_count = retry_count;
        p.rnr_retry_count = 3;
        // SAFETY: id is live with a resolved route and a QP; private outlives the call.
        let rc = unsafe { (self.lib.cm.rdma_connect)(self.id, &mut p) };
        check(rc, "rdma_connect", ErrorCode::ConnectionRefused)
    }

    /// `responder_resources` / `initiator_depth`: READs this side serves / issues at once, no
    /// more than the connect request's initiator depth / responder resources.
    pub fn accept(&self, private: &[u8], responder_resources: u8, initiator_depth: u8) -> Result<(), TransportError> {
        let mut p = conn_param(private);
        p.responder_resources = responder_resources;
        p.initiator_depth = initiator_depth;
        p.rnr_retry_count = 3;
        // SAFETY: id is a connect-request id with a QP; private outlives the call.
        let rc = unsafe { (self.lib.cm.rdma_accept)(self.id, &mut p) };
        check(rc, "rdma_accept", ErrorCode::Io)
    }

    pub fn reject(&self, private: &[u8]) {
        // SAFETY: id is a connect-request id; private outlives the call.
        unsafe {
            (self.lib.cm.rdma_reject)(
                self.id,
                private.as_ptr().cast(),
                private.len().min(REJECT_PRIVATE_DATA_MAX) as u8,
            )
        };
    }

    /// Sends DREQ (or answers the peer's with DREP) and moves the QP to ERR. Errors are expected
    /// when the connection is already half gone, so they are not reported.
    pub fn disconnect(&self) {
        // SAFETY: id is live.
        unsafe { (self.lib.cm.rdma_disconnect)(self.id) };
    }

    /// The peer's address as rdma-cm recorded it.
    pub fn peer_addr(&self) -> String {
        // SAFETY: id is live; route_dst_addr is a sockaddr_storage.
        let ss = unsafe { &(*self.id).route_dst_addr };
        sockaddr_to_string(ss)
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        // SAFETY: id is ours, its QP is destroyed and its events are all acknowledged.
        let rc = unsafe { (self.lib.cm.rdma_destroy_id)(self.id) };
        if rc != 0 {
            crate::report(&format!("rdma_destroy_id failed: {}", crate::loader::errno_text()));
        }
    }
}

fn conn_param(private: &[u8]) -> rdma_conn_param {
    rdma_conn_param {
        private_data: if private.is_empty() { ptr::null() } else { private.as_ptr() as *const c_void },
        private_data_len: private.len() as u8,
        responder_resources: 0,
        initiator_depth: 0,
        flow_control: 1,
        retry_count: 0,
        rnr_retry_count: 0,
        srq: 0,
        qp_num: 0,
    }
}

fn ms(v: u32) -> c_int {
    v.clamp(1, i32::MAX as u32) as c_int
}

fn check(rc: c_int, what: &str, code: ErrorCode) -> Result<(), TransportError> {
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let code = match e.raw_os_error() {
            Some(libc::EADDRINUSE) => ErrorCode::ListenFailed,
            Some(libc::ETIMEDOUT) => ErrorCode::Timeout,
            _ => code,
        };
        return Err(TransportError::new(code, format!("{what} failed: {e}")));
    }
    Ok(())
}

/// A sockaddr for IPv4 or IPv6, sized for either.
struct SockAddr(libc::sockaddr_storage);

impl SockAddr {
    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.0 as *mut libc::sockaddr_storage).cast()
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                sin6.sin6_scope_id = v6.scope_id();
            }
        }
        SockAddr(ss)
    }
}

fn sockaddr_to_string(ss: &libc::sockaddr_storage) -> String {
    match ss.ss_family as c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)).to_string()
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SocketAddr::new(IpAddr::V6(ip), u16::from_be(sin6.sin6_port)).to_string()
        }
        f => format!("<address family {f}>"),
    }
}
