//! Zero-copy large messages (rendezvous). From the connection's threshold up, a frame does not go
//! as 8 KiB fragments copied through send slots: the sender registers the caller's own buffer for
//! remote READ (`Pinned::expose`) and sends a 24-byte descriptor; the receiver registers a buffer
//! of its own (`Pinned::landing`), READs the payload straight into it and hands that buffer to the
//! application, then sends DONE. DONE ends the exposure: the sender deregisters the region, so
//! its rkey is dead (a READ with it fails), and only then lets the caller's buffer go.
//!
//! Where the device has type-2 memory windows, the caller's buffer is registered once, with no
//! remote access at all, through a registration cache (`RegCache`: keyed by the buffer's address
//! and length, bounded in bytes, least recently used first out, an entry pinned while a transfer
//! uses it, the buffer kept alive while registered), and each transfer binds a window of this QP
//! over it for remote READ (`Window`); the receiver's DONE for it is a SEND_WITH_INV of the
//! window's key, which the sender's device invalidates before it reports the message. Elsewhere a
//! registration per transfer does the same job (`Pinned::expose`, deregistered at DONE). Either
//! way a peer can read exactly one message's bytes, only while its transfer runs, never write.
//! Descriptor (big-endian):
//!
//! ```text
//!  0      1       2            4              8                     16       20          24
//!  | kind | flags | credits    | length       | address             | rkey   | zero      |
//! ```
//!
//! Flags: bit 0, `WINDOW`: the rkey is a window's; answer with SEND_WITH_INV of it.

use std::ffi::c_int;

use rdma_graceful_core::counters::{Kind, Live};
use rdma_graceful_core::transport::SharedPayload;
use rdma_graceful_core::{ErrorCode, TransportError};

use crate::ffi::*;
use crate::loader::Lib;

pub const DESCRIPTOR_LEN: usize = 24;
const WINDOW: u8 = 1;
/// Bytes of callers' buffers the registration cache keeps registered (and alive) at most, besides
/// those a transfer uses.
pub const CACHE_BYTES: usize = 64 << 20;
/// The most bytes one RDMA READ work request asks for (Soft-RoCE takes 8 MiB per message; real
/// NICs 1-2 GiB): larger payloads are read in pieces, posted as the send queue has room.
pub const READ_CHUNK: usize = 1 << 20;
/// Exposures one connection may have outstanding (descriptors sent, DONE not yet back).
pub const MAX_EXPOSED: usize = 16;
/// READ requests in flight per QP each way (rdma-cm's initiator depth and responder resources).
pub const READ_DEPTH: u8 = 4;
/// Bytes in front of a landing buffer's payload: the frame header, written once the READ is done,
/// so the buffer is a one-frame `Frames` batch as it stands (no copy on the way to JS).
pub const HEADER_ROOM: usize = rdma_graceful_core::frame::HEADER_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub kind: u8,
    pub credits: u16,
    pub len: u32,
    pub addr: u64,
    pub rkey: u32,
    /// The rkey is a memory window's (invalidated by the DONE: SEND_WITH_INV).
    pub window: bool,
}

impl Descriptor {
    pub fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut b = [0u8; DESCRIPTOR_LEN];
        b[0] = self.kind;
        b[1] = if self.window { WINDOW } else { 0 };
        b[2..4].copy_from_slice(&self.credits.to_be_bytes());
        b[4..8].copy_from_slice(&self.len.to_be_bytes());
        b[8..16].copy_from_slice(&self.addr.to_be_bytes());
        b[16..20].copy_from_slice(&self.rkey.to_be_bytes());
        b
    }

    /// A descriptor the peer sent, checked against this side's largest frame.
    pub fn decode(b: &[u8], local_max: u32) -> Result<Descriptor, TransportError> {
        let malformed = |what: String| TransportError::new(ErrorCode::MalformedFrame, what);
        if b.len() != DESCRIPTOR_LEN || b[1] & !WINDOW != 0 || b[20..].iter().any(|&x| x != 0) {
            return Err(malformed(format!("peer sent a malformed rendezvous descriptor ({} bytes)", b.len())));
        }
        let (kind, credits) =
            rdma_graceful_core::frame::parse_imm(((b[0] as u32) << 24) | u16::from_be_bytes([b[2], b[3]]) as u32)?;
        let len = u32::from_be_bytes(b[4..8].try_into().unwrap());
        if len == 0 {
            return Err(malformed("peer sent a rendezvous descriptor for an empty frame".into()));
        }
        if len > local_max {
            return Err(TransportError::new(
                ErrorCode::FrameTooLarge,
                format!("peer offered a frame of {len} bytes, more than {local_max} (this side's maxMessageSize)"),
            ));
        }
        let addr = u64::from_be_bytes(b[8..16].try_into().unwrap());
        let rkey = u32::from_be_bytes(b[16..20].try_into().unwrap());
        Ok(Descriptor { kind, credits, len, addr, rkey, window: b[1] & WINDOW != 0 })
    }
}

