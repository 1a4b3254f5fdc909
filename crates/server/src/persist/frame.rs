//! The checksummed frames of snapshot entries and log records, and the
//! bincode payloads inside.
//!
//! # Snapshot entry frame (and log records in segment format version 1)
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 4    | `len`, big-endian u32: payload length, 1..=[`MAX_PAYLOAD`] |
//! | 4      | 4    | `crc`, big-endian u32: CRC-32 (IEEE, as crc32fast) of the payload |
//! | 8      | len  | payload, bincode 2 (see below)                     |
//!
//! # Log record frame (segment format version 2)
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 4    | `len`, big-endian u32: payload length, 1..=[`MAX_PAYLOAD`] |
//! | 4      | 4    | `crc`, big-endian u32: CRC-32 of the payload       |
//! | 8      | 4    | `header_crc`, big-endian u32: CRC-32 of bytes 0..8 |
//! | 12     | len  | payload, bincode 2: a [`LogRecord`] (its `seq` first) |
//!
//! The header has its own check because a log reader must tell a record cut
//! short by a crash from a damaged one: without it a flipped bit in `len`
//! makes the record seem to run past the end of the file, exactly like a torn
//! write. With it, a reader trusts `len` only after `header_crc` matched.
//! Snapshot entries keep the 8-byte frame: a snapshot is complete before it is
//! renamed into place, so any damage in it is corruption, and the header and
//! trailer counts and CRCs catch a bad length there.
//!
//! # Payload encoding
//!
//! bincode configuration: big-endian, fixed-size integers (no varints). So a
//! `u64` is 8 bytes big-endian, `Option<u64>` is a tag byte (0 none, 1 some)
//! followed by the value when present, a byte string is a u64 length then the
//! bytes, and an enum is a u32 variant index then its fields in order.

use bincode::{Decode, Encode};

use crate::store::Change;

/// Frame header length.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload accepted: a maximum value plus a maximum key and slack.
pub const MAX_PAYLOAD: usize = crate::protocol::HARD_MAX_VALUE_LEN + (1 << 20);

/// The bincode configuration of every payload.
pub fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_big_endian().with_fixed_int_encoding().with_limit::<MAX_PAYLOAD>()
}

/// One log record's payload: the sequence number and the change.
///
/// | field | encoding |
/// |---|---|
/// | `seq` | u64 |
/// | `op`  | [`LogOp`] |
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct LogRecord {
    /// Global sequence number, 1 and up, unique and increasing in file order.
    pub seq: u64,
    /// The change.
    pub op: LogOp,
}

/// A change to one key. Variant indexes: 0 Set, 1 Delete, 2 Expire, 3 Persist.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum LogOp {
    /// 0: key, value (as the client sent it, still sealed), expiry.
    Set {
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
        /// Absolute expiry in Unix ms.
        expires_at_ms: Option<u64>,
    },
    /// 1: key.
    Delete {
        /// Key bytes.
        key: Vec<u8>,
    },
    /// 2: key, new absolute expiry in Unix ms.
    Expire {
        /// Key bytes.
        key: Vec<u8>,
        /// Absolute expiry in Unix ms.
        expires_at_ms: u64,
    },
    /// 3: key.
    Persist {
        /// Key bytes.
        key: Vec<u8>,
    },
}

impl LogOp {
    /// The key the change is to.
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Set { key, .. } | Self::Delete { key } | Self::Expire { key, .. } | Self::Persist { key } => key,
        }
    }

    /// The store's view of this change, borrowed.
    pub fn as_change(&self) -> Change<'_> {
        match self {
            Self::Set { key, value, expires_at_ms } => Change::Set { key, value, expires_at_ms: *expires_at_ms },
            Self::Delete { key } => Change::Delete { key },
            Self::Expire { key, expires_at_ms } => Change::Expire { key, expires_at_ms: *expires_at_ms },
            Self::Persist { key } => Change::Persist { key },
        }
    }
}

