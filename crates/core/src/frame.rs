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
        validate_outgoing(self.kind, self.payload.len(), max_payload)
    }

    pub fn header(&self) -> [u8; HEADER_LEN] {
        encode_header(self.kind, self.credits, self.payload.len() as u32)
    }

    /// kind, flags (zero) and credits as one 32-bit value: the rdma immediate data.
    pub fn imm(&self) -> u32 {
        imm_of(self.kind, self.credits)
    }

    /// Rebuilds a frame from rdma immediate data and the received message bytes.
    pub fn from_imm(imm: u32, payload: Vec<u8>) -> Result<Frame, TransportError> {
        let (kind, credits) = parse_imm(imm)?;
        Ok(Frame { kind, credits, payload })
    }
}

/// kind, flags (zero) and credits as one 32-bit value: the rdma immediate data.
pub fn imm_of(kind: u8, credits: u16) -> u32 {
    ((kind as u32) << 24) | (credits as u32)
}

/// Checks a frame about to be sent: kind in range, payload within the connection's bound.
pub fn validate_outgoing(kind: u8, len: usize, max_payload: u32) -> Result<(), TransportError> {
    if kind > MAX_KIND {
        return Err(TransportError::new(
            ErrorCode::InvalidArgument,
            format!("frame kind {kind} is out of range 0..={MAX_KIND}"),
        ));
    }
    if len as u64 > max_payload as u64 {
        return Err(too_large(len as u64, max_payload));
    }
    Ok(())
}

/// Kind and credits from a 32-bit header word (the rdma immediate data), checked.
pub fn parse_imm(imm: u32) -> Result<(u8, u16), TransportError> {
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

/// Checks one 8-byte header: kind and reserved bits, and the length against `max_payload`, so an
/// oversized length is refused before any of its payload is buffered.
pub fn parse_header(h: &[u8], max_payload: u32) -> Result<(u8, u16, u32), TransportError> {
    let imm = u32::from_be_bytes(h[..4].try_into().unwrap());
    let len = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let (kind, credits) = parse_imm(imm)?;
    if len > max_payload {
        return Err(too_large(len as u64, max_payload));
    }
    Ok((kind, credits, len))
}

/// Encodes one frame's header for a payload of `len` bytes.
pub fn encode_header(kind: u8, credits: u16, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = kind;
    h[2..4].copy_from_slice(&credits.to_be_bytes());
    h[4..].copy_from_slice(&len.to_be_bytes());
    h
}

/// A streaming decoder: feed it the bytes of a tcp connection in any chunking; it passes on whole,
/// checked frames (header and payload, as on the wire) and keeps only an incomplete tail. When
/// nothing is pending, frames go straight from the read buffer to the output: one copy.
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    tail: Vec<u8>,
}

impl Decoder {
    pub fn new(max_payload: u32) -> Decoder {
        Decoder { max_payload, tail: Vec::new() }
    }

    /// Bytes buffered and not yet passed on as a frame.
    pub fn pending(&self) -> usize {
        self.tail.len()
    }

    /// Appends every frame completed by `bytes` to `out` (wire format) and returns how many. An
    /// error ends the stream; frames before the bad one are already in `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<usize, TransportError> {
        if self.tail.is_empty() {
            let (n, used) = self.whole_frames(bytes, out)?;
            self.tail.extend_from_slice(&bytes[used..]);
            return Ok(n);
        }
        let mut tail = std::mem::take(&mut self.tail);
        tail.extend_from_slice(bytes);
        let result = self.whole_frames(&tail, out);
        if let Ok((_, used)) = result {
            tail.drain(..used);
            self.tail = tail;
        }
        result.map(|(n, _)| n)
    }

    fn whole_frames(&self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(usize, usize), TransportError> {
        let (mut at, mut n) = (0, 0);
        while bytes.len() - at >= HEADER_LEN {
            let (_, _, len) = parse_header(&bytes[at..at + HEADER_LEN], self.max_payload)?;
            let end = at + HEADER_LEN + len as usize;
            if end > bytes.len() {
                break;
            }
            out.extend_from_slice(&bytes[at..end]);
            at = end;
            n += 1;
        }
        Ok((n, at))
    }
}

/// Splits bytes of whole frames (as `Decoder::feed` writes them) back into frames.
pub fn split(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= HEADER_LEN {
        let (kind, credits, len) = parse_header(bytes, u32::MAX).expect("split: bytes of checked frames");
        let end = HEADER_LEN + len as usize;
        frames.push(Frame::new(kind, credits, bytes[HEADER_LEN..end].to_vec()));
        bytes = &bytes[end..];
    }
    frames
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
        let e = d.feed(&[0, 0, 0, 0, 0, 0, 0, 17], &mut Vec::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::FrameTooLarge);
        assert!(e.message.contains("17 bytes"), "{}", e.message);
    }

    #[test]
    fn reserved_flags_and_unknown_kinds_are_malformed() {
        let mut d = Decoder::new(16);
        assert_eq!(d.feed(&[0, 1, 0, 0, 0, 0, 0, 0], &mut Vec::new()).unwrap_err().code, ErrorCode::MalformedFrame);
        let mut d = Decoder::new(16);
        assert_eq!(d.feed(&[16, 0, 0, 0, 0, 0, 0, 0], &mut Vec::new()).unwrap_err().code, ErrorCode::MalformedFrame);
    }

    #[test]
    fn preamble_checks_prefixes_and_versions() {
        assert!(!check_preamble(b"RDMA").unwrap());
        assert!(check_preamble(&PREAMBLE).unwrap());
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
            let mut count = 0;
            let mut at = 0;
            let mut i = 0;
            while at < bytes.len() {
                let n = cuts[i % cuts.len()].min(bytes.len() - at);
                count += d.feed(&bytes[at..at + n], &mut out).unwrap();
                at += n;
                i += 1;
            }
            prop_assert_eq!(count, frames.len());
            prop_assert_eq!(&out, &bytes);
            prop_assert_eq!(split(&out), frames);
            prop_assert_eq!(d.pending(), 0);
        }

        // Garbage never panics: it yields frames, needs more bytes, or a typed error.
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut d = Decoder::new(1024);
            let mut out = Vec::new();
            match d.feed(&bytes, &mut out) {
                Ok(_) => {}
                Err(e) => prop_assert!(matches!(e.code, ErrorCode::FrameTooLarge | ErrorCode::MalformedFrame)),
            }
            for f in split(&out) {
                prop_assert!(f.payload.len() <= 1024 && f.kind <= MAX_KIND);
            }
        }
    }
}
