//! Value key files for the CLI: `keygen`, and finding the keyring to use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cryptomem_client::value_crypto::{Keyring, ValueKey, generate_salt, parse_salt_file, salt_file_text};
use cryptomem_util::files::{PRIVATE_MODE, create_private_dir, write_atomic};

use super::ClientOpts;

/// Environment variable holding a passphrase to derive the value key from.
pub const PASSPHRASE_ENV: &str = "CRYPTOMEM_PASSPHRASE";

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write [default: value.key (or value.salt) in $XDG_CONFIG_HOME/cryptomem or ~/.config/cryptomem].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a salt file for a passphrase-derived key (CRYPTOMEM_PASSPHRASE) instead of a random key.
    #[arg(long)]
    passphrase: bool,
    /// Overwrite an existing file (values sealed with the old key become unreadable).
    #[arg(long)]
    force: bool,
}

fn config_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("cryptomem"))
}

fn default_file(name: &str) -> anyhow::Result<PathBuf> {
    config_dir().map(|d| d.join(name)).context("neither XDG_CONFIG_HOME nor HOME is set; pass the file path explicitly")
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.out {
        Some(p) => p.clone(),
        None => default_file(if args.passphrase { "value.salt" } else { "value.key" })?,
    };
    if path.exists() && !args.force {
        bail!(
            "refusing to overwrite {}: values sealed with it would become unreadable (use --force if you mean it)",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if args.passphrase {
        let salt = generate_salt()?;
        write_atomic(&path, salt_file_text(&salt).as_bytes(), PRIVATE_MODE)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote passphrase salt to {}", path.display());
        println!(
            "set {PASSPHRASE_ENV} to the passphrase; every client sharing data needs this salt file and passphrase"
        );
    } else {
        let key = ValueKey::generate()?;
        write_atomic(&path, key.to_key_file().as_bytes(), PRIVATE_MODE)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote value key {:08x} to {} (mode 0600)", key.id(), path.display());
        println!("back it up: values sealed with it cannot be read without it, and the server never has it");
    }
    Ok(ExitCode::SUCCESS)
}

/// The keyring the CLI seals and opens with: a passphrase-derived key when
/// CRYPTOMEM_PASSPHRASE is set, else the value key file.
pub fn load_keyring(opts: &ClientOpts) -> anyhow::Result<Keyring> {
    let current = if let Some(passphrase) = std::env::var_os(PASSPHRASE_ENV) {
        let salt_path = match &opts.salt_file {
            Some(p) => p.clone(),
            None => default_file("value.salt")?,
        };
        let text = std::fs::read_to_string(&salt_path).with_context(|| {
            format!("{PASSPHRASE_ENV} is set but the salt file {} cannot be read (create it with `cryptomem keygen --passphrase`)", salt_path.display())
        })?;
        let salt = parse_salt_file(&text).with_context(|| salt_path.display().to_string())?;
        ValueKey::from_passphrase(passphrase.as_encoded_bytes(), &salt)?
    } else {
        let path = match &opts.value_key_file {
            Some(p) => p.clone(),
            None => default_file("value.key")?,
        };
        if !path.exists() {
            bail!(
                "no value key at {}: create one with `cryptomem keygen`, or pass --value-key-file / set {PASSPHRASE_ENV}",
                path.display()
            );
        }
        ValueKey::load(&path)?
    };
    let previous =
        opts.previous_value_key_file.iter().map(|p| ValueKey::load(Path::new(p))).collect::<Result<Vec<_>, _>>()?;
    Ok(Keyring::new(current).with_previous(previous))
}