/// A store [`Change`] encoded exactly as the [`LogOp`] it decodes to, without
/// copying its bytes: the variant index as a u32 (0 Set, 1 Delete, 2 Expire,
/// 3 Persist), then the fields in declaration order, as bincode's derive
/// writes an enum. `borrowed_and_owned_forms_encode_identically_and_round_trip`
/// holds the two together.
#[derive(Debug, Clone, Copy)]
pub struct LogOpRef<'a>(pub Change<'a>);

impl Encode for LogOpRef<'_> {
    fn encode<E: bincode::enc::Encoder>(&self, e: &mut E) -> Result<(), bincode::error::EncodeError> {
        match self.0 {
            Change::Set { key, value, expires_at_ms } => {
                0u32.encode(e)?;
                key.encode(e)?;
                value.encode(e)?;
                expires_at_ms.encode(e)
            }
            Change::Delete { key } => {
                1u32.encode(e)?;
                key.encode(e)
            }
            Change::Expire { key, expires_at_ms } => {
                2u32.encode(e)?;
                key.encode(e)?;
                expires_at_ms.encode(e)
            }
            Change::Persist { key } => {
                3u32.encode(e)?;
                key.encode(e)
            }
        }
    }
}

/// A snapshot entry's payload (snapshot format 2): key, value, expiry, then
/// the key's version, a varint u64 (the sequence number of its last change).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotEntry {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Absolute expiry in Unix ms.
    pub expires_at_ms: Option<u64>,
    /// The key's version.
    pub version: u64,
}

/// A snapshot entry's payload in snapshot format 1 (before versions): key,
/// value (byte strings as above), expiry (an `Option<u64>`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotEntryV1 {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Absolute expiry in Unix ms.
    pub expires_at_ms: Option<u64>,
}

/// Borrowed form of [`SnapshotEntry`] for encoding.
#[derive(Debug, Clone, Copy, Encode)]
pub struct SnapshotEntryRef<'a> {
    /// Key bytes.
    pub key: &'a [u8],
    /// Value bytes.
    pub value: &'a [u8],
    /// Absolute expiry in Unix ms.
    pub expires_at_ms: Option<u64>,
    /// The key's version.
    pub version: u64,
}

/// A payload that cannot be framed or read back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// bincode could not encode it (over the configured limit, or an I/O
    /// error of the in-memory writer).
    #[error("cannot encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// Encoded, it is longer than a frame may be.
    #[error("payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid value of the expected type.
    #[error("{0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// A valid value, followed by bytes that belong to none.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

/// Appends one frame holding `payload` (encoded in place) to `out`.
///
/// # Errors
/// If encoding fails or the payload exceeds [`MAX_PAYLOAD`]; `out` is restored.
pub fn append_frame<E: Encode>(out: &mut Vec<u8>, payload: &E) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    if let Err(e) = bincode::encode_into_std_write(payload, out, config()) {
        out.truncate(start);
        return Err(e.into());
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    let Some(len32) = u32::try_from(len).ok().filter(|_| len <= MAX_PAYLOAD) else {
        out.truncate(start);
        return Err(CodecError::TooLarge(len));
    };
    let crc = crc32fast::hash(&out[start + FRAME_HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&len32.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Log record frame header length (segment format version 2).
pub const LOG_FRAME_HEADER_LEN: usize = 12;

/// Appends one log record frame (with its header check) holding `payload`.
///
/// # Errors
/// As [`append_frame`]; `out` is restored.
pub fn append_log_frame<E: Encode>(out: &mut Vec<u8>, payload: &E) -> Result<(), CodecError> {
    let start = out.len();
    // Encode as a snapshot frame, then open a 4-byte gap for the header check.
    append_frame(out, payload)?;
    let header_crc = crc32fast::hash(&out[start..start + FRAME_HEADER_LEN]);
    let at = start + FRAME_HEADER_LEN;
    out.splice(at..at, header_crc.to_be_bytes());
    Ok(())
}

/// A frame header whose length is possible: the one parser of the 8-byte
/// header every snapshot entry and format-1 log record starts with, and of
/// the first 8 bytes of a format-2 log record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length, within 1..=[`MAX_PAYLOAD`].
    pub len: usize,
    /// CRC-32 of the payload.
    pub crc: u32,
}

impl FrameHeader {
    /// Parses `len` and `crc`.
    ///
    /// # Errors
    /// A reason if the length is zero or over [`MAX_PAYLOAD`].
    pub fn parse(head: &[u8; FRAME_HEADER_LEN]) -> Result<Self, &'static str> {
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *head;
        let len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        if len == 0 || len > MAX_PAYLOAD {
            return Err("frame length is zero or over the limit");
        }
        Ok(Self { len, crc: u32::from_be_bytes([c0, c1, c2, c3]) })
    }

    /// Whether `payload` is the one this header describes.
    pub fn matches(&self, payload: &[u8]) -> bool {
        payload.len() == self.len && crc32fast::hash(payload) == self.crc
    }
}

/// Checks a version 2 log record header: the CRC of its first 8 bytes, then
/// those bytes as a [`FrameHeader`].
///
/// # Errors
/// A reason if the header check fails or the length is impossible.
pub fn check_log_header(head: &[u8; LOG_FRAME_HEADER_LEN]) -> Result<FrameHeader, &'static str> {
    let (frame, check) = head.split_at(FRAME_HEADER_LEN);
    let frame: &[u8; FRAME_HEADER_LEN] = frame.try_into().map_err(|_| "record header is too short")?;
    if be_u32(check, 0) != Some(crc32fast::hash(frame)) {
        return Err("record header check (CRC of length and payload CRC) failed");
    }
    FrameHeader::parse(frame)
}

