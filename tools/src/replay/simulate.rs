//! `replay --simulate LIMIT`: the same trace into an in-process store, for
//! hit ratios in seconds where the `eviction` suite takes minutes. No
//! network, no encryption, a simulated clock: it shows what a policy does at
//! a limit with a trace shape, not how fast a server is.
//!
//! Values are `-d` bytes plus the seal a client adds, and the TinyLFU sketch
//! counts against the limit as on a server, so the store holds as many keys
//! as a server under the same limit, less what the server's connection
//! buffers take from it. The clock advances one
//! millisecond every `--rate` requests (300 by default, about the pace of the
//! `eviction` suite on two cores); recency and the LFU counters' decay see
//! that clock. Sampling draws are random, so runs differ in the fourth digit.

use cryptomem_client::value_crypto::SEALED_OVERHEAD;
use cryptomem_server::store::{EvictionPolicy, SetCondition, Store};

/// The store's settings for a simulated run.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limit: u64,
    pub policy: EvictionPolicy,
    /// `None`: the server's default.
    pub samples: Option<usize>,
    /// Requests per simulated millisecond (at least 1).
    pub rate: u64,
}

/// What a run gives: hits, GETs plus SETs, and at the end the keys held
/// and the bytes of the policy's own tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub hits: u64,
    pub operations: u64,
    pub keys: usize,
    pub policy_bytes: u64,
}

/// Replays `trace` cache-aside (GET, then SET on a miss) into a fresh store.
///
/// # Errors
/// The store's, if a SET fails (`OOM` under `noeviction` or a volatile
/// policy: the trace's keys have no TTL).
pub fn run(trace: &[u32], data_size: usize, settings: Settings) -> anyhow::Result<Counts> {
    // The shard count a one-thread server picks for the limit.
    let store = Store::new(cryptomem_server::store::shards_for_limit(settings.limit, 1));
    store.configure_memory(settings.limit, settings.policy);
    if let Some(n) = settings.samples {
        store.memory().set_samples(n);
    }
    let value = vec![b'x'; data_size + SEALED_OVERHEAD];
    let mut now_ms = 1_700_000_000_000;
    let mut counts = Counts { hits: 0, operations: 0, keys: 0, policy_bytes: 0 };
    for (i, n) in trace.iter().enumerate() {
        if (i as u64).is_multiple_of(settings.rate.max(1)) {
            now_ms += 1;
        }
        let key = format!("t:{n}");
        counts.operations += 1;
        if store.get(key.as_bytes(), now_ms).is_some() {
            counts.hits += 1;
            continue;
        }
        counts.operations += 1;
        // Refused admission (`allkeys-tinylfu`) is a success too, as on a server.
        _ = store.set(key.as_bytes(), &value, None, SetCondition::Always, now_ms)?;
        anyhow::ensure!(
            settings.limit == 0 || store.memory().used() <= settings.limit,
            "used_memory {} over the limit {} after a write",
            store.memory().used(),
            settings.limit
        );
    }
    counts.keys = store.len();
    counts.policy_bytes = store.policy_bytes();
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::trace::{Shape, Spec, generate};

    fn trace(shape: Shape) -> Vec<u32> {
        generate(&Spec {
            shape,
            keys: 20_000,
            requests: 200_000,
            alpha: 0.99,
            scan_len: 4_000,
            scan_period: 20_000,
            seed: 7,
        })
    }

    fn settings(limit: u64, policy: EvictionPolicy) -> Settings {
        Settings { limit, policy, samples: None, rate: 300 }
    }

    #[test]
    fn without_a_limit_only_first_requests_miss() {
        let t = trace(Shape::Zipf);
        let distinct = t.iter().collect::<std::collections::HashSet<_>>().len() as u64;
        let c = run(&t, 100, settings(0, EvictionPolicy::AllKeysLru)).unwrap();
        assert_eq!(c.hits, t.len() as u64 - distinct);
        assert_eq!(c.operations, t.len() as u64 + distinct);
    }

    /// What every key of these traces is charged: "t:0" to "t:19999" with
    /// a 133-byte sealed value all fall in one size class.
    fn key_cost() -> u64 {
        cryptomem_server::store::footprint_of("t:19999".len(), 133, false)
    }

    #[test]
    fn a_limit_costs_hits_and_tinylfu_resists_a_scan() {
        let t = trace(Shape::Scan);
        let all = run(&t, 100, settings(0, EvictionPolicy::AllKeysLru)).unwrap().hits;
        // About 10% of the 20,000 keys.
        let limit = 2_000 * key_cost();
        let lru = run(&t, 100, settings(limit, EvictionPolicy::AllKeysLru)).unwrap().hits;
        let tiny = run(&t, 100, settings(limit, EvictionPolicy::AllKeysTinyLfu)).unwrap().hits;
        assert!(lru < all && tiny < all, "{lru} {tiny} < {all}");
        assert!(tiny > lru, "tinylfu {tiny} hits, lru {lru}");
    }

    #[test]
    fn the_sketch_and_small_caches_take_their_bytes_from_the_keys() {
        let limit = 2_000 * key_cost();
        let c = run(&trace(Shape::Zipf), 100, settings(limit, EvictionPolicy::AllKeysTinyLfu)).unwrap();
        let sketch = cryptomem_server::store::FrequencySketch::bytes_for(limit / 128);
        assert!(c.policy_bytes > sketch, "the small caches count too: {} bytes", c.policy_bytes);
        // The README's bound for the small caches at this size: under 4
        // bytes per key held (3.5 measured; their tables round up to powers
        // of two, so about 2 at 80,000 keys).
        let small_caches = c.policy_bytes - sketch;
        assert!(small_caches < 4 * c.keys as u64, "{small_caches} bytes of small caches for {} keys", c.keys);
        let (key_cost, tables) = (key_cost(), c.policy_bytes);
        assert_eq!(key_cost, cryptomem_server::store::footprint_of("t:0".len(), 133, false));
        assert!(c.keys as u64 * key_cost + tables <= limit, "{} keys and {tables} bytes of tables in {limit}", c.keys);
        assert!(c.keys as u64 * key_cost + tables + 2 * key_cost > limit, "the limit is used: {} keys", c.keys);
    }

    #[test]
    fn noeviction_at_the_limit_is_an_error() {
        let err = run(&trace(Shape::Zipf), 100, settings(100_000, EvictionPolicy::NoEviction)).unwrap_err();
        assert!(err.to_string().contains("maxmemory"), "{err}");
    }
}
