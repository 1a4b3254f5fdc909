//! `inspect`: what a data dir holds, read-only.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use cryptomem_server::auth::TokenTable;
use cryptomem_server::persist::SnapshotReader;
use cryptomem_server::persist::{Listing, list};
use cryptomem_server::server::{CREDENTIALS_FILE, SERVER_KEY_FILE, SERVER_PUB_FILE, TOKENS_FILE};
use cryptomem_wire::secure::ServerIdentity;
use serde::Serialize;

use crate::state::{self, now_ms};

#[derive(Serialize)]
struct Report {
    data_dir: String,
    server_public_key: Option<String>,
    tokens: Vec<TokenRow>,
    files: Vec<FileInfo>,
    snapshots: Vec<SnapshotInfo>,
    segments: Vec<SegmentInfo>,
    /// Temp files of snapshots a crash interrupted: name and bytes.
    leftovers: Vec<(String, u64)>,
    keys: Option<u64>,
    expired_keys: Option<u64>,
    value_bytes: Option<u64>,
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_list: Option<Vec<KeyInfo>>,
}

#[derive(Serialize)]
struct TokenRow {
    id: String,
    role: String,
    label: String,
    created_unix_ms: u64,
}

#[derive(Serialize)]
struct FileInfo {
    name: String,
    bytes: u64,
    mode: String,
    warning: Option<String>,
}

#[derive(Serialize)]
struct SnapshotInfo {
    file: String,
    bytes: u64,
    created_unix_ms: Option<u64>,
    cut_seq: Option<u64>,
    entries: Option<u64>,
    shards: Option<usize>,
    crc: String,
}

#[derive(Serialize)]
struct SegmentInfo {
    file: String,
    bytes: u64,
    first_seq: u64,
    records: Option<u64>,
    last_seq: Option<u64>,
    crc: String,
}

#[derive(Serialize)]
struct KeyInfo {
    key: String,
    value_bytes: usize,
    expires_at_unix_ms: Option<u64>,
    expired: bool,
    version: u64,
}