/// The big-endian u32 at `at` in a header read in full, `None` past its end.
pub fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// The big-endian u64 at `at` in a header read in full, `None` past its end.
pub fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// What the frame at the front of a byte slice is (the tests' reader of
/// whole in-memory frames; files are read through [`FrameHeader::parse`]).
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRead<'a> {
    /// A whole frame with a matching CRC: its payload and total length.
    Frame(&'a [u8], usize),
    /// The slice ends inside the frame (a torn write if at the end of a file).
    Truncated,
    /// Structurally invalid: the reason.
    Corrupt(&'static str),
}

/// Reads the frame at the front of `bytes` (which must not be empty).
#[cfg(test)]
pub fn read_frame(bytes: &[u8]) -> FrameRead<'_> {
    let Some(head) = bytes.first_chunk::<FRAME_HEADER_LEN>() else {
        return FrameRead::Truncated;
    };
    let header = match FrameHeader::parse(head) {
        Ok(h) => h,
        Err(reason) => return FrameRead::Corrupt(reason),
    };
    let len = header.len;
    let Some(payload) = bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return FrameRead::Truncated;
    };
    if !header.matches(payload) {
        return FrameRead::Corrupt("CRC mismatch");
    }
    FrameRead::Frame(payload, FRAME_HEADER_LEN + len)
}

