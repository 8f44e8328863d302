//! What every connection on one device shares: a protection domain, one completion queue (sends
//! and receives of every QP, told apart by QP number), one shared receive queue fed from a pool of
//! registered buffers that grows by chunks, and a pool of registered send slots. A connection adds
//! only its QP and a window of buffers set aside for its peer (`link::Credits`).
//!
//! The guarantee against RNR: `committed` (the sum of every connection's window) never exceeds
//! `posted` (buffers in the SRQ, each posted again as soon as its message is copied out).
//!
//! Ownership encodes teardown (as in rust-ibverbs, where a QP holds its PD and CQ): the verbs
//! objects live in a `PoolCore` behind an `Rc` that the pool and every QP on it hold, so none of
//! them (nor the buffers a posted work request points into) can be freed while a QP exists. Its
//! field order is its teardown order (Rust drops fields in declaration order): SRQ, CQ, completion
//! channel, receive buffers, send buffers, PD, and last the device handle.

use std::cell::RefCell;
use std::rc::Rc;

use rdma_graceful_core::{ErrorCode, TransportError};

use crate::cq::{CompChannel, Cq};
use crate::device::Device;
use crate::ffi::*;
use crate::loader::Lib;
use crate::mr::Mr;
use crate::pd::Pd;
use crate::srq::Srq;
use crate::{BUFFER_SIZE, POOL_CHUNK, POOL_MAX_BUFFERS, SEND_POOL_SLOTS};

/// The verbs objects and registered buffers of a pool: freed when the pool and every QP on it
/// have let go of them.
pub struct PoolCore {
    pub srq: Srq,
    pub cq: Cq,
    pub channel: CompChannel,
    recv: RefCell<Vec<Mr>>,
    send: RefCell<Mr>,
    pd: Pd,
    pub device: Device,
}

impl PoolCore {
    pub fn pd(&self) -> *mut ibv_pd {
        self.pd.as_ptr()
    }
}

pub struct Pool {
    /// Callers' buffers registered for zero-copy (`rndv`). Declared first: deregistered before
    /// the PD in `core` may go.
    pub cache: crate::rndv::RegCache,
    /// The device could not allocate a memory window: transfers register per transfer instead.
    pub no_windows: bool,
    pub core: Rc<PoolCore>,
    free_send: Vec<u32>,
    posted: u32,
    committed: u32,
    /// Connections using the pool (it is freed when the last one ends and no listener is on it).
    pub users: usize,
}

impl Pool {
    pub fn new(lib: &'static Lib, device: Device) -> Result<Pool, TransportError> {
        let ctx = device.ctx();
        let pd = Pd::new(lib, ctx)?;
        let srq = Srq::new(lib, pd.as_ptr(), POOL_MAX_BUFFERS, POOL_CHUNK)?;
        let channel = CompChannel::new(lib, ctx)?;
        // Room for every completion that can be outstanding: one per posted receive, one per send slot.
        let cq = Cq::new(lib, ctx, &channel, (srq.capacity() + SEND_POOL_SLOTS) as usize)?;
        let send = Mr::new(lib, pd.as_ptr(), BUFFER_SIZE as usize, SEND_POOL_SLOTS as usize)?;
        let core = PoolCore { srq, cq, channel, recv: RefCell::new(Vec::new()), send: RefCell::new(send), pd, device };
        let mut pool = Pool {
            cache: Default::default(),
            no_windows: false,
            core: Rc::new(core),
            free_send: (0..SEND_POOL_SLOTS).rev().collect(),
            posted: 0,
            committed: 0,
            users: 0,
        };
        pool.grow()?;
        Ok(pool)
    }

    /// Sets `n` buffers aside for a peer, registering another chunk when the posted ones are all
    /// set aside. Fails with ResourceLimit when the SRQ is full or registration is refused.
    pub fn reserve(&mut self, n: u32) -> Result<(), TransportError> {
        while self.posted - self.committed < n {
            self.grow()?;
        }
        self.committed += n;
        Ok(())
    }

    /// As `reserve`, for growing a window: false instead of an error, and never into the last
    /// eighth of the SRQ (kept for new connections).
    pub fn try_reserve(&mut self, n: u32) -> bool {
        !self.in_last_eighth(self.committed + n) && self.reserve(n).is_ok()
    }

    pub fn release(&mut self, n: u32) {
        debug_assert!(n <= self.committed);
        self.committed -= n.min(self.committed);
    }

    /// Most of what the SRQ can hold is set aside: windows shrink back as they are granted.
    pub fn under_pressure(&self) -> bool {
        self.in_last_eighth(self.committed)
    }

    /// Whether `committed` buffers set aside would reach into the SRQ's last eighth.
    fn in_last_eighth(&self, committed: u32) -> bool {
        committed * 8 > self.core.srq.capacity() * 7
    }

    fn grow(&mut self) -> Result<(), TransportError> {
        if self.posted + POOL_CHUNK > self.core.srq.capacity() {
            return Err(TransportError::new(
                ErrorCode::ResourceLimit,
                format!(
                    "the rdma receive pool of this device is full: {} buffers of {BUFFER_SIZE} bytes, all set \
                     aside for the connections open on it; close some, or open them on another device",
                    self.posted
                ),
            ));
        }
        let core = &self.core;
        let chunk = Mr::new(core.device.lib(), core.pd.as_ptr(), BUFFER_SIZE as usize, POOL_CHUNK as usize)?;
        let base = core.recv.borrow().len() as u32 * POOL_CHUNK;
        core.recv.borrow_mut().push(chunk);
        for i in base..base + POOL_CHUNK {
            self.repost(i)?;
            self.posted += 1;
        }
        Ok(())
    }

    /// Posts receive buffer `i` (again) in the SRQ.
    pub fn repost(&self, i: u32) -> Result<(), TransportError> {
        let sge =
            self.core.recv.borrow()[(i / POOL_CHUNK) as usize].sge((i % POOL_CHUNK) as usize, BUFFER_SIZE as usize);
        self.core.srq.post_recv(i as u64, sge)
    }

    /// Runs `f` over the first `len` bytes received into buffer `i`.
    pub fn with_received<R>(&self, i: u32, len: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let recv = self.core.recv.borrow();
        let slot = recv[(i / POOL_CHUNK) as usize].slot((i % POOL_CHUNK) as usize);
        f(&slot[..len.min(slot.len())])
    }

    pub fn take_send_slot(&mut self) -> Option<u32> {
        self.free_send.pop()
    }

    pub fn put_send_slot(&mut self, slot: u32) {
        self.free_send.push(slot);
    }

    /// Copies `data` into send slot `slot` and returns the entry that sends it.
    pub fn fill_send_slot(&mut self, slot: u32, data: &[u8]) -> ibv_sge {
        let mut send = self.core.send.borrow_mut();
        send.slot_mut(slot as usize)[..data.len()].copy_from_slice(data);
        send.sge(slot as usize, data.len())
    }

    /// Buffers posted, and set aside for peers.
    pub fn usage(&self) -> (u32, u32) {
        (self.posted, self.committed)
    }
}
