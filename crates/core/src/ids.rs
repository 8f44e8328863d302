//! One id space for connections and listeners of every transport in the process, so an id never
//! names two things and a stale id from a closed connection is never reused within a process's life
//! (u32 wraps after four billion handles; ids skip 0 so JS can treat 0 as "none").

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(1);

pub fn next_id() -> u32 {
    loop {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}
