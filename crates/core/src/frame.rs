//! The frame: the unit every transport carries. A frame is a `kind` (what the lifecycle protocol
//! says it is: data, READY, DISCONNECT_REQ ...), a piggy-backed `credits` grant, and a payload.
//! The core never looks inside the payload and never tells kinds apart beyond their range: meaning
//! belongs to the TypeScript protocol. Because the kind travels in a header (tcp) or in the
//! immediate data (rdma), user bytes can never be mistaken for a control message.
//!
//! tcp wire format, after an 8-byte preamble each side sends once (`PREAMBLE`):
//!
//! ```text
//!  0        1        2                 4                                 8
//!  +--------+--------+--------+--------+--------+--------+--------+--------+----------
//!  |  kind  | flags  |    credits (BE) |        payload length (BE)        | payload ...
//!  +--------+--------+--------+--------+--------+--------+--------+--------+----------
//! ```
//!
//! rdma carries the first four bytes as the 32-bit immediate data of a send, and the payload as the
//! message itself (`Frame::imm` / `Frame::from_imm`).

use crate::error::{ErrorCode, TransportError};

/// Sent once by each side before any frame; a peer that sends anything else is not speaking this
/// protocol (e.g. a stray HTTP client or random bytes) and is refused at once.
pub const PREAMBLE: [u8; 8] = *b"RDMAGRC\x01";
pub const HEADER_LEN: usize = 8;
/// Kinds 0..=MAX_KIND are valid on the wire; the protocol assigns their meaning.
pub const MAX_KIND: u8 = 15;
/// Default upper bound of one frame's payload: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;
/// No connection may raise its bound above this: 64 MiB.
pub const ABSOLUTE_MAX_PAYLOAD: u32 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub credits: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: u8, credits: u16, payload: Vec<u8>) -> Frame {
        Frame { kind, credits, payload }
    }

    /// Checks a frame the application is about to send against the connection's bound.
    pub fn validate(&self, max_payload: u32) -> Result<(), TransportError> {
        if self.kind > MAX_KIND {
            return Err(TransportError::new(
                ErrorCode::InvalidArgument,
                format!("frame kind {} is out of range 0..={MAX_KIND}", self.kind),
            ));
        }
        if self.payload.len() as u64 > max_payload as u64 {
            return Err(too_large(self.payload.len() as u64, max_payload));
        }
        Ok(())
    }

    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&self.imm().to_be_bytes());
        h[4..].copy_from_slice(&(self.payload.len() as u32).to_be_bytes());
        h
    }

    /// kind, flags (zero) and credits as one 32-bit value: the rdma immediate data.
    pub fn imm(&self) -> u32 {
        ((self.kind as u32) << 24) | (self.credits as u32)
    }

    /// Rebuilds a frame from rdma immediate data and the received message bytes.
    pub fn from_imm(imm: u32, payload: Vec<u8>) -> Result<Frame, TransportError> {
        let (kind, credits) = parse_imm(imm)?;
        Ok(Frame { kind, credits, payload })
    }
}

fn parse_imm(imm: u32) -> Result<(u8, u16), TransportError> {
    let kind = (imm >> 24) as u8;
    let flags = (imm >> 16) as u8;
    if kind > MAX_KIND {
        return Err(TransportError::new(
            ErrorCode::MalformedFrame,
            format!("peer sent frame kind {kind}, beyond the highest known kind {MAX_KIND}"),
        ));
    }
    if flags != 0 {
        return Err(TransportError::new(
            ErrorCode::MalformedFrame,
            format!("peer set reserved flag bits {flags:#04x} in a frame header"),
        ));
    }
    Ok((kind, imm as u16))
}

fn too_large(len: u64, max: u32) -> TransportError {
    TransportError::new(
        ErrorCode::FrameTooLarge,
        format!("frame payload of {len} bytes exceeds the maximum of {max} bytes"),
    )
}

/// Checks the peer's preamble. `bytes` holds whatever has arrived so far (at most 8 bytes are
/// looked at): Ok(true) when complete and right, Ok(false) when a correct prefix is still short.
pub fn check_preamble(bytes: &[u8]) -> Result<bool, TransportError> {
    let n = bytes.len().min(PREAMBLE.len());
    if bytes[..n] != PREAMBLE[..n] {
        let what = if n >= 7 && bytes[..7] == PREAMBLE[..7] {
            format!("peer speaks protocol version {} (this side speaks {})", bytes[7], PREAMBLE[7])
        } else {
            "peer did not send the rdma-graceful preamble: not an rdma-graceful endpoint".to_string()
        };
        return Err(TransportError::new(ErrorCode::MalformedFrame, what));
    }
    Ok(n == PREAMBLE.len())
}

