//! The private data both sides put in the rdma-cm connect request and reply: it proves the peer
//! is an rdma-graceful endpoint, and tells the other side the largest frame it takes, how many
//! of its buffers it sets aside for the other (the first link credits, `link`) and how large they
//! are (the fragment size). 16 bytes: it must fit the 20 bytes rdma-cm leaves for a connect
//! request over IP. Version 1 (per-connection buffers, no fragments) is refused with its number.
//!
//! ```text
//!  0      4         5       6          8                 12              14                16
//!  | RDGR | version | flags | reserved | max_payload (BE) | credits (BE) | buffer KiB (BE) |
//! ```
//!
//! Flags: bit 0, `RENDEZVOUS`: this side takes zero-copy descriptors and serves READs of its own
//! (`rndv`); used only when both sides set it. Earlier versions sent zero there and ignore it.

use rdma_graceful_core::{ErrorCode, TransportError};

const MAGIC: &[u8; 4] = b"RDGR";
const VERSION: u8 = 2;
pub const LEN: usize = 16;
const RENDEZVOUS: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub max_payload: u32,
    /// Buffers set aside for the peer: the link credits it starts with.
    pub credits: u16,
    /// The size of each of those buffers, in bytes (a multiple of 1 KiB).
    pub buffer_size: u32,
    /// Offers zero-copy transfers (`rndv`).
    pub rendezvous: bool,
}

impl Hello {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = if self.rendezvous { RENDEZVOUS } else { 0 };
        b[8..12].copy_from_slice(&self.max_payload.to_be_bytes());
        b[12..14].copy_from_slice(&self.credits.to_be_bytes());
        b[14..16].copy_from_slice(&((self.buffer_size / 1024) as u16).to_be_bytes());
        b
    }

    /// rdma-cm pads private data with zeros, so longer input is fine.
    pub fn decode(b: &[u8]) -> Result<Hello, TransportError> {
        if b.len() < LEN || &b[..4] != MAGIC {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                "peer did not send the rdma-graceful connection data: not an rdma-graceful endpoint",
            ));
        }
        if b[4] != VERSION {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer speaks rdma handshake version {} (this side speaks {VERSION})", b[4]),
            ));
        }
        let max_payload = u32::from_be_bytes(b[8..12].try_into().unwrap());
        let credits = u16::from_be_bytes(b[12..14].try_into().unwrap());
        let buffer_size = u16::from_be_bytes(b[14..16].try_into().unwrap()) as u32 * 1024;
        // Two credits at least: one is always kept for a credit update (`link`).
        if max_payload == 0 || credits < 2 || buffer_size == 0 {
            return Err(TransportError::new(
                ErrorCode::MalformedFrame,
                format!("peer announced unusable receive buffers ({credits} of {buffer_size} bytes)"),
            ));
        }
        // Unknown flags of a newer peer are ignored: each is a feature both sides must offer.
        Ok(Hello { max_payload, credits, buffer_size, rendezvous: b[5] & RENDEZVOUS != 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_rdma_cm_padding() {
        let h = Hello { max_payload: 4096, credits: 4, buffer_size: 8192, rendezvous: true };
        let mut b = h.encode().to_vec();
        b.extend_from_slice(&[0; 4]);
        assert_eq!(Hello::decode(&b).unwrap(), h);
    }

    #[test]
    fn strangers_and_other_versions_are_refused() {
        assert_eq!(Hello::decode(b"GET / HTTP/1.1\r\n").unwrap_err().code, ErrorCode::MalformedFrame);
        let mut b = Hello { max_payload: 1, credits: 2, buffer_size: 1024, rendezvous: false }.encode();
        b[4] = 1;
        assert!(Hello::decode(&b).unwrap_err().message.contains("version 1"));
        let b = Hello { max_payload: 1, credits: 1, buffer_size: 1024, rendezvous: false }.encode();
        assert!(Hello::decode(&b).unwrap_err().message.contains("unusable"));
        assert!(Hello::decode(&[]).is_err());
    }

    #[test]
    fn an_earlier_peer_offers_no_rendezvous_and_unknown_flags_are_ignored() {
        let mut b = Hello { max_payload: 1, credits: 2, buffer_size: 1024, rendezvous: true }.encode();
        b[5] = 0; // what version 2 without the flag always sent
        assert!(!Hello::decode(&b).unwrap().rendezvous);
        b[5] = 0xfe;
        assert!(!Hello::decode(&b).unwrap().rendezvous);
    }
}
