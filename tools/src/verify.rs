//! `verify`: every CRC and record, read-only. Exit 0 when clean.

use std::path::Path;
use std::process::ExitCode;

use cryptomem_server::persist::SnapshotReader;
use cryptomem_server::persist::{TailMode, list, scan};

pub fn run(data: &Path) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(data.is_dir(), "{} is not a directory", data.display());
    let listing = list(data)?;
    for (_, path) in &listing.snapshots {
        let checked = SnapshotReader::open(path).and_then(|mut r| {
            while r.next_entry()?.is_some() {}
            Ok(())
        });
        if let Err(e) = checked {
            println!("FAILED: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    let report = match scan(data, TailMode::Report, |_| {}) {
        Ok(report) => report,
        Err(e) => {
            println!("FAILED: {e}");
            println!(
                "`cryptomem-tool repair --data {}` cuts the log at the last good record (keeping a backup)",
                data.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    if let Some(torn) = report.segments.iter().find(|s| s.torn_at.is_some()) {
        println!(
            "FAILED: {} has a torn tail at byte offset {} (a crash mid-write, or a server still writing it); \
             the server truncates it at start, or run `cryptomem-tool repair`",
            torn.path.display(),
            torn.torn_at.unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    let records: u64 = report.segments.iter().map(|s| s.records).sum();
    println!(
        "ok: {} snapshot(s), {} log segment(s), {records} log records ({} after the snapshot), next seq {}",
        listing.snapshots.len(),
        report.segments.len(),
        report.replayed,
        report.next_seq
    );
    Ok(ExitCode::SUCCESS)
}