/// Memory the registration covers: the caller's buffer (sender), or one of ours (receiver).
pub enum Memory {
    Shared(SharedPayload),
    Owned(Vec<u8>),
}

impl Memory {
    fn bytes(&self) -> &[u8] {
        match self {
            Memory::Shared(s) => s.as_ref().as_ref(),
            Memory::Owned(v) => v,
        }
    }
}

/// One registration of memory we do not keep in a pool, for one transfer. Deregistered before
/// the memory is let go (Drop), so neither the device nor the peer can touch it afterwards; if
/// deregistration fails, the memory is leaked rather than freed under the device.
pub struct Pinned {
    lib: &'static Lib,
    mr: *mut ibv_mr,
    mem: Option<Memory>,
    offset: usize,
    _live: Live,
    _bytes: Live,
}

impl Pinned {
    /// Registers the caller's buffer for remote READ by the peer (and nothing else).
    pub fn expose(
        lib: &'static Lib,
        pd: *mut ibv_pd,
        payload: SharedPayload,
    ) -> Result<Pinned, (SharedPayload, TransportError)> {
        Pinned::register_shared(lib, pd, payload, IBV_ACCESS_REMOTE_READ)
    }

    /// Registers the caller's buffer with no access for the peer, only the right to bind windows
    /// over it (`RegCache`, `Window`).
    pub fn bindable(
        lib: &'static Lib,
        pd: *mut ibv_pd,
        payload: SharedPayload,
    ) -> Result<Pinned, (SharedPayload, TransportError)> {
        Pinned::register_shared(lib, pd, payload, IBV_ACCESS_MW_BIND)
    }

    /// A caller's buffer registered with `access`; on failure the buffer comes back with the error.
    fn register_shared(
        lib: &'static Lib,
        pd: *mut ibv_pd,
        payload: SharedPayload,
        access: c_int,
    ) -> Result<Pinned, (SharedPayload, TransportError)> {
        Pinned::register(lib, pd, Memory::Shared(payload), 0, access).map_err(|(m, e)| match m {
            Memory::Shared(s) => (s, e),
            Memory::Owned(_) => unreachable!("registered shared memory"),
        })
    }

    pub fn as_mr(&self) -> *mut ibv_mr {
        self.mr
    }

    /// A buffer of `len` payload bytes (after `HEADER_ROOM`) the device may write: a READ lands there.
    pub fn landing(lib: &'static Lib, pd: *mut ibv_pd, len: usize) -> Result<Pinned, TransportError> {
        let buf = vec![0u8; HEADER_ROOM + len];
        Pinned::register(lib, pd, Memory::Owned(buf), HEADER_ROOM, IBV_ACCESS_LOCAL_WRITE).map_err(|(_, e)| e)
    }

    fn register(
        lib: &'static Lib,
        pd: *mut ibv_pd,
        mem: Memory,
        offset: usize,
        access: c_int,
    ) -> Result<Pinned, (Memory, TransportError)> {
        let len = mem.bytes().len() - offset;
        let addr = mem.bytes()[offset..].as_ptr() as *mut std::ffi::c_void;
        // SAFETY: the memory is kept (in `mem`, never moved: a Vec's or a JS Buffer's heap block)
        // until after the registration is released (Drop).
        let mr = unsafe { (lib.verbs.ibv_reg_mr)(pd, addr, len, access) };
        if mr.is_null() {
            return Err((mem, crate::mr::registration_error(len)));
        }
        let bytes = Live::amount(Kind::RdmaRegisteredBytes, len as i64);
        Ok(Pinned { lib, mr, mem: Some(mem), offset, _live: Live::new(Kind::RdmaMemoryRegions), _bytes: bytes })
    }

