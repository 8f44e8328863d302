//! Live counts of every resource kind the core owns. A `Live` guard counts up when created and down
//! when dropped, so a count can only be non-zero while the owning object exists: tests check all of
//! them read zero after close, in-process.

use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TcpListeners,
    TcpConnections,
    /// Frames queued for sending and not yet written to the socket.
    TcpSendBuffers,
    RdmaDevices,
    RdmaProtectionDomains,
    RdmaCompletionChannels,
    RdmaCompletionQueues,
    RdmaMemoryRegions,
    RdmaQueuePairs,
    RdmaCmEventChannels,
    RdmaCmIds,
}

pub const ALL: [Kind; 11] = [
    Kind::TcpListeners,
    Kind::TcpConnections,
    Kind::TcpSendBuffers,
    Kind::RdmaDevices,
    Kind::RdmaProtectionDomains,
    Kind::RdmaCompletionChannels,
    Kind::RdmaCompletionQueues,
    Kind::RdmaMemoryRegions,
    Kind::RdmaQueuePairs,
    Kind::RdmaCmEventChannels,
    Kind::RdmaCmIds,
];

static COUNTS: [AtomicI64; ALL.len()] = [const { AtomicI64::new(0) }; ALL.len()];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::TcpListeners => "tcpListeners",
            Kind::TcpConnections => "tcpConnections",
            Kind::TcpSendBuffers => "tcpSendBuffers",
            Kind::RdmaDevices => "rdmaDevices",
            Kind::RdmaProtectionDomains => "rdmaProtectionDomains",
            Kind::RdmaCompletionChannels => "rdmaCompletionChannels",
            Kind::RdmaCompletionQueues => "rdmaCompletionQueues",
            Kind::RdmaMemoryRegions => "rdmaMemoryRegions",
            Kind::RdmaQueuePairs => "rdmaQueuePairs",
            Kind::RdmaCmEventChannels => "rdmaCmEventChannels",
            Kind::RdmaCmIds => "rdmaCmIds",
        }
    }

    fn slot(self) -> &'static AtomicI64 {
        &COUNTS[self as usize]
    }

    pub fn get(self) -> i64 {
        self.slot().load(Ordering::SeqCst)
    }
}

/// Counts one live resource of `kind` for as long as it exists.
#[derive(Debug)]
pub struct Live(Kind);

impl Live {
    pub fn new(kind: Kind) -> Live {
        kind.slot().fetch_add(1, Ordering::SeqCst);
        Live(kind)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.slot().fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every kind with its current count, in a fixed order.
pub fn snapshot() -> Vec<(&'static str, i64)> {
    ALL.iter().map(|k| (k.name(), k.get())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_guard_counts_up_and_down() {
        // RdmaDevices is never touched by the tcp tests running in parallel.
        let before = Kind::RdmaDevices.get();
        let a = Live::new(Kind::RdmaDevices);
        let b = Live::new(Kind::RdmaDevices);
        assert_eq!(Kind::RdmaDevices.get(), before + 2);
        drop(a);
        assert_eq!(Kind::RdmaDevices.get(), before + 1);
        drop(b);
        assert_eq!(Kind::RdmaDevices.get(), before);
    }

    #[test]
    fn every_kind_has_a_distinct_name() {
        let names: std::collections::HashSet<_> = ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ALL.len());
        for (i, k) in ALL.iter().enumerate() {
            assert_eq!(*k as usize, i, "ALL must list kinds in declaration order");
        }
    }
}