/// A streaming decoder: feed it the bytes of a tcp connection in any chunking; it yields whole
/// frames and rejects a bad header as soon as the header is complete, before any payload is
/// buffered, so an oversized length never makes us allocate.
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start: frames are consumed by moving this, and the consumed
    /// prefix is dropped once per `push` (not once per frame, which moved the rest of a 64 KiB read
    /// for every small frame in it).
    start: usize,
}

impl Decoder {
    pub fn new(max_payload: u32) -> Decoder {
        Decoder { max_payload, buf: Vec::new(), start: 0 }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, None when more bytes are needed, or the error that ends the stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, TransportError> {
        let rest = &self.buf[self.start..];
        if rest.len() < HEADER_LEN {
            return Ok(None);
        }
        let imm = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let len = u32::from_be_bytes(rest[4..8].try_into().unwrap());
        let (kind, credits) = parse_imm(imm)?;
        if len > self.max_payload {
            return Err(too_large(len as u64, self.max_payload));
        }
        let total = HEADER_LEN + len as usize;
        if rest.len() < total {
            return Ok(None);
        }
        let payload = rest[HEADER_LEN..total].to_vec();
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(Frame { kind, credits, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(f: &Frame) -> Vec<u8> {
        let mut v = f.header().to_vec();
        v.extend_from_slice(&f.payload);
        v
    }

    #[test]
    fn header_layout_is_kind_flags_credits_length() {
        let f = Frame::new(3, 0x0102, vec![9; 5]);
        assert_eq!(f.header(), [3, 0, 1, 2, 0, 0, 0, 5]);
        assert_eq!(f.imm(), 0x0300_0102);
    }

    #[test]
    fn oversized_length_is_rejected_before_the_payload_arrives() {
        let mut d = Decoder::new(16);
        d.push(&[0, 0, 0, 0, 0, 0, 0, 17]);
        let e = d.next_frame().unwrap_err();
        assert_eq!(e.code, ErrorCode::FrameTooLarge);
        assert!(e.message.contains("17 bytes"), "{}", e.message);
    }

    #[test]
    fn reserved_flags_and_unknown_kinds_are_malformed() {
        let mut d = Decoder::new(16);
        d.push(&[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame().unwrap_err().code, ErrorCode::MalformedFrame);
        let mut d = Decoder::new(16);
        d.push(&[16, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.next_frame().unwrap_err().code, ErrorCode::MalformedFrame);
    }

    #[test]
    fn preamble_checks_prefixes_and_versions() {
        assert_eq!(check_preamble(b"RDMA").unwrap(), false);
        assert_eq!(check_preamble(&PREAMBLE).unwrap(), true);
        let e = check_preamble(b"GET / HTTP/1.1").unwrap_err();
        assert!(e.message.contains("not an rdma-graceful endpoint"));
        let e = check_preamble(b"RDMAGRC\x02").unwrap_err();
        assert!(e.message.contains("version 2"), "{}", e.message);
    }

    #[test]
    fn validate_rejects_big_payloads_and_bad_kinds() {
        assert_eq!(Frame::new(0, 0, vec![0; 9]).validate(8).unwrap_err().code, ErrorCode::FrameTooLarge);
        assert_eq!(Frame::new(16, 0, vec![]).validate(8).unwrap_err().code, ErrorCode::InvalidArgument);
        assert!(Frame::new(15, 7, vec![0; 8]).validate(8).is_ok());
    }

    proptest! {
        // Any sequence of valid frames, cut into any chunks, decodes to the same sequence.
        #[test]
        fn round_trip_in_any_chunking(
            frames in prop::collection::vec((0u8..=MAX_KIND, any::<u16>(), prop::collection::vec(any::<u8>(), 0..300)), 0..20),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let frames: Vec<Frame> = frames.into_iter().map(|(k, c, p)| Frame::new(k, c, p)).collect();
            let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
            let mut d = Decoder::new(300);
            let mut out = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < bytes.len() {
                let n = cuts[i % cuts.len()].min(bytes.len() - at);
                d.push(&bytes[at..at + n]);
                at += n;
                i += 1;
                while let Some(f) = d.next_frame().unwrap() { out.push(f); }
            }
            prop_assert_eq!(out, frames);
            prop_assert_eq!(d.pending(), 0);
        }

        // Garbage never panics: it yields frames, needs more bytes, or a typed error.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut d = Decoder::new(1024);
            d.push(&bytes);
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => prop_assert!(f.payload.len() <= 1024 && f.kind <= MAX_KIND),
                    Ok(None) => break,
                    Err(e) => { prop_assert!(matches!(e.code, ErrorCode::FrameTooLarge | ErrorCode::MalformedFrame)); break; }
                }
            }
        }
    }
}
