//! Weighted rendezvous (highest-random-weight) hashing: which server owns a
//! key.
//!
//! Every server gets a score for the key and the highest score owns it. A
//! server added or removed therefore moves only the keys it wins or owned
//! (about `weight / total weight` of them), never a key between two servers
//! that both stayed; the servers in descending score order are the key's
//! fallback order, which cache-only failover uses. Ketama-style rings need
//! ~100–200 virtual points per server to spread evenly and handle weights
//! by point counts; rendezvous needs no table, takes weights exactly, and
//! costs one short hash per server per key (fine for the tens of servers a
//! client-side cluster has).
//!
//! # The exact computation
//! For another client to place keys identically:
//!
//! 1. Each server has a name (UTF-8; the cluster file's `name`, else its
//!    address) and a weight `w` (finite, > 0; default 1).
//!    `seed = XXH3_64(name bytes)` (seed 0).
//! 2. For a key, hash the name the server sees (with hidden names, the
//!    hidden wire name): `h = XXH3_64_with_seed(key bytes, seed)`.
//! 3. `u = ((h >> 11) + 0.5) / 2^53`, a double strictly between 0 and 1.
//! 4. `score = w / -ln(u)` (an IEEE double; with equal weights this orders
//!    servers as `h` does).
//! 5. The owner is the highest score; equal scores (never seen in
//!    practice) go to the lexicographically smaller name. The fallback
//!    order is descending score, same tie rule.
//!
//! Placement does not depend on the order servers are listed in. It does
//! depend on names: renaming a server (or, with no name, changing its
//! address) moves its keys. The known-answer test below pins the result.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// A server as the hash sees it.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    seed: u64,
    weight: f64,
}

/// The placement of keys over a fixed list of weighted servers.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    nodes: Vec<Node>,
}

/// A weight that is not a finite number above zero.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("server {name}: weight must be a finite number above 0, not {weight}")]
pub struct BadWeight {
    name: String,
    weight: f64,
}

