//! Simulated power cuts under the log and the snapshots. SIGKILL
//! (tests/crash.rs) keeps the page cache; a power loss keeps only what was
//! fsynced, may tear the write in flight (some of its bytes, then zeros or
//! garbage), and may undo directory changes not yet fsynced. The engine
//! writes through `PowerCutDisk`, which models all three
//! (`persist::disk::power_cut`); the test picks one of the disk's
//! operations at random, the disk takes its image just before it, the run
//! goes on (what happens after the cut never happened), and then one
//! possible post-power-loss directory is built from the image: for each
//! name its durable or its current entry, each file's fsynced bytes plus a
//! random share of its unsynced ones and a random fill.
//!
//! Runs take snapshots at random moments, so cuts land in log appends and
//! fsyncs, segment creation, snapshot writes, renames, directory fsyncs
//! and the removal of superseded files.
//!
//! Checked after each cut: recovery succeeds (a power cut's damage is a torn
//! tail or a missing unsynced file, never a refusal); the data is exactly
//! the result of some prefix of the writes issued, in order; under `always`
//! that prefix holds every write acknowledged before the cut (under
//! `everysec` only the last second may be missing: here all of a round's
//! writes are within it).
//!
//! 200 cuts in `cargo test`; `POWER_CUTS=10000 cargo test --release --test
//! power_cuts -- --nocapture` is the long run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cryptomem_server::persist::disk::power_cut::{Image, PowerCutDisk};
use cryptomem_server::persist::{FsyncPolicy, PersistConfig, Persistence, TailMode, recover};
use cryptomem_server::store::{Clock, SetCondition, Store};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Set(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn apply(state: &mut State, op: &Op) {
    match op {
        Op::Set(k, v) => {
            state.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            state.remove(k);
        }
    }
}

fn recovered(dir: &Path) -> State {
    let store = Store::new(4);
    let report = recover(dir, &store, Clock::System.now_ms(), TailMode::Truncate)
        .unwrap_or_else(|e| panic!("a power cut's damage was refused: {e}"));
    let _ = report;
    let mut state = State::new();
    for map in store.shard_maps() {
        for item in map.iter() {
            state.insert(item.key().to_vec(), item.value().to_vec());
        }
    }
    state
}

#[derive(Debug, Default)]
struct Tally {
    cuts: u64,
    /// Cuts by the operation they came before.
    before: BTreeMap<&'static str, u64>,
    snapshots: u64,
    torn_kept_bytes: u64,
    garbage_fills: u64,
    zero_fills: u64,
    /// Names whose unsynced directory change was undone.
    entries_undone: u64,
    acked_checked: u64,
    lost_unacked: u64,
    /// Disk operations over all runs.
    ops: u64,
}

async fn one_cut(seed: u64, policy: FsyncPolicy, tally: &mut Tally) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    // Aim at the operations a run typically has, so few cuts miss them all.
    let typical = (tally.ops / tally.cuts.max(1)).max(20);
    let disk = PowerCutDisk::cutting_before(rng.u64(1..=typical));
    let config = PersistConfig { fsync: policy, snapshot_after_writes: 0, ..PersistConfig::default() };
    let (p, _) =
        Persistence::open_on(Arc::new(disk.clone()), dir.path(), Store::new(4), Clock::System, config).unwrap();
    let store = Arc::clone(p.store());
    let now = Clock::System.now_ms();
    let mut issued: Vec<Op> = Vec::new();
    for _ in 0..rng.usize(1..12) {
        let mut last = 0;
        for _ in 0..rng.usize(1..20) {
            let key = format!("k{}", rng.u8(..24)).into_bytes();
            let op = if rng.u8(..5) == 0 {
                Op::Delete(key)
            } else {
                let value: Vec<u8> = (0..rng.usize(0..300)).map(|_| rng.u8(..)).collect();
                Op::Set(key, value)
            };
            let seq = match &op {
                Op::Set(k, v) => store.set(k, v, None, SetCondition::Always, now).unwrap().seq,
                Op::Delete(k) => store.delete(k, now).unwrap().seq,
            };
            last = last.max(seq);
            issued.push(op);
        }
        if policy == FsyncPolicy::Always && last > 0 {
            p.log().wait_durable(last).await.unwrap();
            disk.mark(issued.len() as u64);
        }
        if rng.u8(..3) == 0 {
            p.snapshot().await.unwrap();
            tally.snapshots += 1;
        }
    }
    p.log().close();
    drop((p, store));
    tally.ops += disk.ops();
    let image = disk.image();
    *tally.before.entry(image.before).or_default() += 1;
    let acked_at_cut = usize::try_from(image.mark).unwrap();

    let after = tempfile::tempdir().unwrap();
    power_loss(&image, after.path(), &mut rng, tally);
    let got = recovered(after.path());
    let mut state = State::new();
    let mut matched = None;
    for n in 0..=issued.len() {
        if n > 0 {
            apply(&mut state, &issued[n - 1]);
        }
        if state == got {
            matched = Some(n);
        }
    }
    let Some(prefix) = matched else {
        panic!(
            "seed {seed} {policy:?}, cut before {}: recovered data is no prefix of the writes ({} keys)",
            image.before,
            got.len()
        );
    };
    if policy == FsyncPolicy::Always {
        // Equal states can repeat; the longest matching prefix is the claim.
        assert!(
            prefix >= acked_at_cut,
            "seed {seed}, cut before {}: {prefix} writes recovered, {acked_at_cut} acknowledged",
            image.before
        );
        tally.acked_checked += acked_at_cut as u64;
    }
    tally.lost_unacked += issued.len().saturating_sub(prefix) as u64;
    tally.cuts += 1;
}

