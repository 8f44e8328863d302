//! Drives one transport from the libuv loop of the Node environment that created it, on the JS
//! thread (the zeromq.js v6 model): a `uv_poll` handle on the transport's fd and a `uv_timer` for
//! its next deadline. When either fires, the transport does a bounded amount of I/O and the events
//! go to JS in one call, inside a handle scope and a callback scope (`napi_make_callback`), so
//! promises resolved by it run before libuv moves on. Commands (send, close ...) are called
//! directly from JS on the same thread: no thread hand-off anywhere.
//!
//! Busy polling (rdma, opt-in): after a turn that delivered events, a `uv_idle` handle polls the
//! transport once per loop iteration (timers and other I/O run between polls; the loop does not
//! sleep) until nothing came for the transport's `busy_poll_window`; then the transport asks for
//! wake-ups again. CPU is spent only while traffic flows.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::ptr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use rdma_graceful_core::{Event, Liveness, Pollable, Transport};

use crate::events::BindingEvent;
use crate::uv::{Handle, UvHandle, UvLoop};

pub struct LoopDriver {
    env: sys::napi_env,
    transport: RefCell<Option<Liveness>>,
    poll: RefCell<Option<Handle>>,
    timer: RefCell<Option<Handle>>,
    idle: RefCell<Option<Handle>>,
    /// While busy polling: when it stops unless more work comes.
    busy_until: Cell<Option<Instant>>,
    /// The JS function that takes each batch, and the object that stands for us in async hooks.
    on_events: sys::napi_ref,
    resource: sys::napi_ref,
    async_context: sys::napi_async_context,
    /// Set while a batch is in JS: a nested `poll_now` must not hand out later events first.
    delivering: Cell<bool>,
    /// The environment ran its cleanup hooks: no napi call may be made on it any more.
    env_gone: Cell<bool>,
    scratch: RefCell<Vec<Event>>,
}

fn ok(status: sys::napi_status, what: &str) -> napi::Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(napi::Error::from_reason(format!("{what} failed (napi status {status})")))
    }
}

impl LoopDriver {
    /// Starts watching `transport` on `env`'s loop. The returned driver must be `stop`ped (the
    /// binding does it on shutdown, on finalize, and in the environment's cleanup hook).
    pub fn start(
        env: sys::napi_env,
        transport: Box<dyn Transport>,
        on_events: sys::napi_value,
    ) -> napi::Result<Rc<LoopDriver>> {
        // SAFETY: env is the live environment of the calling JS thread; every value is checked.
        unsafe {
            let mut lp: *mut sys::uv_loop_s = ptr::null_mut();
            ok(sys::napi_get_uv_event_loop(env, &mut lp), "napi_get_uv_event_loop")?;
            let mut cb_ref = ptr::null_mut();
            ok(sys::napi_create_reference(env, on_events, 1, &mut cb_ref), "napi_create_reference")?;
            let mut resource = ptr::null_mut();
            ok(sys::napi_create_object(env, &mut resource), "napi_create_object")?;
            let mut resource_ref = ptr::null_mut();
            ok(sys::napi_create_reference(env, resource, 1, &mut resource_ref), "napi_create_reference")?;
            let mut name = ptr::null_mut();
            let label = "rdma-graceful";
            ok(
                sys::napi_create_string_utf8(env, label.as_ptr().cast(), label.len() as isize, &mut name),
                "napi_create_string_utf8",
            )?;
            let mut async_context = ptr::null_mut();
            ok(sys::napi_async_init(env, resource, name, &mut async_context), "napi_async_init")?;

            let fd = transport.fd();
            let driver = Rc::new(LoopDriver {
                env,
                transport: RefCell::new(Some(Liveness::new(transport))),
                poll: RefCell::new(None),
                timer: RefCell::new(None),
                idle: RefCell::new(None),
                busy_until: Cell::new(None),
                on_events: cb_ref,
                resource: resource_ref,
                async_context,
                delivering: Cell::new(false),
                env_gone: Cell::new(false),
                scratch: RefCell::new(Vec::new()),
            });
            // The handles point back at the driver without owning it: `stop` closes them (no
            // callback runs after uv_close) before the driver can be dropped.
            let data = Rc::as_ptr(&driver) as *mut c_void;
            let lp = lp as *mut UvLoop;
            let poll = Handle::poll(lp, fd, on_poll, data).map_err(napi::Error::from_reason)?;
            let timer = Handle::timer(lp, data).map_err(napi::Error::from_reason)?;
            timer.set_ref(false); // deadlines alone never keep the process alive
            let idle = Handle::idle(lp, data).map_err(napi::Error::from_reason)?;
            *driver.poll.borrow_mut() = Some(poll);
            *driver.timer.borrow_mut() = Some(timer);
            *driver.idle.borrow_mut() = Some(idle);
            Ok(driver)
        }
    }