impl Rendezvous {
    /// Servers by name and weight, in the caller's order (indexes returned
    /// by [`Rendezvous::owner`] refer to it).
    ///
    /// # Errors
    /// [`BadWeight`] for a weight that is zero, negative, infinite or NaN.
    pub fn new<'a>(servers: impl IntoIterator<Item = (&'a str, f64)>) -> Result<Self, BadWeight> {
        let nodes = servers
            .into_iter()
            .map(|(name, weight)| {
                if weight.is_finite() && weight > 0.0 {
                    Ok(Node { name: name.to_string(), seed: xxh3_64(name.as_bytes()), weight })
                } else {
                    Err(BadWeight { name: name.to_string(), weight })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nodes })
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no servers.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn score(&self, index: usize, key: &[u8]) -> f64 {
        let node = &self.nodes[index];
        let h = xxh3_64_with_seed(key, node.seed);
        // 53 bits fill a double's mantissa exactly; +0.5 keeps u off 0 and 1.
        #[allow(clippy::cast_precision_loss)]
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        node.weight / -u.ln()
    }

    /// Whether server `a` ranks above server `b` for a key with these scores.
    fn above(&self, a: (usize, f64), b: (usize, f64)) -> bool {
        a.1 > b.1 || (a.1 == b.1 && self.nodes[a.0].name < self.nodes[b.0].name)
    }

    /// The index of the server that owns `key`, or `None` with no servers.
    pub fn owner(&self, key: &[u8]) -> Option<usize> {
        self.owner_among(key, |_| true)
    }

    /// The highest-ranked server for `key` that `eligible` accepts.
    pub fn owner_among(&self, key: &[u8], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for i in (0..self.nodes.len()).filter(|&i| eligible(i)) {
            let candidate = (i, self.score(i, key));
            if best.is_none_or(|b| self.above(candidate, b)) {
                best = Some(candidate);
            }
        }
        best.map(|(i, _)| i)
    }

    /// Every server's index, from the key's owner down its fallback order.
    pub fn ranking(&self, key: &[u8]) -> Vec<usize> {
        let mut scored: Vec<(usize, f64)> = (0..self.nodes.len()).map(|i| (i, self.score(i, key))).collect();
        scored.sort_by(|&a, &b| {
            if self.above(a, b) {
                std::cmp::Ordering::Less
            } else if self.above(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        scored.into_iter().map(|(i, _)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(servers: &[(&'static str, f64)]) -> Rendezvous {
        Rendezvous::new(servers.iter().copied()).unwrap()
    }

    fn counts(r: &Rendezvous, keys: usize) -> Vec<usize> {
        let mut counts = vec![0; r.len()];
        for k in 0..keys {
            counts[r.owner(format!("key:{k}").as_bytes()).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn known_answers_pin_the_computation_for_other_clients() {
        let r = ring(&[("a", 1.0), ("b", 1.0), ("c", 2.0)]);
        let owners: String =
            (0..16).map(|k| ["a", "b", "c"][r.owner(format!("key:{k}").as_bytes()).unwrap()]).collect();
        assert_eq!(owners, KNOWN_OWNERS, "a change here moves every user's keys");
        assert_eq!(xxh3_64(b"a"), 0xe6c6_32b6_1e96_4e1f, "XXH3_64 of the name is the seed");
    }

    // Computed independently with Python's `xxhash` package and `math.log`.
    const KNOWN_OWNERS: &str = "bbbaacaccabcacac";

    #[test]
    fn keys_spread_evenly_and_by_weight() {
        let even = counts(&ring(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]), 100_000);
        for c in &even {
            assert!((31_667..=35_000).contains(c), "{even:?} is not within 5% of 33,333 each");
        }
        let weighted = counts(&ring(&[("a", 1.0), ("b", 2.0), ("c", 1.0)]), 100_000);
        for (c, want) in weighted.iter().zip([25_000.0, 50_000.0, 25_000.0]) {
            #[allow(clippy::cast_precision_loss)]
            let off = (*c as f64 - want).abs() / want;
            assert!(off < 0.05, "{weighted:?} is not within 5% of 1:2:1");
        }
    }

    #[test]
    fn adding_a_server_moves_only_the_keys_it_wins() {
        let three = ring(&[("a", 1.0), ("b", 1.0), ("c", 1.0)]);
        let four = ring(&[("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0)]);
        let mut moved = 0;
        for k in 0..100_000 {
            let key = format!("key:{k}");
            let (before, after) = (three.owner(key.as_bytes()).unwrap(), four.owner(key.as_bytes()).unwrap());
            if before != after {
                assert_eq!(after, 3, "{key} moved between two servers that both stayed");
                moved += 1;
            }
        }
        assert!((22_000..=28_000).contains(&moved), "{moved} of 100,000 moved, expected 25% +/- 3%");
    }

    #[test]
    fn placement_does_not_depend_on_listing_order_and_ranking_starts_with_the_owner() {
        let abc = ring(&[("a", 1.0), ("b", 3.0), ("c", 1.0)]);
        let cab = ring(&[("c", 1.0), ("a", 1.0), ("b", 3.0)]);
        let names = |r: &Rendezvous, v: Vec<usize>| v.into_iter().map(|i| r.nodes[i].name.clone()).collect::<Vec<_>>();
        for k in 0..1000 {
            let key = format!("key:{k}");
            let ranking = abc.ranking(key.as_bytes());
            assert_eq!(names(&abc, ranking.clone()), names(&cab, cab.ranking(key.as_bytes())));
            assert_eq!(ranking[0], abc.owner(key.as_bytes()).unwrap());
            assert_eq!(abc.owner_among(key.as_bytes(), |i| i != ranking[0]), Some(ranking[1]), "the next in line");
        }
    }

    #[test]
    fn bad_weights_are_refused() {
        for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Rendezvous::new([("a", w)]).is_err(), "{w}");
        }
        assert_eq!(Rendezvous::new(std::iter::empty()).unwrap().owner(b"k"), None);
    }
}
