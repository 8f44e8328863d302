//! The private data both sides put in the rdma-cm connect request and reply: it proves the peer
//! is an rdma-graceful endpoint and tells each side how large the other's receive buffers are.
//! 16 bytes: it must fit the 20 bytes rdma-cm leaves for a connect request over IP.
//!
//! ```text
//!  0      4        5          8                 12                16
//!  | RDGR | version | reserved | max_payload (BE) | recv_depth (BE) |
//! ```

use rdma_graceful_core::{ErrorCode, TransportError};

const MAGIC: &[u8; 4] = b"RDGR";
const VERSION: u8 = 1;
pub const LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub max_payload: u32,
    pub recv_depth: u32,
}

impl Hello {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[8..12].copy_from_slice(&self.max_payload.to_be_bytes());
        b[12..16].copy_from_slice(&self.recv_depth.to_be_bytes());
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
        let recv_depth = u32::from_be_bytes(b[12..16].try_into().unwrap());
        if max_payload == 0 || recv_depth == 0 {
            return Err(TransportError::new(ErrorCode::MalformedFrame, "peer announced zero receive buffers"));
        }
        Ok(Hello { max_payload, recv_depth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_rdma_cm_padding() {
        let h = Hello { max_payload: 4096, recv_depth: 64 };
        let mut b = h.encode().to_vec();
        b.extend_from_slice(&[0; 4]);
        assert_eq!(Hello::decode(&b).unwrap(), h);
    }

    #[test]
    fn strangers_and_other_versions_are_refused() {
        assert_eq!(Hello::decode(b"GET / HTTP/1.1\r\n").unwrap_err().code, ErrorCode::MalformedFrame);
        let mut b = Hello { max_payload: 1, recv_depth: 1 }.encode();
        b[4] = 9;
        assert!(Hello::decode(&b).unwrap_err().message.contains("version 9"));
        assert!(Hello::decode(&[]).is_err());
    }
}
