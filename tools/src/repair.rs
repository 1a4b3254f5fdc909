//! `repair`: cut a damaged log at its last good record, keeping what is cut.
//!
//! The damaged segment is truncated at the first bad record; the bytes cut
//! off are saved next to it as `<segment>.cut-<offset>.bak`, and any later
//! segments are renamed to `<segment>.bak` (records after a gap could not be
//! replayed anyway). Backups are ignored by the server and can be removed once
//! the result is checked.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cryptomem_server::persist::PersistError;
use cryptomem_server::persist::{TailMode, list, scan};
use cryptomem_util::files::{PRIVATE_MODE, sync_dir, write_atomic};

use crate::compact::lock;

struct Plan {
    segment: PathBuf,
    offset: u64,
    reason: String,
    later: Vec<PathBuf>,
}

pub fn run(data: &Path, yes: bool) -> anyhow::Result<ExitCode> {
    let _lock = lock(data)?;
    let listing = list(data)?;
    let damage = match scan(data, TailMode::Report, |_| {}) {
        Ok(report) => {
            report.segments.iter().find_map(|s| s.torn_at.map(|at| (s.path.clone(), at, "torn tail".to_string())))
        }
        Err(PersistError::Corrupted { file, offset, reason }) if listing.segments.iter().any(|(_, p)| *p == file) => {
            Some((file, offset, reason))
        }
        Err(e @ PersistError::Corrupted { .. }) => {
            println!("{e}");
            println!("repair only fixes log segments; restore a damaged snapshot from a backup copy");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let Some((segment, offset, reason)) = damage else {
        println!("nothing to repair: {} is clean", data.display());
        return Ok(ExitCode::SUCCESS);
    };
    let first = listing.segments.iter().find(|(_, p)| *p == segment).map_or(0, |(s, _)| *s);
    let later = listing.segments.iter().filter(|(s, _)| *s > first).map(|(_, p)| p.clone()).collect();
    let plan = Plan { segment, offset, reason, later };
    describe(&plan)?;
    if !yes && !confirm()? {
        println!("aborted; nothing changed");
        return Ok(ExitCode::from(1));
    }
    apply(&plan)?;
    sync_dir(data)?;
    println!("repaired; `cryptomem-tool verify --data {}` checks the result", data.display());
    Ok(ExitCode::SUCCESS)
}

fn describe(plan: &Plan) -> anyhow::Result<()> {
    let len = std::fs::metadata(&plan.segment)?.len();
    println!("{} is damaged at byte offset {}: {}", plan.segment.display(), plan.offset, plan.reason);
    println!(
        "will cut its last {} bytes (saved to {})",
        len - plan.offset,
        backup_name(&plan.segment, plan.offset).display()
    );
    for p in &plan.later {
        println!("will set aside the later segment {} (renamed to .bak)", p.display());
    }
    println!("records after the damage are dropped from the data dir (but kept in the backups)");
    Ok(())
}

fn confirm() -> anyhow::Result<bool> {
    print!("proceed? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn backup_name(segment: &Path, offset: u64) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(format!(".cut-{offset}.bak"));
    PathBuf::from(name)
}

fn apply(plan: &Plan) -> anyhow::Result<()> {
    let bytes = std::fs::read(&plan.segment).with_context(|| plan.segment.display().to_string())?;
    let at = usize::try_from(plan.offset)?;
    let backup = backup_name(&plan.segment, plan.offset);
    write_atomic(&backup, &bytes[at..], PRIVATE_MODE).with_context(|| backup.display().to_string())?;
    let file = std::fs::OpenOptions::new().write(true).open(&plan.segment)?;
    file.set_len(plan.offset)?;
    file.sync_all()?;
    for p in &plan.later {
        let mut aside = p.as_os_str().to_owned();
        aside.push(".bak");
        std::fs::rename(p, PathBuf::from(aside)).with_context(|| p.display().to_string())?;
    }
    Ok(())
}
