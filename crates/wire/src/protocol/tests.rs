use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn key() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 1..40).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
}

fn ttl() -> impl Strategy<Value = Option<Duration>> {
    proptest::option::of((1u64..1_000_000_000_000).prop_map(Duration::from_nanos))
}

fn request() -> impl Strategy<Value = Request> {
    let cond = prop_oneof![Just(SetCondition::Always), Just(SetCondition::IfAbsent), Just(SetCondition::IfPresent)];
    prop_oneof![
        value().prop_map(|message| Request::Ping { message }),
        proptest::collection::vec(any::<u8>(), 1..100).prop_map(|t| Request::Auth { token: Bytes::from(t) }),
        key().prop_map(|key| Request::Get { key }),
        (key(), value(), ttl(), cond).prop_map(|(key, value, ttl, condition)| Request::Set {
            key,
            value,
            ttl,
            condition
        }),
        key().prop_map(|key| Request::Delete { key }),
        key().prop_map(|key| Request::Exists { key }),
        (key(), (1u64..u64::from(u32::MAX)).prop_map(Duration::from_nanos))
            .prop_map(|(key, ttl)| Request::Expire { key, ttl }),
        key().prop_map(|key| Request::Persist { key }),
        key().prop_map(|key| Request::Ttl { key }),
        proptest::collection::vec(key(), 1..20).prop_map(|keys| Request::MGet { keys }),
        (proptest::collection::vec((key(), value()), 1..20), ttl())
            .prop_map(|(pairs, ttl)| Request::MSet { pairs, ttl }),
        Just(Request::DbSize),
        Just(Request::Info),
        Just(Request::Save),
        Just(Request::TokenList),
        "[0-9a-f]{12}".prop_map(|id| Request::TokenRevoke { id }),
        (
            prop_oneof![Just(crate::Role::Read), Just(crate::Role::Write), Just(crate::Role::Admin)],
            proptest::collection::vec("[a-z:]{1,8}", 0..4),
            "[a-z ]{0,20}"
        )
            .prop_map(|(role, prefixes, label)| Request::TokenAdd { role, prefixes, label }),
        (any::<u64>(), 1u32..10_000, proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(cursor, count, p)| Request::Scan { cursor, count, prefix: Bytes::from(p) }),
        key().prop_map(|key| Request::GetVersioned { key }),
        (key(), value(), ttl(), any::<u64>()).prop_map(|(key, value, ttl, version)| Request::SetIfVersion {
            key,
            value,
            ttl,
            version
        }),
        (key(), any::<u64>()).prop_map(|(key, version)| Request::DeleteIfVersion { key, version }),
    ]
}

#[test]
fn a_scan_page_round_trips_and_bad_pages_are_malformed() {
    let keys = [&b"a"[..], b"", b"\xffkey"];
    let page = Response::scan(42, &keys);
    let (cursor, got) = page.parse_scan().unwrap();
    assert_eq!(cursor, 42);
    assert_eq!(got, keys.iter().map(|k| Bytes::copy_from_slice(k)).collect::<Vec<_>>());
    for cut in 0..page.body.len() {
        let short = Response::ok(page.body.slice(..cut));
        assert!(short.parse_scan().is_err(), "{cut} bytes");
    }
    let mut long = page.body.to_vec();
    long.push(0);
    assert!(Response::ok(long).parse_scan().is_err());
}

