//! `compact`: one new snapshot of the current state; the files it supersedes go.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cryptomem_server::persist::disk::OsDisk;
use cryptomem_server::persist::write_snapshot;
use cryptomem_server::persist::{Superseded, remove_superseded};
use cryptomem_server::persist::{TailMode, list, recover, remove_leftovers};
use cryptomem_server::server::{DataDirError, lock_data_dir};
use cryptomem_server::store::Store;
use cryptomem_util::files::sync_dir;

use crate::state::now_ms;

pub fn run(data: &Path) -> anyhow::Result<ExitCode> {
    let _lock = lock(data)?;
    let before = list(data)?;
    let bytes_before = total_bytes(before.snapshots.iter().chain(&before.segments).map(|(_, p)| p.as_path()));
    let store = Store::new(64);
    let now = now_ms();
    eprintln!("reading {} ...", data.display());
    let report = recover(data, &store, now, TailMode::Truncate)
        .context("the data dir cannot be recovered; see `cryptomem-tool verify`")?;
    let cut_seq = report.next_seq - 1;
    let cut = store.cut(|| cut_seq);
    eprintln!("writing a snapshot of {} keys at seq {cut_seq} ...", store.len());
    let (path, header) = write_snapshot(&OsDisk, data, cut, now, |n| eprintln!("  {n} keys written"))?;
    // Every record is at or below the cut now, so every segment and older snapshot goes.
    remove_superseded(&OsDisk, data, cut_seq, Superseded::AllSegments)
        .context("removing the files the snapshot replaces")?;
    let leftovers = remove_leftovers(data, &before)?;
    if !before.leftovers.is_empty() {
        println!("removed {} temp file(s) of interrupted snapshots, {leftovers} bytes", before.leftovers.len());
    }
    sync_dir(data)?;
    let bytes_after = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "compacted {}: {} file(s), {bytes_before} bytes -> 1 snapshot ({}), {bytes_after} bytes, {} keys",
        data.display(),
        before.snapshots.len() + before.segments.len(),
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        header.entries
    );
    Ok(ExitCode::SUCCESS)
}

/// The data dir's exclusive lock, or a clear refusal while a server runs.
pub fn lock(data: &Path) -> anyhow::Result<std::fs::File> {
    anyhow::ensure!(data.is_dir(), "{} is not a directory", data.display());
    lock_data_dir(data).map_err(|e| match e {
        DataDirError::Locked(_) => anyhow::anyhow!(
            "{e}: stop the server first (a running server compacts itself with SAVE or its snapshot schedule)"
        ),
        other => other.into(),
    })
}

fn total_bytes<'a>(paths: impl Iterator<Item = &'a Path>) -> u64 {
    paths.filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}
