//! The few libuv calls the binding needs: a poll handle on the transport's fd, a timer for its
//! next deadline and an idle handle for busy polling, on the loop of the Node environment that created them. The uv_* symbols resolve
//! against the node executable at load time (as the napi_* ones do); handles are allocated with
//! `uv_handle_size`, so no libuv header layout is baked in beyond the public `data` accessors.

use std::ffi::{c_int, c_void};

pub type UvLoop = c_void;
pub type UvHandle = c_void;

/// `uv_handle_type` values (uv.h: UV_HANDLE_TYPE_MAP, UV_UNKNOWN_HANDLE = 0 first).
const UV_IDLE: c_int = 6;
const UV_POLL: c_int = 8;
const UV_TIMER: c_int = 13;
pub const UV_READABLE: c_int = 1;

type PollCb = unsafe extern "C" fn(handle: *mut UvHandle, status: c_int, events: c_int);
type TimerCb = unsafe extern "C" fn(handle: *mut UvHandle);
type IdleCb = unsafe extern "C" fn(handle: *mut UvHandle);
type CloseCb = unsafe extern "C" fn(handle: *mut UvHandle);

extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(lp: *mut UvLoop, handle: *mut UvHandle, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut UvHandle, events: c_int, cb: PollCb) -> c_int;
    fn uv_timer_init(lp: *mut UvLoop, handle: *mut UvHandle) -> c_int;
    fn uv_timer_start(handle: *mut UvHandle, cb: TimerCb, timeout: u64, repeat: u64) -> c_int;
    fn uv_timer_stop(handle: *mut UvHandle) -> c_int;
    fn uv_idle_init(lp: *mut UvLoop, handle: *mut UvHandle) -> c_int;
    fn uv_idle_start(handle: *mut UvHandle, cb: IdleCb) -> c_int;
    fn uv_idle_stop(handle: *mut UvHandle) -> c_int;
    fn uv_close(handle: *mut UvHandle, cb: CloseCb);
    fn uv_ref(handle: *mut UvHandle);
    fn uv_unref(handle: *mut UvHandle);
    fn uv_handle_set_data(handle: *mut UvHandle, data: *mut c_void);
    fn uv_handle_get_data(handle: *const UvHandle) -> *mut c_void;
    fn uv_strerror(err: c_int) -> *const std::ffi::c_char;
}

fn alloc(kind: c_int) -> *mut UvHandle {
    // SAFETY: uv_handle_size is a pure lookup; the memory is freed in `free_on_close`.
    let size = unsafe { uv_handle_size(kind) };
    let words = size.div_ceil(8);
    Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut UvHandle
}

unsafe extern "C" fn free_on_close(handle: *mut UvHandle) {
    let words = uv_handle_get_data(handle) as usize;
    // SAFETY: allocated by `alloc` as a boxed [u64] of this many words (stored in `data` by `close`).
    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(handle as *mut u64, words)));
}

fn check(what: &str, rc: c_int) -> Result<(), String> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: uv_strerror returns a static string for any code.
    let msg = unsafe { std::ffi::CStr::from_ptr(uv_strerror(rc)) }.to_string_lossy().into_owned();
    Err(format!("{what}: {msg}"))
}

/// A libuv handle owned by Rust: closed (and its memory freed by libuv's close callback) on drop.
pub struct Handle {
    raw: *mut UvHandle,
    words: usize,
    /// Set once the *_init call succeeded: only then does libuv know the handle (and close it).
    initialised: bool,
}

impl Handle {
    /// A poll handle watching `fd` for readability; `cb` gets `data` back through `data()`.
    pub fn poll(lp: *mut UvLoop, fd: c_int, cb: PollCb, data: *mut c_void) -> Result<Handle, String> {
        let mut h = Handle::new(UV_POLL);
        // SAFETY: h.raw is a fresh handle of the right size on this loop.
        unsafe {
            check("uv_poll_init", uv_poll_init(lp, h.raw, fd))?;
            h.initialised = true;
            uv_handle_set_data(h.raw, data);
            check("uv_poll_start", uv_poll_start(h.raw, UV_READABLE, cb))?;
        }
        Ok(h)
    }

    pub fn timer(lp: *mut UvLoop, data: *mut c_void) -> Result<Handle, String> {
        let mut h = Handle::new(UV_TIMER);
        // SAFETY: as for poll.
        unsafe {
            check("uv_timer_init", uv_timer_init(lp, h.raw))?;
            h.initialised = true;
            uv_handle_set_data(h.raw, data);
        }
        Ok(h)
    }

    /// An idle handle: while started, the loop does not block in its poll phase and calls `cb`
    /// once per iteration (after timers and I/O callbacks). Unref'd: it never keeps the loop alive.
    pub fn idle(lp: *mut UvLoop, data: *mut c_void) -> Result<Handle, String> {
        let mut h = Handle::new(UV_IDLE);
        // SAFETY: as for poll.
        unsafe {
            check("uv_idle_init", uv_idle_init(lp, h.raw))?;
            h.initialised = true;
            uv_handle_set_data(h.raw, data);
            uv_unref(h.raw);
        }
        Ok(h)
    }

    pub fn start_idle(&self, cb: IdleCb) {
        // SAFETY: an initialised idle handle until drop.
        unsafe { uv_idle_start(self.raw, cb) };
    }

    pub fn stop_idle(&self) {
        // SAFETY: as above.
        unsafe { uv_idle_stop(self.raw) };
    }

    fn new(kind: c_int) -> Handle {
        // SAFETY: as in alloc.
        let words = unsafe { uv_handle_size(kind) }.div_ceil(8);
        Handle { raw: alloc(kind), words, initialised: false }
    }

    /// (Re)starts a one-shot timer.
    pub fn start_timer(&self, cb: TimerCb, ms: u64) {
        // SAFETY: self.raw is an initialised timer handle until drop.
        unsafe { uv_timer_start(self.raw, cb, ms, 0) };
    }

    pub fn stop_timer(&self) {
        // SAFETY: as above.
        unsafe { uv_timer_stop(self.raw) };
    }

    /// Whether this handle keeps the loop alive (`uv_ref`) or not (`uv_unref`).
    pub fn set_ref(&self, on: bool) {
        // SAFETY: an initialised handle.
        unsafe {
            if on {
                uv_ref(self.raw)
            } else {
                uv_unref(self.raw)
            }
        }
    }

    /// The `data` pointer given at creation.
    ///
    /// # Safety
    /// `handle` must be a handle created by this module and not yet closed.
    pub unsafe fn data(handle: *const UvHandle) -> *mut c_void {
        uv_handle_get_data(handle)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: closing stops the handle (no callback runs after this); its memory is freed in
        // the close callback, which finds the allocation's size in `data`.
        unsafe {
            uv_handle_set_data(self.raw, self.words as *mut c_void);
            if self.initialised {
                uv_close(self.raw, free_on_close);
            } else {
                free_on_close(self.raw);
            }
        }
    }
}