    pub fn addr(&self) -> u64 {
        self.mem.as_ref().map_or(0, |m| m.bytes()[self.offset..].as_ptr() as u64)
    }

    pub fn len(&self) -> usize {
        self.mem.as_ref().map_or(0, |m| m.bytes().len() - self.offset)
    }

    pub fn lkey(&self) -> u32 {
        // SAFETY: mr is a live registration.
        unsafe { (*self.mr).lkey }
    }

    pub fn rkey(&self) -> u32 {
        // SAFETY: mr is a live registration.
        unsafe { (*self.mr).rkey }
    }

    /// Ends the registration and gives the memory back (None if the device would not let it go).
    pub fn release(mut self) -> Option<Memory> {
        if self.deregister() {
            self.mem.take()
        } else {
            None
        }
    }

    /// False (and the memory leaked) when the device refused.
    fn deregister(&mut self) -> bool {
        if self.mr.is_null() {
            return true;
        }
        // SAFETY: mr is ours; no work request using it is outstanding (the caller's contract:
        // the transfer ended, or the QP was destroyed first).
        let rc = unsafe { (self.lib.verbs.ibv_dereg_mr)(self.mr) };
        self.mr = std::ptr::null_mut();
        if rc != 0 {
            crate::report(&format!(
                "ibv_dereg_mr of a transfer failed: {}; leaking its buffer",
                std::io::Error::from_raw_os_error(rc)
            ));
            std::mem::forget(self.mem.take());
            return false;
        }
        true
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.deregister();
    }
}

/// A type-2 memory window of a protection domain: bound to one QP per transfer (`WrOp::Bind`) with
/// a fresh key, invalidated by the peer's DONE. Deallocated (and so unbound) on drop.
pub struct Window {
    lib_dealloc: DeallocMwFn,
    mw: *mut ibv_mw,
    /// The key of its last binding: the next takes the next value of its low byte.
    pub rkey: u32,
    _live: Live,
}

impl Window {
    /// None where the device has no type-2 windows (the caller registers per transfer instead).
    pub fn alloc(pd: *mut ibv_pd, ctx: *mut ibv_context) -> Option<Window> {
        // SAFETY: ctx is the live context of pd; the slots are the provider's or None.
        let (alloc, dealloc) = unsafe { ((*ctx).ops.alloc_mw?, (*ctx).ops.dealloc_mw?) };
        // SAFETY: pd is live.
        let mw = unsafe { alloc(pd, IBV_MW_TYPE_2) };
        if mw.is_null() {
            return None;
        }
        // SAFETY: mw is the window just made.
        let rkey = unsafe { (*mw).rkey };
        Some(Window { lib_dealloc: dealloc, mw, rkey, _live: Live::new(Kind::RdmaMemoryWindows) })
    }

    pub fn as_ptr(&self) -> *mut ibv_mw {
        self.mw
    }

    /// Takes the key for the next binding (`ibv_inc_rkey`: the low 8 bits are the consumer's).
    /// The provider reads the window's current key from `ibv_mw.rkey` when the bind is posted (the
    /// device checks it), so that field is brought up to the last binding's key first.
    pub fn rebind_key(&mut self) -> u32 {
        // SAFETY: mw is ours and live; nothing else writes it.
        unsafe { (*self.mw).rkey = self.rkey };
        self.rkey = (self.rkey & 0xffff_ff00) | (self.rkey.wrapping_add(1) & 0xff);
        self.rkey
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: mw is ours; the QP it was bound to is destroyed or in ERR.
        let rc = unsafe { (self.lib_dealloc)(self.mw) };
        if rc != 0 {
            crate::report(&format!("deallocating a memory window failed: {}", std::io::Error::from_raw_os_error(rc)));
        }
    }
}