    /// The transport, for a command from JS. Fails once stopped.
    pub fn with<T>(&self, f: impl FnOnce(&mut Liveness) -> T) -> Option<T> {
        let mut t = self.transport.borrow_mut();
        let out = t.as_mut().map(f);
        drop(t);
        out
    }

    /// Re-arms the deadline timer after a command that may have moved the next deadline.
    pub fn rearm(&self) {
        let next = match self.transport.borrow().as_ref() {
            Some(t) => t.next_deadline(),
            None => return,
        };
        if let Some(timer) = self.timer.borrow().as_ref() {
            match next {
                Some(at) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                    timer.start_timer(on_timer, ms as u64);
                }
                None => timer.stop_timer(),
            }
        }
    }

    /// Keeps the process alive while something is open (`true`), or not.
    pub fn set_ref(&self, on: bool) {
        if let Some(p) = self.poll.borrow().as_ref() {
            p.set_ref(on);
        }
    }

    /// Polls now and returns the events instead of calling JS (JS asks for this before a timer
    /// reaches the protocol: libuv runs expired timers before poll callbacks). Empty while a batch
    /// is being delivered, so events are never handed out of order.
    pub fn poll_now(&self) -> Vec<Event> {
        let mut events = Vec::new();
        if !self.delivering.get() {
            self.with(|t| t.poll(Instant::now(), &mut events));
            self.rearm();
        }
        events
    }

    /// Stops watching and frees the transport (and with it every resource it holds).
    pub fn stop(&self) {
        self.poll.borrow_mut().take();
        self.timer.borrow_mut().take();
        self.idle.borrow_mut().take();
        let transport = self.transport.borrow_mut().take();
        drop(transport);
    }

    /// The environment is being torn down: stop, and make no napi call from now on.
    pub fn environment_ended(&self) {
        self.env_gone.set(true);
        self.stop();
    }

    pub fn environment_is_gone(&self) -> bool {
        self.env_gone.get()
    }

    /// One turn: bounded I/O and deadlines, then the batch into JS.
    fn run(&self) {
        self.turn(|t, events| {
            t.poll(Instant::now(), events);
            !events.is_empty()
        });
    }

    /// One busy poll (the idle handle's turn); busy polling ends after a window without work.
    fn run_busy(&self) {
        self.turn(|t, events| t.busy_poll(Instant::now(), events));
    }

    /// Runs `step` on the transport and hands its events to JS; `step` says whether it found
    /// work, which starts or extends busy polling when the transport has a window for it.
    fn turn(&self, step: impl FnOnce(&mut Liveness, &mut Vec<Event>) -> bool) {
        if self.delivering.get() {
            return;
        }
        let mut events = std::mem::take(&mut *self.scratch.borrow_mut());
        let Some((worked, window)) = self.with(|t| (step(t, &mut events), t.busy_poll_window())) else {
            return;
        };
        self.busy_after(worked, window, &mut events);
        if !events.is_empty() {
            self.delivering.set(true);
            self.deliver(events.drain(..));
            self.delivering.set(false);
        }
        *self.scratch.borrow_mut() = events;
        self.rearm();
    }

    /// Starts, extends or ends busy polling after a turn that found work (`worked`) or not.
    fn busy_after(&self, worked: bool, window: Duration, events: &mut Vec<Event>) {
        let was = self.busy_until.get();
        if was.is_none() && (window.is_zero() || !worked) {
            return; // the common case costs no clock read
        }
        let now = Instant::now();
        if worked && !window.is_zero() {
            self.busy_until.set(Some(now + window));
            if was.is_none() {
                self.with(|t| t.set_busy_polling(true, now, events));
                if let Some(idle) = self.idle.borrow().as_ref() {
                    idle.start_idle(on_idle);
                }
            }
        } else if was.is_some_and(|until| now >= until || window.is_zero()) {
            self.busy_until.set(None);
            if let Some(idle) = self.idle.borrow().as_ref() {
                idle.stop_idle();
            }
            self.with(|t| t.set_busy_polling(false, now, events));
        }
    }

    /// Hands a batch to JS. The hot path, a batch that is one `Frames` event, goes as
    /// `onEvents(undefined, data, conn, count)`: no event object and no property names to build.
    /// Anything else goes as `onEvents(events)`, one `BindingEvent` object each, in order.
    fn deliver(&self, mut events: std::vec::Drain<'_, Event>) {
        let env = self.env;
        // SAFETY: called from a libuv callback on the JS thread of `env`, outside any JS frame;
        // every napi value lives in the handle scope opened here.
        unsafe {
            let mut scope = ptr::null_mut();
            if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
                return;
            }
            let args = if events.len() == 1 && matches!(events.as_slice()[0], Event::Frames { .. }) {
                let Some(Event::Frames { conn, data, count }) = events.next() else { unreachable!() };
                frames_args(env, conn, data, count)
            } else {
                let batch: Vec<BindingEvent> = events.map(BindingEvent::from).collect();
                Vec::<BindingEvent>::to_napi_value(env, batch).map(|v| vec![v])
            };
            let args = match args {
                Ok(a) => a,
                Err(e) => {
                    crate::report(&format!("cannot convert an event batch: {e}"));
                    sys::napi_close_handle_scope(env, scope);
                    return;
                }
            };
            let mut func = ptr::null_mut();
            let mut recv = ptr::null_mut();
            sys::napi_get_reference_value(env, self.on_events, &mut func);
            sys::napi_get_reference_value(env, self.resource, &mut recv);
            let mut result = ptr::null_mut();
            let status =
                sys::napi_make_callback(env, self.async_context, recv, func, args.len(), args.as_ptr(), &mut result);
            if status == sys::Status::napi_pending_exception {
                // As for any callback from the loop: the exception goes to 'uncaughtException'.
                let mut error = ptr::null_mut();
                sys::napi_get_and_clear_last_exception(env, &mut error);
                sys::napi_fatal_exception(env, error);
            }
            sys::napi_close_handle_scope(env, scope);
        }
    }
}

