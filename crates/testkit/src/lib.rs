//! Test helpers more than one cryptomem package needs; a dev-dependency
//! only, never part of a build users run.
//!
//! - [`cases`]: the property-test configuration every `fuzz_decoders` test
//!   uses: 2,000 cases, or `PROPTEST_CASES` for the long runs.
//! - [`mutations`] and [`mutate`]: the damage those tests do to valid
//!   inputs (flipped, overwritten, cut and inserted bytes).
//! - [`log_record_offsets`]: where the records of a log segment start, for
//!   tests that damage a chosen record.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proptest::prelude::*;

/// 2,000 cases per property, or `PROPTEST_CASES`.
pub fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// One way a valid input gets damaged. Positions are taken modulo the
/// input's length at the time, so any `usize` names a byte.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// XOR the byte with a non-zero mask.
    Flip(usize, u8),
    /// Replace the byte (0, 0xFF or any).
    Overwrite(usize, u8),
    /// Keep only the bytes before the position.
    Cut(usize),
    /// Insert 1 to 7 bytes at the position.
    Insert(usize, Vec<u8>),
}

/// One to three mutations.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, x)| Mutation::Flip(at, x)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        (any::<usize>(), prop_oneof![Just(0u8), Just(0xFF), any::<u8>()])
            .prop_map(|(at, b)| Mutation::Overwrite(at, b)),
    ];
    proptest::collection::vec(one, 1..4)
}

/// `bytes` with `mutations` applied in order.
pub fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let n = bytes.len().max(1);
        match m {
            Mutation::Flip(at, x) if !bytes.is_empty() => bytes[at % n] ^= x,
            Mutation::Overwrite(at, b) if !bytes.is_empty() => bytes[at % n] = *b,
            Mutation::Cut(at) => bytes.truncate(at % n),
            Mutation::Insert(at, b) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            _ => {}
        }
    }
    bytes
}

/// Start offsets of the records of an undamaged version 2 log segment: a
/// 16-byte header, then records of a 12-byte frame header (big-endian
/// `u32` payload length first) and the payload (`persist::log` has the
/// format).
///
/// # Panics
/// On a damaged segment (a record running past the end).
pub fn log_record_offsets(segment: &[u8]) -> Vec<u64> {
    let mut offsets = Vec::new();
    let mut at = 16;
    while at < segment.len() {
        offsets.push(at as u64);
        let len = u32::from_be_bytes(segment[at..at + 4].try_into().expect("a whole frame header")) as usize;
        at += 12 + len;
    }
    assert_eq!(at, segment.len(), "the last record runs past the end");
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_apply_in_order_and_wrap_positions() {
        let m = [Mutation::Flip(1, 0xFF), Mutation::Insert(7, vec![9]), Mutation::Cut(3)];
        assert_eq!(mutate(vec![1, 2, 3], &m[..1]), vec![1, 0xFD, 3]);
        // Insert at 7 % 4 = 3 (the end), then cut at 3 % 4.
        assert_eq!(mutate(vec![1, 2, 3], &m[1..]), vec![1, 2, 3]);
        assert_eq!(mutate(Vec::new(), &m[..2]), vec![9]);
    }

    #[test]
    fn record_offsets_walk_the_frames() {
        let mut segment = vec![0u8; 16];
        for len in [3u32, 0] {
            segment.extend_from_slice(&len.to_be_bytes());
            segment.extend_from_slice(&[0; 8]);
            segment.extend(std::iter::repeat_n(7, len as usize));
        }
        assert_eq!(log_record_offsets(&segment), vec![16, 31]);
    }
}
