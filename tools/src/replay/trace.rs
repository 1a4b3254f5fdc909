//! The request traces `replay` sends: key numbers in `0..keys`, the same for
//! every server and every run with the same arguments.
//!
//! Built here rather than with `rand_distr::Zipf` because the trace must be
//! identical wherever it is replayed: a CDF table and a fixed xorshift stream
//! pin every draw, while a crate's sampler may change its stream between
//! versions. The table costs 8 bytes per key (8 MB at 1M keys).

/// Which trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Zipf-distributed requests over every key.
    Zipf,
    /// Zipf, and at the end of every `scan_period` requests a sequential
    /// scan of `scan_len` keys (a batch job reading a range once).
    Scan,
    /// Zipf whose hot set moves to other keys every tenth of the trace.
    Shift,
}

/// What a trace is made of.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub shape: Shape,
    pub keys: u32,
    pub requests: u64,
    pub alpha: f64,
    pub scan_len: u64,
    pub scan_period: u64,
    pub seed: u64,
}

/// Generates the trace: one key number per request.
pub fn generate(spec: &Spec) -> Vec<u32> {
    let keys = u64::from(spec.keys.max(1));
    let cdf = zipf_cdf(keys, spec.alpha);
    let mut rng = spec.seed | 1;
    let mut scans = 0u64;
    (0..spec.requests)
        .map(|i| {
            if spec.shape == Shape::Scan {
                let at = i % spec.scan_period;
                let scan_from = spec.scan_period.saturating_sub(spec.scan_len);
                if at >= scan_from {
                    if at == scan_from {
                        scans += 1;
                    }
                    // Each scan reads the next range of key numbers.
                    let n = ((scans - 1) * spec.scan_len + (at - scan_from)) % keys;
                    return n as u32;
                }
            }
            let rank = draw(&cdf, &mut rng);
            let rank = match spec.shape {
                Shape::Shift => (rank + (i * 10 / spec.requests.max(1)) * (keys / 10)) % keys,
                _ => rank,
            };
            spread(rank, keys) as u32
        })
        .collect()
}

/// Cumulative probabilities of ranks `0..keys` under Zipf(`alpha`).
fn zipf_cdf(keys: u64, alpha: f64) -> Vec<f64> {
    let mut sum = 0.0;
    let mut cdf: Vec<f64> = (1..=keys)
        .map(|r| {
            sum += (r as f64).powf(-alpha);
            sum
        })
        .collect();
    for c in &mut cdf {
        *c /= sum;
    }
    cdf
}

/// A rank drawn by the CDF.
fn draw(cdf: &[f64], rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let u = (*rng >> 11) as f64 / (1u64 << 53) as f64;
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as u64
}

/// Maps a rank to a key number, so popular keys are spread over the key
/// numbers (and a scan of a range of numbers reads mostly cold keys).
fn spread(rank: u64, keys: u64) -> u64 {
    // A prime multiplier is a permutation unless it divides `keys`.
    const P: u64 = 2_147_483_647;
    if keys.is_multiple_of(P) { rank } else { rank * P % keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: Shape) -> Spec {
        Spec { shape, keys: 10_000, requests: 100_000, alpha: 0.99, scan_len: 2_000, scan_period: 10_000, seed: 7 }
    }

    fn counts(trace: &[u32], keys: usize) -> Vec<u32> {
        let mut c = vec![0; keys];
        for &k in trace {
            c[k as usize] += 1;
        }
        c
    }

    #[test]
    fn the_same_arguments_give_the_same_trace() {
        assert_eq!(generate(&spec(Shape::Zipf)), generate(&spec(Shape::Zipf)));
        assert_ne!(generate(&spec(Shape::Zipf)), generate(&Spec { seed: 8, ..spec(Shape::Zipf) }));
    }

    #[test]
    fn zipf_requests_the_top_rank_most_and_in_proportion() {
        let trace = generate(&spec(Shape::Zipf));
        let c = counts(&trace, 10_000);
        let top = c[spread(0, 10_000) as usize];
        let tenth = c[spread(9, 10_000) as usize];
        assert_eq!(top, *c.iter().max().unwrap());
        // Zipf 0.99: rank 1 is requested about 10^0.99 times as often as rank 10.
        let ratio = f64::from(top) / f64::from(tenth);
        assert!((6.0..16.0).contains(&ratio), "{ratio}");
    }

    #[test]
    fn scans_read_consecutive_ranges_at_the_end_of_each_period() {
        let trace = generate(&spec(Shape::Scan));
        assert_eq!(trace[8_000..10_000], (0..2_000).collect::<Vec<u32>>()[..]);
        assert_eq!(trace[18_000..20_000], (2_000..4_000).collect::<Vec<u32>>()[..]);
    }

    #[test]
    fn the_hot_set_moves_every_tenth() {
        let trace = generate(&spec(Shape::Shift));
        let hottest = |part: &[u32]| {
            let c = counts(part, 10_000);
            (0..10_000).max_by_key(|&k| c[k]).unwrap()
        };
        let first = hottest(&trace[..10_000]);
        let second = hottest(&trace[10_000..20_000]);
        assert_ne!(first, second);
        assert_eq!(second as u64, spread(1_000, 10_000), "rank 0 became the old rank 1000's key");
    }
}
