//! The C ABI of libibverbs.so.1 and librdmacm.so.1 that this crate uses, written by hand.
//!
//! Only the structs whose fields we read or fill are spelled out; everything else is an opaque
//! type behind a pointer. Layouts are the stable x86_64/aarch64 (LP64) ABI of rdma-core; each
//! offset we depend on is pinned by a compile-time assertion at the bottom, the numbers having
//! been checked against `offsetof` on rdma-core 44's headers (see docs/rdma.md).
//!
//! Why by hand and not bindgen: bindgen needs libclang and the rdma-core headers at build time,
//! and the addon must build and load where neither exists. The set used here is small.

#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_uint, c_void};

macro_rules! opaque {
    ($($name:ident),*) => { $( #[repr(C)] pub struct $name { _p: [u8; 0] } )* };
}

opaque!(ibv_device, ibv_pd);

/// `struct ibv_context`: we need its ops table (the fast-path calls are inline functions in the
/// header that jump through it) and the async event fd.
#[repr(C)]
pub struct ibv_context {
    pub device: *mut ibv_device,
    pub ops: ibv_context_ops,
    pub cmd_fd: c_int,
    pub async_fd: c_int,
    pub num_comp_vectors: c_int,
    // pthread_mutex_t and abi_compat follow; never touched from Rust.
}

pub type PollCqFn = unsafe extern "C" fn(*mut ibv_cq, c_int, *mut ibv_wc) -> c_int;
pub type ReqNotifyCqFn = unsafe extern "C" fn(*mut ibv_cq, c_int) -> c_int;
pub type PostSendFn = unsafe extern "C" fn(*mut ibv_qp, *mut ibv_send_wr, *mut *mut ibv_send_wr) -> c_int;
pub type PostRecvFn = unsafe extern "C" fn(*mut ibv_qp, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int;
pub type PostSrqRecvFn = unsafe extern "C" fn(*mut ibv_srq, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int;

/// `struct ibv_context_ops`: 32 function pointers; the provider fills alloc_mw (slot 7),
/// dealloc_mw (9), poll_cq (11), req_notify_cq (12), post_srq_recv (20), post_send (25) and
/// post_recv (26) (`ibv_alloc_mw` and the others are inline functions of the header that jump
/// through them). The other slots are legacy.
pub type AllocMwFn = unsafe extern "C" fn(*mut ibv_pd, c_uint) -> *mut ibv_mw;
pub type DeallocMwFn = unsafe extern "C" fn(*mut ibv_mw) -> c_int;

#[repr(C)]
pub struct ibv_context_ops {
    _compat0: [usize; 7],
    pub alloc_mw: Option<AllocMwFn>,
    _bind_mw: usize,
    pub dealloc_mw: Option<DeallocMwFn>,
    _compat_create_cq: usize,
    pub poll_cq: Option<PollCqFn>,
    pub req_notify_cq: Option<ReqNotifyCqFn>,
    _compat1: [usize; 7],
    pub post_srq_recv: Option<PostSrqRecvFn>,
    _compat2: [usize; 4],
    pub post_send: Option<PostSendFn>,
    pub post_recv: Option<PostRecvFn>,
    _compat3: [usize; 5],
}

/// `struct ibv_srq`: only `context` is read (to reach the ops table).
#[repr(C)]
pub struct ibv_srq {
    pub context: *mut ibv_context,
}

/// `struct ibv_srq_init_attr` with its `struct ibv_srq_attr`.
#[repr(C)]
pub struct ibv_srq_init_attr {
    pub srq_context: *mut c_void,
    pub max_wr: u32,
    pub max_sge: u32,
    pub srq_limit: u32,
}

#[repr(C)]
pub struct ibv_comp_channel {
    pub context: *mut ibv_context,
    pub fd: c_int,
    pub refcnt: c_int,
}

/// `struct ibv_cq`: only `context` is read (to reach the ops table).
#[repr(C)]
pub struct ibv_cq {
    pub context: *mut ibv_context,
}

/// `struct ibv_qp`: the prefix up to qp_num.
#[repr(C)]
pub struct ibv_qp {
    pub context: *mut ibv_context,
    pub qp_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut ibv_srq,
    pub handle: u32,
    pub qp_num: u32,
}

/// `struct ibv_mw`: a memory window (type 2: bound to one QP by a BIND_MW work request).
#[repr(C)]
pub struct ibv_mw {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub rkey: u32,
    pub handle: u32,
    pub mw_type: c_uint,
}

#[repr(C)]
pub struct ibv_mr {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ibv_sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

#[repr(C)]
pub struct ibv_recv_wr {
    pub wr_id: u64,
    pub next: *mut ibv_recv_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
}

/// `struct ibv_send_wr` (128 bytes). Of the unions after imm_data only `wr.rdma` (remote address
/// and rkey of an RDMA READ) is used; the rest (atomic/ud, xrc, bind_mw/tso) stays zeroed.
#[repr(C)]
pub struct ibv_send_wr {
    pub wr_id: u64,
    pub next: *mut ibv_send_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
    pub opcode: c_uint,
    pub send_flags: c_uint,
    /// Network byte order.
    /// Network byte order; the union's `invalidate_rkey` (host order) for SEND_WITH_INV.
    pub imm_data: u32,
    pub rdma_remote_addr: u64,
    pub rdma_rkey: u32,
    _wr_rest: [u32; 5],
    _qp_type: [u32; 2],
    pub bind_mw: *mut ibv_mw,
    pub bind_rkey: u32,
    pub bind_mr: *mut ibv_mr,
    pub bind_addr: u64,
    pub bind_length: u64,
    pub bind_access: c_uint,
}

impl ibv_send_wr {
    pub fn zeroed() -> ibv_send_wr {
        // SAFETY: plain old data; all-zero is a valid (empty) work request.
        unsafe { std::mem::zeroed() }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ibv_wc {
    pub wr_id: u64,
    pub status: c_uint,
    pub opcode: c_uint,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// Network byte order.
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: c_uint,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ibv_qp_cap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

#[repr(C)]
pub struct ibv_qp_init_attr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut ibv_srq,
    pub cap: ibv_qp_cap,
    pub qp_type: c_uint,
    pub sq_sig_all: c_int,
}

/// `struct ibv_qp_attr` (144 bytes); only qp_state (the first field) is ever set.
#[repr(C)]
pub struct ibv_qp_attr {
    pub qp_state: c_uint,
    _rest: [u32; 35],
}

impl ibv_qp_attr {
    pub fn state(state: c_uint) -> ibv_qp_attr {
        ibv_qp_attr { qp_state: state, _rest: [0; 35] }
    }
}

#[repr(C)]
pub struct ibv_async_event {
    /// A union of cq/qp/srq/wq pointers and a port number; which one depends on event_type.
    pub element: *mut c_void,
    pub event_type: c_uint,
}

#[repr(C)]
pub struct rdma_event_channel {
    pub fd: c_int,
}

/// `struct rdma_cm_id`: the prefix we read, plus the peer address inside `route` (offset 160).
#[repr(C)]
pub struct rdma_cm_id {
    pub verbs: *mut ibv_context,
    pub channel: *mut rdma_event_channel,
    pub context: *mut c_void,
    pub qp: *mut ibv_qp,
    /// `struct rdma_route` starts here: src_addr (sockaddr_storage), then dst_addr.
    pub route_src_addr: libc::sockaddr_storage,
    pub route_dst_addr: libc::sockaddr_storage,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct rdma_conn_param {
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: u8,
    pub qp_num: u32,
}

#[repr(C)]
pub struct rdma_cm_event {
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub event: c_uint,
    pub status: c_int,
    /// A union with the UD parameters (larger); for RC only the conn view is meaningful.
    pub conn: rdma_conn_param,
    _ud_rest: [u64; 4],
}

// Constants (enum values of the C headers).
pub const IBV_WR_SEND_WITH_IMM: c_uint = 3;
pub const IBV_WR_RDMA_READ: c_uint = 4;
pub const IBV_WR_BIND_MW: c_uint = 8;
pub const IBV_WR_SEND_WITH_INV: c_uint = 9;
pub const IBV_MW_TYPE_2: c_uint = 2;
pub const IBV_WC_WITH_INV: c_uint = 8;
/// Soft-RoCE's provider copies the kernel's completion flags unconverted: there "with invalidate"
/// is the kernel's bit 2 (`IB_WC_WITH_INVALIDATE`), user space's IBV_WC_IP_CSUM_OK (meaningless on
/// an RC queue pair).
pub const RXE_WC_WITH_INV: c_uint = 4;
pub const IBV_SEND_SIGNALED: c_uint = 2;
pub const IBV_SEND_INLINE: c_uint = 8;
pub const IBV_WC_WITH_IMM: c_uint = 2;
pub const IBV_WC_SUCCESS: c_uint = 0;
pub const IBV_WC_LOC_LEN_ERR: c_uint = 1;
pub const IBV_WC_WR_FLUSH_ERR: c_uint = 5;
pub const IBV_QPT_RC: c_uint = 2;
pub const IBV_QPS_ERR: c_uint = 6;
pub const IBV_QP_STATE: c_int = 1;
pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub const IBV_ACCESS_REMOTE_READ: c_int = 4;
pub const IBV_ACCESS_MW_BIND: c_int = 16;

pub const IBV_EVENT_CQ_ERR: c_uint = 0;
pub const IBV_EVENT_QP_FATAL: c_uint = 1;
pub const IBV_EVENT_QP_REQ_ERR: c_uint = 2;
pub const IBV_EVENT_QP_ACCESS_ERR: c_uint = 3;
pub const IBV_EVENT_DEVICE_FATAL: c_uint = 8;
pub const IBV_EVENT_SRQ_ERR: c_uint = 14;

pub const RDMA_PS_TCP: c_int = 0x0106;

/// `rdma_set_option` level for options of the CM id itself (`RDMA_OPTION_ID`).
pub const RDMA_OPTION_ID: c_int = 0;
/// `RDMA_OPTION_ID_ACK_TIMEOUT`: the QP's local ACK timeout exponent (one u8).
pub const RDMA_OPTION_ID_ACK_TIMEOUT: c_int = 3;
/// The most private data an IB CM REJ carries (`IB_CM_REJ_PRIVATE_DATA_SIZE`).
pub const REJECT_PRIVATE_DATA_MAX: usize = 148;

pub const RDMA_CM_EVENT_ADDR_RESOLVED: c_uint = 0;
pub const RDMA_CM_EVENT_ADDR_ERROR: c_uint = 1;
pub const RDMA_CM_EVENT_ROUTE_RESOLVED: c_uint = 2;
pub const RDMA_CM_EVENT_ROUTE_ERROR: c_uint = 3;
pub const RDMA_CM_EVENT_CONNECT_REQUEST: c_uint = 4;
pub const RDMA_CM_EVENT_CONNECT_ERROR: c_uint = 6;
pub const RDMA_CM_EVENT_UNREACHABLE: c_uint = 7;
pub const RDMA_CM_EVENT_REJECTED: c_uint = 8;
pub const RDMA_CM_EVENT_ESTABLISHED: c_uint = 9;
pub const RDMA_CM_EVENT_DISCONNECTED: c_uint = 10;
pub const RDMA_CM_EVENT_DEVICE_REMOVAL: c_uint = 11;
pub const RDMA_CM_EVENT_ADDR_CHANGE: c_uint = 14;
pub const RDMA_CM_EVENT_TIMEWAIT_EXIT: c_uint = 15;

// The layout pins. If one fails, the hand-written struct above drifted from the C ABI.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(ibv_context, ops) == 8);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, poll_cq) == 96);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, req_notify_cq) == 104);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, post_srq_recv) == 168);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, post_send) == 208);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, post_recv) == 216);
    assert!(offset_of!(ibv_context, async_fd) == 268);
    assert!(offset_of!(ibv_comp_channel, fd) == 8);
    assert!(offset_of!(ibv_qp, qp_num) == 52);
    assert!(offset_of!(ibv_mr, addr) == 16);
    assert!(offset_of!(ibv_mr, lkey) == 36);
    assert!(size_of::<ibv_sge>() == 16);
    assert!(size_of::<ibv_recv_wr>() == 32);
    assert!(size_of::<ibv_send_wr>() == 128);
    assert!(offset_of!(ibv_send_wr, opcode) == 28);
    assert!(offset_of!(ibv_send_wr, rdma_remote_addr) == 40);
    assert!(offset_of!(ibv_send_wr, rdma_rkey) == 48);
    assert!(offset_of!(ibv_send_wr, bind_mw) == 80);
    assert!(offset_of!(ibv_send_wr, bind_rkey) == 88);
    assert!(offset_of!(ibv_send_wr, bind_mr) == 96);
    assert!(offset_of!(ibv_send_wr, bind_access) == 120);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, alloc_mw) == 64);
    assert!(offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, dealloc_mw) == 80);
    assert!(offset_of!(ibv_mw, rkey) == 16);
    assert!(offset_of!(ibv_send_wr, imm_data) == 36);
    assert!(size_of::<ibv_wc>() == 48);
    assert!(offset_of!(ibv_wc, byte_len) == 20);
    assert!(offset_of!(ibv_wc, imm_data) == 24);
    assert!(offset_of!(ibv_wc, wc_flags) == 36);
    assert!(size_of::<ibv_qp_init_attr>() == 64);
    assert!(offset_of!(ibv_qp_init_attr, srq) == 24);
    assert!(size_of::<ibv_srq_init_attr>() == 24);
    assert!(offset_of!(ibv_srq_init_attr, srq_limit) == 16);
    assert!(offset_of!(ibv_qp_init_attr, cap) == 32);
    assert!(offset_of!(ibv_qp_init_attr, qp_type) == 52);
    assert!(size_of::<ibv_qp_attr>() == 144);
    assert!(size_of::<ibv_async_event>() == 16);
    assert!(offset_of!(rdma_cm_id, qp) == 24);
    assert!(offset_of!(rdma_cm_id, route_dst_addr) == 160);
    assert!(size_of::<rdma_cm_event>() == 80);
    assert!(offset_of!(rdma_cm_event, event) == 16);
    assert!(offset_of!(rdma_cm_event, conn) == 24);
    assert!(size_of::<rdma_conn_param>() == 24);
    assert!(offset_of!(rdma_conn_param, rnr_retry_count) == 13);
    assert!(offset_of!(rdma_conn_param, qp_num) == 16);
};
