//! Opens libibverbs.so.1 and librdmacm.so.1 with dlopen the first time an RDMA transport is asked
//! for, and keeps them open for the life of the process.
//!
//! Why dlopen: the addon must load on machines without rdma-core. Linking the libraries would put
//! them in the binary's DT_NEEDED list and the dynamic loader would refuse the whole addon (and
//! with it the tcp transport) there. Loaded here, only `RdmaTransport::new` fails, with a message
//! naming the missing library and the packages that provide it.
//!
//! Why never unloaded: providers (librxe, libmlx5 ...) are dlopened by libibverbs itself and keep
//! threads and pointers into it; unloading verbs under a live provider is not supported.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use libloading::Library;

use crate::ffi::*;

/// What to install when a library is missing (Debian/Ubuntu package names).
pub const INSTALL_HINT: &str =
    "install rdma-core's user-space libraries (Debian/Ubuntu: apt-get install libibverbs1 librdmacm1 ibverbs-providers)";

macro_rules! api {
    ($(#[$m:meta])* $name:ident, $file:expr, { $( $f:ident : fn($($a:ty),*) -> $r:ty; )* }) => {
        $(#[$m])*
        pub struct $name {
            $( pub $f: unsafe extern "C" fn($($a),*) -> $r, )*
            _lib: Library,
        }

        impl $name {
            fn open(file: &str) -> Result<$name, String> {
                // SAFETY: loading a system library runs its constructors; libibverbs and
                // librdmacm have no constructors with preconditions on the caller.
                let lib = unsafe { Library::new(file) }
                    .map_err(|e| format!("{file} not found ({e}): {INSTALL_HINT}"))?;
                $(
                    // SAFETY: the type is the symbol's C prototype (see ffi.rs); the pointer stays
                    // valid because `_lib` is stored beside it and never unloaded.
                    let $f = unsafe {
                        *lib.get::<unsafe extern "C" fn($($a),*) -> $r>(concat!(stringify!($f), "\0").as_bytes())
                            .map_err(|e| format!("{file} lacks {} ({e}): rdma-core is too old or broken", stringify!($f)))?
                    };
                )*
                Ok($name { $($f,)* _lib: lib })
            }
        }
    };
}

api!(
    /// The libibverbs entry points used (the fast path goes through `ibv_context.ops` instead).
    Verbs, "libibverbs.so.1", {
    ibv_get_device_list: fn(*mut c_int) -> *mut *mut ibv_device;
    ibv_free_device_list: fn(*mut *mut ibv_device) -> ();
    ibv_alloc_pd: fn(*mut ibv_context) -> *mut ibv_pd;
    ibv_dealloc_pd: fn(*mut ibv_pd) -> c_int;
    ibv_create_comp_channel: fn(*mut ibv_context) -> *mut ibv_comp_channel;
    ibv_destroy_comp_channel: fn(*mut ibv_comp_channel) -> c_int;
    ibv_create_cq: fn(*mut ibv_context, c_int, *mut c_void, *mut ibv_comp_channel, c_int) -> *mut ibv_cq;
    ibv_destroy_cq: fn(*mut ibv_cq) -> c_int;
    ibv_get_cq_event: fn(*mut ibv_comp_channel, *mut *mut ibv_cq, *mut *mut c_void) -> c_int;
    ibv_ack_cq_events: fn(*mut ibv_cq, c_uint) -> ();
    ibv_create_srq: fn(*mut ibv_pd, *mut ibv_srq_init_attr) -> *mut ibv_srq;
    ibv_destroy_srq: fn(*mut ibv_srq) -> c_int;
    ibv_reg_mr: fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr;
    ibv_dereg_mr: fn(*mut ibv_mr) -> c_int;
    ibv_modify_qp: fn(*mut ibv_qp, *mut ibv_qp_attr, c_int) -> c_int;
    ibv_get_async_event: fn(*mut ibv_context, *mut ibv_async_event) -> c_int;
    ibv_ack_async_event: fn(*mut ibv_async_event) -> ();
    ibv_wc_status_str: fn(c_uint) -> *const c_char;
    ibv_event_type_str: fn(c_uint) -> *const c_char;
});

api!(
    /// The librdmacm entry points used.
    Cm, "librdmacm.so.1", {
    rdma_create_event_channel: fn() -> *mut rdma_event_channel;
    rdma_destroy_event_channel: fn(*mut rdma_event_channel) -> ();
    rdma_create_id: fn(*mut rdma_event_channel, *mut *mut rdma_cm_id, *mut c_void, c_int) -> c_int;
    rdma_destroy_id: fn(*mut rdma_cm_id) -> c_int;
    rdma_bind_addr: fn(*mut rdma_cm_id, *mut libc::sockaddr) -> c_int;
    rdma_listen: fn(*mut rdma_cm_id, c_int) -> c_int;
    rdma_get_src_port: fn(*mut rdma_cm_id) -> u16;
    rdma_resolve_addr: fn(*mut rdma_cm_id, *mut libc::sockaddr, *mut libc::sockaddr, c_int) -> c_int;
    rdma_resolve_route: fn(*mut rdma_cm_id, c_int) -> c_int;
    rdma_create_qp: fn(*mut rdma_cm_id, *mut ibv_pd, *mut ibv_qp_init_attr) -> c_int;
    rdma_destroy_qp: fn(*mut rdma_cm_id) -> ();
    rdma_connect: fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int;
    rdma_accept: fn(*mut rdma_cm_id, *mut rdma_conn_param) -> c_int;
    rdma_reject: fn(*mut rdma_cm_id, *const c_void, u8) -> c_int;
    rdma_disconnect: fn(*mut rdma_cm_id) -> c_int;
    rdma_get_cm_event: fn(*mut rdma_event_channel, *mut *mut rdma_cm_event) -> c_int;
    rdma_ack_cm_event: fn(*mut rdma_cm_event) -> c_int;
    rdma_event_str: fn(c_uint) -> *const c_char;
    rdma_set_option: fn(*mut rdma_cm_id, c_int, c_int, *mut c_void, usize) -> c_int;
});

/// Both libraries, loaded together: one libibverbs for verbs and for rdma-cm (librdmacm itself
/// depends on the same libibverbs.so.1, so the dynamic loader shares the one copy).
pub struct Lib {
    pub verbs: Verbs,
    pub cm: Cm,
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

/// The loaded libraries, or why they could not be loaded (the same answer for the process' life).
pub fn lib() -> Result<&'static Lib, String> {
    LIB.get_or_init(|| load_from("libibverbs.so.1", "librdmacm.so.1")).as_ref().map_err(Clone::clone)
}

/// Loads from explicit file names; tests use it to simulate a machine without rdma-core.
pub fn load_from(verbs: &str, cm: &str) -> Result<Lib, String> {
    let verbs = Verbs::open(verbs)?;
    let cm = Cm::open(cm)?;
    Ok(Lib { verbs, cm })
}

/// A C string from the libraries (status and event names) as owned text.
pub fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return "unknown".into();
    }
    // SAFETY: the libraries return pointers to static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The errno left by a failed library call, as text with the number.
pub fn errno_text() -> String {
    let e = std::io::Error::last_os_error();
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_with_what_to_install() {
        let err = load_from("libibverbs-does-not-exist.so.1", "librdmacm.so.1").err().unwrap();
        assert!(err.contains("libibverbs-does-not-exist.so.1 not found"), "{err}");
        assert!(err.contains("apt-get install"), "{err}");
    }
}
