//! Micro-benchmarks of the hot pieces: `cargo bench --bench hot_paths`.
//!
//! Record seal/open (the channel), request encode/decode (the codec), store
//! get/set at 10k and 1M keys (the keyspace), value seal/open (the client),
//! rendezvous placement over 3, 10 and 30 servers (the sharded client), and
//! the large-value path (`cargo bench --bench hot_paths -- large`): opening
//! a 64 KiB and a 1 MiB message from its records, storing a 64 KiB value,
//! and appending a 64 KiB record to the log.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_server::persist::{FsyncPolicy, PersistConfig, Persistence};
use cryptomem_server::store::{Change, Clock, EvictionPolicy, Journal, SetCondition as StoreCondition, Store};
use cryptomem_wire::protocol::{Limits, Request, SetCondition, decode_request, encode_request};
use cryptomem_wire::secure::noise::{self, Initiator, responder_read_message};
use cryptomem_wire::secure::{RecordOpener, RecordSealer};

fn channel() -> (RecordSealer, RecordOpener) {
    let server = noise::random_secret().unwrap();
    let public = x25519_dalek::PublicKey::from(&server);
    let (m1, awaiting) = Initiator::new(public, b"bench", noise::random_secret().unwrap()).write_message(&[]).unwrap();
    let (_, ready) = responder_read_message(&server, b"bench", &m1).unwrap();
    let (m2, server_keys) = ready.write_message(&[], noise::random_secret().unwrap()).unwrap();
    let (_, client_keys) = awaiting.read_message(&m2).unwrap();
    (RecordSealer::new(client_keys.send), RecordOpener::new(server_keys.recv))
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for size in [128usize, 4096, 65_519] {
        let (mut sealer, mut opener) = channel();
        let plain = vec![7u8; size];
        let mut wire = Vec::with_capacity(size + 64);
        let mut input = BytesMut::with_capacity(size + 64);
        let mut out = BytesMut::with_capacity(size + 64);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal+open", size), &size, |b, _| {
            b.iter(|| {
                wire.clear();
                sealer.seal(black_box(&plain), &mut wire).unwrap();
                input.extend_from_slice(&wire);
                out.clear();
                opener.open(&mut input, &mut out).unwrap();
                black_box(&out);
            });
        });
    }
    group.finish();
}

/// The steps a large SET takes on the server, each alone.
fn large_values(c: &mut Criterion) {
    let mut group = c.benchmark_group("large");
    group.sample_size(30);
    for size in [64usize << 10, 1 << 20] {
        let (mut sealer, mut opener) = channel();
        let plain = vec![7u8; size];
        let mut out = BytesMut::new();
        group.throughput(Throughput::Bytes(size as u64));
        // Sealed in the setup, in order, so the opener's record counter agrees.
        group.bench_with_input(BenchmarkId::new("open message", size), &size, |b, _| {
            b.iter_batched(
                || {
                    let mut wire = Vec::with_capacity(size + 64);
                    sealer.seal(&plain, &mut wire).unwrap();
                    BytesMut::from(&wire[..])
                },
                |mut input| {
                    // As a session does: the request is split off the buffer.
                    opener.open(&mut input, &mut out).unwrap();
                    black_box(out.split().freeze());
                },
                BatchSize::SmallInput,
            );
        });
    }
    let value = vec![9u8; 64 << 10];
    group.throughput(Throughput::Bytes(value.len() as u64));
    let store = Store::new(cryptomem_server::store::DEFAULT_SHARDS);
    let names: Vec<Bytes> = (0..256).map(|i| Bytes::from(format!("big:{i}"))).collect();
    let mut i = 0;
    group.bench_function("store set 65536", |b| {
        b.iter(|| {
            i = (i + 1) % names.len();
            black_box(store.set(&names[i], &value, None, StoreCondition::Always, 0).unwrap().outcome);
        });
    });
    let dir = tempfile::tempdir().unwrap();
    let config = PersistConfig { fsync: FsyncPolicy::No, snapshot_log_percentage: 0, ..PersistConfig::default() };
    let (persistence, _) = Persistence::open(dir.path(), Store::new(16), Clock::System, config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let log = persistence.log();
    // The serving thread's share: encode, checksum and buffer the record; the
    // writer thread writes meanwhile, and a backlog waits as a session would.
    group.bench_function("log append 65536", |b| {
        b.iter(|| {
            if log.backlogged() {
                runtime.block_on(log.wait_for_room());
            }
            black_box(log.append(Change::Set { key: b"big:1", value: &value, expires_at_ms: None }).unwrap());
        });
    });
    group.finish();
    log.close();
}

fn codec(c: &mut Criterion) {
    let request = Request::Set {
        key: Bytes::from_static(b"user:1234567"),
        value: Bytes::from(vec![1u8; 133]),
        ttl: None,
        condition: SetCondition::Always,
    };
    let limits = Limits::default();
    let mut frame = Vec::new();
    c.bench_function("codec/encode SET 133B", |b| {
        b.iter(|| {
            frame.clear();
            encode_request(black_box(&request), &mut frame).unwrap();
        });
    });
    c.bench_function("codec/decode SET 133B", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&frame[..]);
            black_box(decode_request(&mut buf, &limits).unwrap());
        });
    });
}

fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    for keys in [10_000u64, 1_000_000] {
        let store = Store::new(cryptomem_server::store::DEFAULT_SHARDS);
        let value = vec![0u8; 133];
        for i in 0..keys {
            assert!(store.set(format!("key:{i}").as_bytes(), &value, None, StoreCondition::Always, 0).unwrap().outcome);
        }
        let names: Vec<Bytes> = (0..1024).map(|i| Bytes::from(format!("key:{}", (i * 7919) % keys))).collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("get", keys), &keys, |b, _| {
            b.iter(|| {
                i = (i + 1) % names.len();
                black_box(store.get(&names[i], 0));
            });
        });
        group.bench_with_input(BenchmarkId::new("set", keys), &keys, |b, _| {
            b.iter(|| {
                i = (i + 1) % names.len();
                black_box(store.set(&names[i], &value, None, StoreCondition::Always, 0).unwrap().outcome);
            });
        });
    }
    group.finish();
}

/// SET of a key not stored, at a 32 MiB limit: every write evicts (or, under
/// `allkeys-tinylfu`, may be refused). In `cache-aside`, half the requests
/// are GETs first, as a cache-aside client sends them, so the sketch has
/// counts to rank by; in `set only` every request is a SET (write-through,
/// or `cryptomem-tool bench -t set`).
fn store_at_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("store at limit");
    let limit = 32 << 20;
    for (load, gets) in [("cache-aside", true), ("set only", false)] {
        for policy in [EvictionPolicy::AllKeysLru, EvictionPolicy::AllKeysTinyLfu] {
            // Built and filled on the first call (criterion calls this
            // closure many times), so that a filter skipping this bench
            // skips its million writes too.
            let mut filled: Option<(Store, Vec<Bytes>)> = None;
            let value = vec![0u8; 133];
            let mut i = 0;
            group.bench_function(format!("{load} {}", policy.name()), |b| {
                let mut request = |store: &Store, names: &[Bytes]| {
                    i = (i + 1) % names.len();
                    if gets && i % 2 == 0 && store.get(&names[i], 0).is_some() {
                        return;
                    }
                    black_box(store.set(&names[i], &value, None, StoreCondition::Always, 0).unwrap().outcome);
                };
                let (store, names) = filled.get_or_insert_with(|| {
                    let store = Store::new(cryptomem_server::store::shards_for_limit(limit, 1));
                    store.configure_memory(limit, policy);
                    let names: Vec<Bytes> =
                        (0..1u64 << 20).map(|i| Bytes::from(format!("key:{}", (i * 7919) % 1_000_000))).collect();
                    // Full before timing.
                    for _ in 0..names.len() {
                        request(&store, &names);
                    }
                    (store, names)
                });
                b.iter(|| request(store, names));
            });
        }
    }
    group.finish();
}

fn values(c: &mut Criterion) {
    let ring = Keyring::new(ValueKey::from_bytes([3; 32]));
    let plain = vec![5u8; 100];
    let sealed = ring.seal(b"key", &plain).unwrap();
    c.bench_function("value/seal 100B", |b| b.iter(|| black_box(ring.seal(b"key", black_box(&plain)).unwrap())));
    c.bench_function("value/open 100B", |b| b.iter(|| black_box(ring.open(b"key", black_box(&sealed)).unwrap())));
}

fn placement(c: &mut Criterion) {
    use cryptomem_client::sharded::rendezvous::Rendezvous;
    let mut group = c.benchmark_group("rendezvous owner");
    for servers in [3usize, 10, 30] {
        let names: Vec<String> = (0..servers).map(|i| format!("cache-{i}")).collect();
        let ring = Rendezvous::new(names.iter().map(|n| (n.as_str(), 1.0))).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(servers), &servers, |b, _| {
            b.iter(|| ring.owner(black_box(b"session:0123456789abcdef")));
        });
    }
    group.finish();
}

criterion_group!(benches, records, large_values, codec, store, store_at_limit, values, placement);
criterion_main!(benches);