/// Writes into `dir` one directory a power loss at `image` may leave.
fn power_loss(image: &Image, dir: &Path, rng: &mut fastrand::Rng, tally: &mut Tally) {
    for (name, (durable, current)) in &image.names {
        let inode = if durable == current || rng.bool() {
            *current
        } else {
            tally.entries_undone += 1;
            *durable
        };
        let Some(inode) = inode else { continue };
        let (synced, unsynced) = &image.inodes[&inode];
        let keep = rng.usize(0..=unsynced.len());
        let mut bytes = synced.clone();
        bytes.extend_from_slice(&unsynced[..keep]);
        tally.torn_kept_bytes += keep as u64;
        if !unsynced.is_empty() {
            let fill = rng.usize(0..64);
            if rng.bool() {
                bytes.extend(std::iter::repeat_n(0, fill));
                tally.zero_fills += 1;
            } else {
                bytes.extend((0..fill).map(|_| rng.u8(..)));
                tally.garbage_fills += 1;
            }
        }
        std::fs::write(dir.join(name), &bytes).unwrap();
    }
}

#[tokio::test]
async fn every_power_cut_recovers_every_acknowledged_write() {
    let cuts: u64 = std::env::var("POWER_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    const MUST_CUT_BEFORE: [&str; 5] = ["segment append", "segment sync", "snapshot sync", "rename", "remove"];
    let mut tally = Tally::default();
    // Where a cut lands depends on how the log writer's thread interleaves
    // with the rest, so a rare operation (a rename, about one cut in 40) can
    // go unhit in 200; cutting on, up to four times as many, makes that
    // vanishingly unlikely without making every run longer.
    let covered = |t: &Tally| MUST_CUT_BEFORE.iter().all(|op| t.before.contains_key(op));
    let mut seed = 0;
    while seed < cuts || (!covered(&tally) && seed < 4 * cuts) {
        let policy = if seed % 2 == 0 { FsyncPolicy::Always } else { FsyncPolicy::EverySec };
        one_cut(seed, policy, &mut tally).await;
        seed += 1;
    }
    eprintln!("{tally:#?}");
    assert_eq!(tally.cuts, seed);
    assert!(tally.garbage_fills > 0 && tally.zero_fills > 0 && tally.torn_kept_bytes > 0, "{tally:?}");
    assert!(tally.entries_undone > 0, "{tally:?}");
    for op in MUST_CUT_BEFORE {
        assert!(tally.before.contains_key(op), "no cut before a {op}: {tally:#?}");
    }
}