proptest! {
    #[test]
    fn requests_round_trip(req in request()) {
        let mut buf = Vec::new();
        encode_request(&req, &mut buf).unwrap();
        let mut bytes = BytesMut::from(&buf[..]);
        let decoded = decode_request(&mut bytes, &Limits::default()).unwrap();
        prop_assert_eq!(decoded, Some(Decoded::Request(req)));
        prop_assert!(bytes.is_empty());
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete_not_an_error(req in request()) {
        let mut buf = Vec::new();
        encode_request(&req, &mut buf).unwrap();
        for cut in 0..buf.len() {
            let mut bytes = BytesMut::from(&buf[..cut]);
            prop_assert_eq!(decode_request(&mut bytes, &Limits::default()).unwrap(), None);
            prop_assert_eq!(bytes.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), magic in any::<bool>()) {
        let mut buf = BytesMut::new();
        if magic { buf.extend_from_slice(&MAGIC); }
        buf.extend_from_slice(&data);
        let limits = Limits { max_key_len: 16, max_value_len: 64, max_batch_keys: 4 };
        while let Ok(Some(_)) = decode_request(&mut buf, &limits) {}
        let mut resp = BytesMut::from(&data[..]);
        while let Ok(Some(r)) = decode_response(&mut resp, 64) {
            let _ = r.parse_mget();
            let _ = r.error_parts();
        }
    }

    #[test]
    fn responses_round_trip(status in 0u8..3, body in value()) {
        let status = [Status::NotFound, Status::Ok, Status::Error][status as usize];
        let r = Response { status, body };
        let mut buf = Vec::new();
        encode_response(&r, &mut buf).unwrap();
        for cut in 0..buf.len() {
            prop_assert_eq!(decode_response(&mut BytesMut::from(&buf[..cut]), 1 << 20).unwrap(), None);
        }
        prop_assert_eq!(decode_response(&mut BytesMut::from(&buf[..]), 1 << 20).unwrap(), Some(r));
    }

    #[test]
    fn mget_bodies_round_trip(items in proptest::collection::vec(proptest::option::of(value()), 0..20)) {
        prop_assert_eq!(Response::mget(&items).parse_mget().unwrap(), items);
    }
}

#[test]
fn the_original_cryptomem_layout_is_kept() {
    let mut buf = Vec::new();
    let req = Request::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"vv"),
        ttl: Some(Duration::from_secs(1)),
        condition: SetCondition::Always,
    };
    encode_request(&req, &mut buf).unwrap();
    assert_eq!(&buf[..2], b"CM");
    assert_eq!(buf[2], command::SET);
    assert_eq!(&buf[3..5], &1u16.to_be_bytes());
    assert_eq!(&buf[5..9], &2u32.to_be_bytes());
    assert_eq!(&buf[9..17], &1_000_000_000i64.to_be_bytes());
    assert_eq!(&buf[17..], b"kvv");

    let mut out = Vec::new();
    encode_response(&Response::ok(Bytes::from_static(b"xyz")), &mut out).unwrap();
    assert_eq!(out, b"CM\x01\x00\x00\x00\x03xyz");
}

#[test]
fn limits_are_checked_from_the_header_alone() {
    let limits = Limits { max_key_len: 8, max_value_len: 100, max_batch_keys: 2 };
    let mut header = b"CM\x01\x00\x01".to_vec();
    header.extend_from_slice(&101u32.to_be_bytes());
    header.extend_from_slice(&0i64.to_be_bytes());
    let err = decode_request(&mut BytesMut::from(&header[..]), &limits).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { len: 101, limit: 100, .. }));

    assert!(matches!(decode_request(&mut BytesMut::from(&b"XX\x02"[..]), &limits), Ok(None)), "short input waits");
    assert!(matches!(decode_request(&mut BytesMut::from(&[b'X'; 17][..]), &limits), Err(FrameError::BadMagic(_))));
    let mut big = Vec::new();
    encode_request(&Request::MGet { keys: vec![Bytes::from_static(b"a"); 3] }, &mut big).unwrap();
    assert!(matches!(decode_request(&mut BytesMut::from(&big[..]), &limits), Ok(Some(Decoded::Rejected(_)))));
    assert!(matches!(
        decode_response(&mut BytesMut::from(&b"CM\x01\xff\xff\xff\xff"[..]), 10),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(matches!(
        decode_response(&mut BytesMut::from(&b"CM\x07\x00\x00\x00\x00"[..]), 10),
        Err(FrameError::BadStatus(7))
    ));
}

#[test]
fn auth_tokens_are_not_printed() {
    let r = Request::Auth { token: Bytes::from_static(b"cmt_secret") };
    assert!(!format!("{r:?}").contains("secret"));
}

proptest! {
    /// A SET written head first, then its value, is the frame
    /// `encode_request` writes for it.
    #[test]
    fn a_set_head_and_its_value_make_the_set_frame(
        key in key(), value in value(), ttl in ttl(),
        condition in prop_oneof![Just(SetCondition::Always), Just(SetCondition::IfAbsent), Just(SetCondition::IfPresent)],
    ) {
        let mut whole = Vec::new();
        encode_request(&Request::Set { key: key.clone(), value: value.clone(), ttl, condition }, &mut whole).unwrap();
        let mut split = vec![7u8; 3];
        encode_set_head(&key, value.len(), ttl, condition, &mut split).unwrap();
        split.extend_from_slice(&value);
        prop_assert_eq!(&split[3..], &whole[..], "appended after what was there");
    }
}