/// Frames at most this large are copied into a Buffer on V8's heap; larger ones become an
/// external Buffer over their Vec (no copy, but a finalizer and a weak handle each).
const COPY_FRAMES_UP_TO: usize = 16 * 1024;

/// The arguments of the one-`Frames` batch: (undefined, data, conn, count).
///
/// # Safety
/// On the JS thread of `env`, inside an open handle scope.
unsafe fn frames_args(env: sys::napi_env, conn: u32, data: Vec<u8>, count: u32) -> napi::Result<Vec<sys::napi_value>> {
    let mut undefined = ptr::null_mut();
    ok(sys::napi_get_undefined(env, &mut undefined), "napi_get_undefined")?;
    let buffer = if data.len() <= COPY_FRAMES_UP_TO {
        let mut v = ptr::null_mut();
        let mut at = ptr::null_mut();
        ok(
            sys::napi_create_buffer_copy(env, data.len(), data.as_ptr().cast(), &mut at, &mut v),
            "napi_create_buffer_copy",
        )?;
        v
    } else {
        napi::bindgen_prelude::Buffer::to_napi_value(env, data.into())?
    };
    let (mut c, mut n) = (ptr::null_mut(), ptr::null_mut());
    ok(sys::napi_create_uint32(env, conn, &mut c), "napi_create_uint32")?;
    ok(sys::napi_create_uint32(env, count, &mut n), "napi_create_uint32")?;
    Ok(vec![undefined, buffer, c, n])
}

impl Drop for LoopDriver {
    fn drop(&mut self) {
        self.stop();
        if self.env_gone.get() {
            return; // its references went with the environment
        }
        // SAFETY: on the JS thread of `env`; the references and the context are ours.
        unsafe {
            sys::napi_async_destroy(self.env, self.async_context);
            sys::napi_delete_reference(self.env, self.on_events);
            sys::napi_delete_reference(self.env, self.resource);
        }
    }
}

/// Runs a turn of the driver a handle belongs to, holding a strong count for the duration: JS may
/// drop the last other one (shutdown, finalize) while the batch is in JS.
///
/// # Safety
/// `handle` is a live handle created by `LoopDriver::start` (closed before the driver is dropped).
unsafe fn with_driver_of(handle: *mut UvHandle, f: impl FnOnce(&LoopDriver)) {
    let p = Handle::data(handle) as *const LoopDriver;
    Rc::increment_strong_count(p);
    let driver = Rc::from_raw(p);
    f(&driver);
}

unsafe extern "C" fn on_poll(handle: *mut UvHandle, _status: c_int, _events: c_int) {
    // A poll error (status < 0) on an epoll fd cannot happen short of a closed fd; the transport's
    // own poll reports whatever is wrong with its sockets.
    with_driver_of(handle, LoopDriver::run);
}

unsafe extern "C" fn on_timer(handle: *mut UvHandle) {
    with_driver_of(handle, LoopDriver::run);
}

unsafe extern "C" fn on_idle(handle: *mut UvHandle) {
    with_driver_of(handle, LoopDriver::run_busy);
}
