//! Background work that runs on a fixed period until the server stops.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Runs `work` every `period` (a late tick is delayed, not bunched up) until
/// `stop` changes or its sender is dropped. `work` is awaited before the next
/// tick, so runs never overlap. Each run's future owns what it needs (clone
/// an `Arc` in the closure), which keeps the loop spawnable.
pub async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        work().await;
    }
}
