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
    /// Memory windows (zero-copy transfers, `rndv`).
    RdmaMemoryWindows,
    RdmaQueuePairs,
    RdmaCmEventChannels,
    RdmaCmIds,
    RdmaSharedReceiveQueues,
    /// Bytes of memory registered with RDMA devices (pinned), not a count of objects.
    RdmaRegisteredBytes,
}

pub const ALL: [Kind; 14] = [
    Kind::TcpListeners,
    Kind::TcpConnections,
    Kind::TcpSendBuffers,
    Kind::RdmaDevices,
    Kind::RdmaProtectionDomains,
    Kind::RdmaCompletionChannels,
    Kind::RdmaCompletionQueues,
    Kind::RdmaMemoryRegions,
    Kind::RdmaMemoryWindows,
    Kind::RdmaQueuePairs,
    Kind::RdmaCmEventChannels,
    Kind::RdmaCmIds,
    Kind::RdmaSharedReceiveQueues,
    Kind::RdmaRegisteredBytes,
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
            Kind::RdmaMemoryWindows => "rdmaMemoryWindows",
            Kind::RdmaQueuePairs => "rdmaQueuePairs",
            Kind::RdmaCmEventChannels => "rdmaCmEventChannels",
            Kind::RdmaCmIds => "rdmaCmIds",
            Kind::RdmaSharedReceiveQueues => "rdmaSharedReceiveQueues",
            Kind::RdmaRegisteredBytes => "rdmaRegisteredBytes",
        }
    }

    fn slot(self) -> &'static AtomicI64 {
        &COUNTS[self as usize]
    }

    pub fn get(self) -> i64 {
        self.slot().load(Ordering::SeqCst)
    }
}

/// Counts one live resource of `kind` (or an amount of it, e.g. bytes) for as long as it exists.
#[derive(Debug)]
pub struct Live(Kind, i64);

impl Live {
    pub fn new(kind: Kind) -> Live {
        Live::amount(kind, 1)
    }

    pub fn amount(kind: Kind, n: i64) -> Live {
        kind.slot().fetch_add(n, Ordering::SeqCst);
        Live(kind, n)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.slot().fetch_sub(self.1, Ordering::SeqCst);
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