/// Decodes a payload.
///
/// # Errors
/// A description if the bytes are not a valid `T` or have trailing bytes.
pub fn decode<T: Decode<()>>(payload: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::decode_from_slice(payload, config())?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_and_owned_forms_encode_identically_and_round_trip() {
        let owned =
            LogRecord { seq: 7, op: LogOp::Set { key: b"k".to_vec(), value: b"vv".to_vec(), expires_at_ms: Some(9) } };
        #[derive(Encode)]
        struct R<'a> {
            seq: u64,
            op: LogOpRef<'a>,
        }
        let borrowed = R { seq: 7, op: LogOpRef(owned.op.as_change()) };
        // Every variant, not just the one whose bytes are spelled out below.
        for op in [
            LogOp::Set { key: b"k".to_vec(), value: Vec::new(), expires_at_ms: None },
            LogOp::Delete { key: b"k".to_vec() },
            LogOp::Expire { key: b"k".to_vec(), expires_at_ms: 5 },
            LogOp::Persist { key: b"key".to_vec() },
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            append_frame(&mut a, &LogRecord { seq: 1, op: op.clone() }).unwrap();
            append_frame(&mut b, &R { seq: 1, op: LogOpRef(op.as_change()) }).unwrap();
            assert_eq!(a, b, "{op:?}");
            let FrameRead::Frame(payload, _) = read_frame(&a) else { panic!("frame") };
            assert_eq!(decode::<LogRecord>(payload).unwrap().op, op);
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        append_frame(&mut a, &owned).unwrap();
        append_frame(&mut b, &borrowed).unwrap();
        assert_eq!(a, b);
        // seq u64 BE, variant u32 BE 0, key len u64 + "k", value len u64 + "vv", Some tag + u64.
        let expect: Vec<u8> = [
            &7u64.to_be_bytes()[..],
            &0u32.to_be_bytes(),
            &1u64.to_be_bytes(),
            b"k",
            &2u64.to_be_bytes(),
            b"vv",
            &[1],
            &9u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(&a[FRAME_HEADER_LEN..], &expect[..]);
        let FrameRead::Frame(payload, used) = read_frame(&a) else { panic!("frame") };
        assert_eq!(used, a.len());
        assert_eq!(decode::<LogRecord>(payload).unwrap(), owned);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let mut f = Vec::new();
        append_frame(
            &mut f,
            &SnapshotEntry { key: b"key".to_vec(), value: vec![1, 2, 3], expires_at_ms: None, version: 7 },
        )
        .unwrap();
        for cut in 0..f.len() {
            assert_eq!(read_frame(&f[..cut]), FrameRead::Truncated, "cut {cut}");
        }
        for i in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[i] ^= 1 << bit;
                assert!(!matches!(read_frame(&g), FrameRead::Frame(..)), "flip {i}:{bit} undetected");
            }
        }
        assert!(matches!(read_frame(&[0; 8]), FrameRead::Corrupt(_)));
        assert!(decode::<SnapshotEntry>(&[0xFF; 3]).is_err());
    }

    #[test]
    fn log_frames_check_their_header_so_no_flip_in_it_passes() {
        let record = LogRecord { seq: 3, op: LogOp::Delete { key: b"k".to_vec() } };
        let mut plain = Vec::new();
        append_frame(&mut plain, &record).unwrap();
        let mut f = Vec::new();
        append_log_frame(&mut f, &record).unwrap();
        assert_eq!(f.len(), plain.len() + 4);
        assert_eq!(f[..8], plain[..8], "length and payload CRC as in the plain frame");
        assert_eq!(f[12..], plain[8..], "then the same payload");
        let head: [u8; LOG_FRAME_HEADER_LEN] = f[..12].try_into().unwrap();
        let checked = check_log_header(&head).unwrap();
        assert_eq!(checked.len, f.len() - 12);
        assert_eq!(checked.crc, crc32fast::hash(&f[12..]));
        for i in 0..LOG_FRAME_HEADER_LEN {
            for bit in 0..8 {
                let mut h = head;
                h[i] ^= 1 << bit;
                assert!(check_log_header(&h).is_err(), "flip {i}:{bit} in the header undetected");
            }
        }
        assert!(check_log_header(&[0; 12]).is_err(), "zeros are not a header");
    }

    proptest::proptest! {
        #![proptest_config(cryptomem_testkit::cases())]

        /// Arbitrary and damaged payloads decode to something or fail; a
        /// length near `u64::MAX` fails on the limit instead of allocating.
        #[test]
        fn payloads_decode_or_fail_cleanly(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in proptest::prelude::any::<usize>(),
            x in 1u8..,
        ) {
            let _ = decode::<LogRecord>(&data);
            let _ = decode::<SnapshotEntry>(&data);
            let mut huge = vec![0u8; 8];
            huge.extend_from_slice(&[0, 0, 0, 0]);
            huge.extend_from_slice(&[0x7F; 8]);
            huge.extend_from_slice(&data);
            proptest::prop_assert!(decode::<LogRecord>(&huge).is_err());
            let record = LogRecord { seq: 3, op: LogOp::Set { key: b"key".to_vec(), value: data.clone(), expires_at_ms: Some(5) } };
            let mut valid = bincode::encode_to_vec(&record, config()).unwrap();
            let n = valid.len();
            valid[at % n] ^= x;
            let _ = decode::<LogRecord>(&valid);
            valid.truncate(at % n);
            proptest::prop_assert!(decode::<LogRecord>(&valid).is_err(), "a cut payload decoded");
        }
    }
}