/// The registration cache of a device pool: callers' buffers registered for window binding,
/// keyed by address and length (the entry keeps the buffer alive, so the address cannot be
/// reused by other memory while it is cached). An entry a transfer uses (its `Rc` held by the
/// exposure) is never evicted; the others go least recently used first once the cache holds more
/// than `CACHE_BYTES`.
#[derive(Default)]
pub struct RegCache {
    entries: std::collections::HashMap<(u64, usize), (std::rc::Rc<Pinned>, u64)>,
    bytes: usize,
    tick: u64,
    /// Registrations made and cache hits, for tests and stats.
    pub registered: u64,
    pub hits: u64,
}

impl RegCache {
    /// The cached registration of `payload`'s bytes, registering it on a miss. On a hit the
    /// caller's box is dropped: the cached one keeps the same memory alive.
    pub fn get(
        &mut self,
        lib: &'static Lib,
        pd: *mut ibv_pd,
        payload: SharedPayload,
    ) -> Result<std::rc::Rc<Pinned>, (SharedPayload, TransportError)> {
        let bytes = payload.as_ref().as_ref();
        let key = (bytes.as_ptr() as u64, bytes.len());
        self.tick += 1;
        if let Some((region, used)) = self.entries.get_mut(&key) {
            *used = self.tick;
            self.hits += 1;
            return Ok(region.clone());
        }
        let region = std::rc::Rc::new(Pinned::bindable(lib, pd, payload)?);
        self.registered += 1;
        self.bytes += key.1;
        self.entries.insert(key, (region.clone(), self.tick));
        self.evict(CACHE_BYTES);
        Ok(region)
    }

    /// Deregisters (and lets go of) the least recently used entries no transfer uses, until the
    /// cache holds at most `limit` bytes or only entries in use.
    pub fn evict(&mut self, limit: usize) {
        while self.bytes > limit {
            let idle = self
                .entries
                .iter()
                .filter(|(_, (r, _))| std::rc::Rc::strong_count(r) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            let Some(key) = idle else { return };
            self.entries.remove(&key);
            self.bytes -= key.1;
        }
    }
}

/// Whether this process may register a landing buffer of `bytes` beyond what it holds now
/// (RLIMIT_MEMLOCK; root and unlimited may): a side that could not land a READ does not offer
/// rendezvous, and its peer sends it fragments as before.
pub fn memlock_allows(bytes: u64) -> bool {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: lim is a valid out-parameter; geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 || unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return true;
    }
    lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= Kind::RdmaRegisteredBytes.get() as u64 + 2 * bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_round_trips() {
        for window in [false, true] {
            let d =
                Descriptor { kind: 3, credits: 513, len: 1 << 20, addr: 0x7f00_dead_beef, rkey: 0x1234_5678, window };
            assert_eq!(Descriptor::decode(&d.encode(), 1 << 20).unwrap(), d);
        }
    }

    #[test]
    fn descriptors_beyond_bounds_or_malformed_are_refused() {
        let d = Descriptor { kind: 3, credits: 0, len: 4097, addr: 1, rkey: 2, window: false };
        assert_eq!(Descriptor::decode(&d.encode(), 4096).unwrap_err().code, ErrorCode::FrameTooLarge);
        let empty = Descriptor { len: 0, ..d };
        assert_eq!(Descriptor::decode(&empty.encode(), 4096).unwrap_err().code, ErrorCode::MalformedFrame);
        let mut stray = d.encode();
        stray[22] = 1;
        assert_eq!(Descriptor::decode(&stray, 1 << 20).unwrap_err().code, ErrorCode::MalformedFrame);
        let mut flag = d.encode();
        flag[1] = 2;
        assert_eq!(Descriptor::decode(&flag, 1 << 20).unwrap_err().code, ErrorCode::MalformedFrame);
        assert_eq!(Descriptor::decode(&d.encode()[..20], 1 << 20).unwrap_err().code, ErrorCode::MalformedFrame);
        let mut bad_kind = d.encode();
        bad_kind[0] = 200;
        assert!(Descriptor::decode(&bad_kind, 1 << 20).is_err());
    }
}