pub fn run(data: &Path, json: bool, with_keys: bool) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(data.is_dir(), "{} is not a directory", data.display());
    let identity = ServerIdentity::load(&data.join(SERVER_KEY_FILE)).ok();
    let tokens = TokenTable::load(&data.join(TOKENS_FILE)).map(|t| t.records().to_vec()).unwrap_or_default();
    let listing = list(data).context("listing the data dir")?;
    let mut report = Report {
        data_dir: data.display().to_string(),
        server_public_key: identity.map(|i| i.public_hex()),
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                role: t.role.to_string(),
                label: t.label,
                created_unix_ms: t.created_unix_ms,
            })
            .collect(),
        files: file_infos(data),
        snapshots: snapshot_infos(&listing),
        segments: Vec::new(),
        leftovers: listing.leftovers.iter().map(|p| (name(p), std::fs::metadata(p).map_or(0, |m| m.len()))).collect(),
        keys: None,
        expired_keys: None,
        value_bytes: None,
        problem: None,
        key_list: None,
    };
    match state::load(data) {
        Ok(st) => {
            let now = now_ms();
            let expired = st.keys.values().filter(|k| k.expires_at_ms.is_some_and(|at| at <= now)).count() as u64;
            report.keys = Some(st.keys.len() as u64 - expired);
            report.expired_keys = Some(expired);
            report.value_bytes = Some(st.keys.values().map(|k| k.value_len as u64).sum());
            report.segments = st
                .report
                .segments
                .iter()
                .map(|s| SegmentInfo {
                    file: name(&s.path),
                    bytes: s.len,
                    first_seq: s.first_seq,
                    records: Some(s.records),
                    last_seq: s.last_seq,
                    crc: s.torn_at.map_or_else(|| "ok".into(), |at| format!("torn tail at offset {at}")),
                })
                .collect();
            if with_keys {
                let mut keys: Vec<KeyInfo> = st
                    .keys
                    .iter()
                    .map(|(k, s)| KeyInfo {
                        key: String::from_utf8(k.clone()).unwrap_or_else(|_| k.escape_ascii().to_string()),
                        value_bytes: s.value_len,
                        expires_at_unix_ms: s.expires_at_ms,
                        expired: s.expires_at_ms.is_some_and(|at| at <= now),
                        version: s.version,
                    })
                    .collect();
                keys.sort_by(|a, b| a.key.cmp(&b.key));
                report.key_list = Some(keys);
            }
        }
        Err(e) => {
            report.segments = listing
                .segments
                .iter()
                .map(|(first, p)| SegmentInfo {
                    file: name(p),
                    bytes: std::fs::metadata(p).map_or(0, |m| m.len()),
                    first_seq: *first,
                    records: None,
                    last_seq: None,
                    crc: "not checked (see problem)".into(),
                })
                .collect();
            report.problem = Some(e.to_string());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    let loose = report.files.iter().any(|f| f.warning.is_some());
    Ok(if report.problem.is_some() {
        ExitCode::from(1)
    } else if loose {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn snapshot_infos(listing: &Listing) -> Vec<SnapshotInfo> {
    listing
        .snapshots
        .iter()
        .map(|(_, path)| {
            let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
            match SnapshotReader::open(path) {
                Ok(mut r) => {
                    let h = r.header().clone();
                    let crc = loop {
                        match r.next_entry() {
                            Ok(Some(_)) => {}
                            Ok(None) => break "ok".to_string(),
                            Err(e) => break e.to_string(),
                        }
                    };
                    SnapshotInfo {
                        file: name(path),
                        bytes,
                        created_unix_ms: Some(h.created_unix_ms),
                        cut_seq: Some(h.cut_seq),
                        entries: Some(h.entries),
                        shards: Some(h.shard_seqs.len()),
                        crc,
                    }
                }
                Err(e) => SnapshotInfo {
                    file: name(path),
                    bytes,
                    created_unix_ms: None,
                    cut_seq: None,
                    entries: None,
                    shards: None,
                    crc: e.to_string(),
                },
            }
        })
        .collect()
}

fn file_infos(data: &Path) -> Vec<FileInfo> {
    [(SERVER_KEY_FILE, true), (TOKENS_FILE, true), (CREDENTIALS_FILE, true), (SERVER_PUB_FILE, false)]
        .into_iter()
        .filter_map(|(file, secret)| {
            let meta = std::fs::metadata(data.join(file)).ok()?;
            let mode = file_mode(&meta);
            let warning = (secret && mode & 0o077 != 0).then(|| "readable by others; chmod 600".to_string());
            Some(FileInfo { name: file.into(), bytes: meta.len(), mode: format!("{mode:o}"), warning })
        })
        .collect()
}

fn print_text(r: &Report) {
    println!("data dir:          {}", r.data_dir);
    println!("server public key: {}", r.server_public_key.as_deref().unwrap_or("(unreadable)"));
    println!("tokens:            {}", r.tokens.len());
    for t in &r.tokens {
        println!("  {}  {:<5}  created {}  {}", t.id, t.role, t.created_unix_ms, t.label);
    }
    for f in &r.files {
        println!(
            "file {:<17} {} bytes, mode {}{}",
            f.name,
            f.bytes,
            f.mode,
            f.warning.as_ref().map_or(String::new(), |w| format!("  WARNING: {w}"))
        );
    }
    for s in &r.snapshots {
        match (s.cut_seq, s.entries) {
            (Some(cut), Some(entries)) => println!(
                "snapshot {}  {} bytes  cut seq {cut}  {entries} entries  {} shards  created {}  crc {}",
                s.file,
                s.bytes,
                s.shards.unwrap_or(0),
                s.created_unix_ms.unwrap_or(0),
                s.crc
            ),
            _ => println!("snapshot {}  {} bytes  {}", s.file, s.bytes, s.crc),
        }
    }
    for s in &r.segments {
        let range = match (s.records, s.last_seq) {
            (Some(0), _) => "no records".to_string(),
            (Some(n), Some(last)) => format!("{n} records, seq {}..={last}", last + 1 - n),
            _ => "unread".to_string(),
        };
        println!("log      {}  {} bytes  first seq {}  {range}  crc {}", s.file, s.bytes, s.first_seq, s.crc);
    }
    for (file, bytes) in &r.leftovers {
        println!(
            "leftover {file}  {bytes} bytes  temp file of a snapshot a crash interrupted; \
             the server removes it at start, as does `compact`"
        );
    }
    if let (Some(keys), Some(expired)) = (r.keys, r.expired_keys) {
        println!(
            "keys:              {keys} live, {expired} expired (dropped at the next start), {} value bytes",
            r.value_bytes.unwrap_or(0)
        );
    }
    if let Some(p) = &r.problem {
        println!("PROBLEM:           {p}");
    }
    if let Some(keys) = &r.key_list {
        for k in keys {
            let ttl = match k.expires_at_unix_ms {
                Some(_) if k.expired => "  (expired)".to_string(),
                Some(at) => format!("  expires {at}"),
                None => String::new(),
            };
            println!("  {}  {} bytes  version {}{ttl}", k.key, k.value_bytes, k.version);
        }
    }
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> u32 {
    0o600
}
