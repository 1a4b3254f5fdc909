//! The client subcommands: connect with the credentials, run one command,
//! print the answer like redis-cli (or bare with --raw).

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cryptomem_client::Credentials;
use cryptomem_client::value_crypto::{Keyring, ValueKey};
use cryptomem_client::{Client, ClientConfig, HiddenNames, KeyTtl, SetOptions, ShardedClient, ShardedConfig};
use cryptomem_util::units::parse_duration;
use cryptomem_wire::Token;
use cryptomem_wire::secure::parse_public_key;

use super::ClientOpts;
use super::keys::load_keyring;

/// Exit status of `get --raw` for a missing key (an empty value exits 0).
pub const MISSING_KEY_STATUS: u8 = 1;

/// Environment variable that overrides the credentials file's token.
const TOKEN_ENV: &str = "CRYPTOMEM_TOKEN";

/// One client command.
pub enum Op {
    Ping,
    Get(String),
    Getv(String),
    Set { key: String, value: String, ttl: Option<String>, nx: bool, xx: bool, if_version: Option<u64> },
    Del(Vec<String>, Option<u64>),
    Exists(String),
    Ttl(String),
    Expire(String, String),
    Persist(String),
    Mget(Vec<String>),
    Mset(Vec<String>, Option<String>),
    Scan(String, u32),
    Dbsize,
    Info,
    Save,
    ConfigGet(String),
    ConfigSet(String, String),
}

impl Op {
    fn needs_value_key(&self) -> bool {
        matches!(self, Self::Get(_) | Self::Getv(_) | Self::Set { .. } | Self::Mget(_) | Self::Mset(..))
    }
}

fn client_config(opts: &ClientOpts) -> anyhow::Result<ClientConfig> {
    let env_token = std::env::var(TOKEN_ENV).ok();
    let file = if opts.server.is_some() && opts.server_key.is_some() && env_token.is_some() {
        None
    } else {
        if !opts.credentials.exists() {
            bail!(
                "no credentials file at {}: start the server once with `cryptomem serve --data ./data` to create it, \
                 or pass --credentials (or --server, --server-key and {TOKEN_ENV})",
                opts.credentials.display()
            );
        }
        Some(Credentials::load(&opts.credentials)?)
    };
    let server = match &opts.server {
        Some(s) => s.clone(),
        None => file.as_ref().map(|f| f.server.clone()).context("no server address")?,
    };
    let key = match &opts.server_key {
        Some(k) => parse_public_key(k).context("--server-key")?,
        None => file.as_ref().map(|f| f.server_public_key).context("no server public key")?,
    };
    let token = match &env_token {
        Some(t) => Token::parse(t).with_context(|| format!("{TOKEN_ENV} holds a malformed token"))?,
        None => file.as_ref().map(|f| f.token.clone()).context("no token")?,
    };
    let mut config = ClientConfig::new(server, key, token);
    // --server-key names the one key to pin; otherwise the file's previous keys follow.
    if opts.server_key.is_none() {
        config.previous_server_public_keys = file.map(|f| f.previous_server_public_keys).unwrap_or_default();
    }
    Ok(config)
}

fn ttl_arg(ttl: Option<&str>) -> anyhow::Result<Option<std::time::Duration>> {
    ttl.map(|t| parse_duration(t).map_err(anyhow::Error::msg).context("--ttl"))
        .transpose()?
        .map(|d| if d.is_zero() { bail!("--ttl must be more than 0") } else { Ok(d) })
        .transpose()
}

/// The value keys and hidden-names setting the options ask for (`values`:
/// the command reads or writes values).
fn value_settings(opts: &ClientOpts, values: bool) -> anyhow::Result<(Option<Keyring>, Option<HiddenNames>)> {
    if !values && !opts.hide_key_names {
        return Ok((None, None));
    }
    let keyring = load_keyring(opts)?;
    let names = if opts.hide_key_names {
        let separator = u8::try_from(opts.key_separator)
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| anyhow::anyhow!("--key-separator must be one ASCII character"))?;
        let names_key = match &opts.names_key_file {
            Some(path) => ValueKey::load(path).with_context(|| format!("names key {}", path.display()))?,
            None => keyring.current().clone(),
        };
        Some(HiddenNames::new(&names_key, separator))
    } else {
        None
    };
    Ok((Some(keyring), names))
}

/// Connects to one server with the options' credentials, and the value key
/// if `values`.
pub async fn connect(opts: &ClientOpts, values: bool) -> anyhow::Result<Client> {
    if opts.cluster.is_some() {
        bail!("this command manages one server: pass that server's --credentials instead of --cluster");
    }
    let mut config = client_config(opts)?;
    let (keyring, names) = value_settings(opts, values)?;
    config.keyring = keyring;
    config.hidden_names = names;
    let server = config.server.clone();
    let from = match &opts.server {
        Some(_) => "--server".to_string(),
        None => opts.credentials.display().to_string(),
    };
    Client::connect(config)
        .await
        .with_context(|| format!("cannot reach cryptomem at {server} (the address from {from})"))
}

/// One server, or a cluster whose servers are reached as their keys need them.
enum Target {
    One(Client),
    Cluster(ShardedClient),
}

async fn target(opts: &ClientOpts, values: bool) -> anyhow::Result<Target> {
    let Some(path) = &opts.cluster else { return Ok(Target::One(connect(opts, values).await?)) };
    let mut config = ShardedConfig::from_cluster_file(path)?;
    let (keyring, names) = value_settings(opts, values)?;
    if let Some(keyring) = keyring {
        config = config.with_keyring(keyring);
    }
    if let Some(names) = names {
        config = config.with_hidden_names(names);
    }
    Ok(Target::Cluster(ShardedClient::new(config)?))
}

/// Runs the same call on a [`Client`] or a [`ShardedClient`], which share
/// their method names and signatures.
macro_rules! on_target {
    ($target:expr, $c:ident => $call:expr) => {
        match $target {
            Target::One($c) => $call,
            Target::Cluster($c) => $call,
        }
    };
}

/// `name: answer` on one line, for short answers from each server.
fn name_and_answer(name: &str, answer: &str) {
    println!("{name}: {answer}");
}

/// Runs `call` on each server of a cluster in turn and prints each answer
/// with `show`; fails after the others if any server failed.
async fn each_server<'a, F, Fut>(cluster: &'a ShardedClient, call: F, show: fn(&str, &str)) -> anyhow::Result<()>
where
    F: Fn(&'a Client) -> Fut,
    Fut: std::future::Future<Output = cryptomem_client::Result<String>>,
{
    let mut failed = 0;
    for (name, client) in cluster.servers() {
        match call(client).await {
            Ok(answer) => show(name, &answer),
            Err(e) => {
                eprintln!("{name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} servers failed", cluster.servers().count());
    }
    Ok(())
}

pub async fn run(opts: &ClientOpts, op: Op) -> anyhow::Result<ExitCode> {
    let target = target(opts, op.needs_value_key()).await?;
    let out = Printer { raw: opts.raw };
    match op {
        Op::Ping => {
            on_target!(&target, c => c.ping().await)?;
            out.line("PONG");
        }
        Op::Get(key) => match on_target!(&target, c => c.get(&key).await)? {
            Some(v) => out.value(&v)?,
            // Bare output cannot tell a missing key from an empty value by
            // what it prints, so it tells by the exit status.
            None if out.raw => return Ok(ExitCode::from(MISSING_KEY_STATUS)),
            None => out.nil(),
        },
        Op::Getv(key) => match on_target!(&target, c => c.get_versioned(&key).await)? {
            Some((version, v)) => {
                if out.raw {
                    println!("{version}");
                } else {
                    print!("(version {version}) ");
                }
                out.value(&v)?;
            }
            None if out.raw => return Ok(ExitCode::from(MISSING_KEY_STATUS)),
            None => out.nil(),
        },
        Op::Set { key, value, ttl, nx, xx, if_version } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).context("reading the value from standard input")?;
                buf
            } else {
                value.into_bytes()
            };
            let mut options = SetOptions { ttl: ttl_arg(ttl.as_deref())?, ..SetOptions::default() };
            if nx {
                options = options.only_if_absent();
            }
            if xx {
                options = options.only_if_present();
            }
            if let Some(version) = if_version {
                let new = on_target!(&target, c => c.set_if_version(&key, &value, version, options).await)?;
                out.int(i64::try_from(new).unwrap_or(i64::MAX));
            } else if on_target!(&target, c => c.set_with(&key, &value, options).await)? {
                out.line("OK");
            } else {
                out.nil();
            }
        }
        Op::Del(keys, Some(version)) => {
            let [key] = keys.as_slice() else { bail!("del --if-version takes exactly one key") };
            out.int(i64::from(on_target!(&target, c => c.delete_if_version(key, version).await)?));
        }
        Op::Del(keys, None) => {
            let mut deleted = 0;
            for key in keys {
                deleted += i64::from(on_target!(&target, c => c.delete(&key).await)?);
            }
            out.int(deleted);
        }
        Op::Exists(key) => out.int(i64::from(on_target!(&target, c => c.exists(&key).await)?)),
        Op::Ttl(key) => match on_target!(&target, c => c.ttl(&key).await)? {
            KeyTtl::Missing if out.raw => out.int(-2),
            KeyTtl::Missing => out.nil(),
            KeyTtl::Persistent if out.raw => out.int(-1),
            KeyTtl::Persistent => out.line("(no expiry)"),
            KeyTtl::ExpiresIn(d) if out.raw => out.int(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            KeyTtl::ExpiresIn(d) => out.line(&format!("{:.3}s", d.as_secs_f64())),
        },
        Op::Expire(key, ttl) => {
            let ttl = ttl_arg(Some(&ttl))?.unwrap_or_default();
            out.int(i64::from(on_target!(&target, c => c.expire(&key, ttl).await)?));
        }
        Op::Persist(key) => out.int(i64::from(on_target!(&target, c => c.persist(&key).await)? == Some(true))),
        Op::Mget(keys) => {
            for (i, value) in on_target!(&target, c => c.mget(&keys).await)?.into_iter().enumerate() {
                if !out.raw {
                    print!("{}) ", i + 1);
                }
                match value {
                    Some(v) => out.value(&v)?,
                    None => out.nil(),
                }
            }
        }
        Op::Mset(flat, ttl) => {
            if flat.len() % 2 != 0 {
                bail!("mset takes KEY VALUE pairs; got an odd number of arguments");
            }
            let pairs: Vec<(String, String)> = flat.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            let ttl = ttl_arg(ttl.as_deref())?;
            on_target!(&target, c => c.mset(&pairs, ttl).await)?;
            out.line("OK");
        }
        Op::Scan(prefix, count) => on_target!(&target, c => {
            let mut scan = c.scan(prefix).page_size(count);
            while let Some(key) = scan.next().await? {
                out.value(&key)?;
            }
        }),
        Op::Dbsize => out.int(i64::try_from(on_target!(&target, c => c.dbsize().await)?).unwrap_or(i64::MAX)),
        Op::Info => match &target {
            Target::One(c) => print!("{}", c.info().await?),
            Target::Cluster(cluster) => {
                let show: fn(&str, &str) = |name, text| print!("# Server {name}\n{text}");
                each_server(cluster, Client::info, show).await?;
            }
        },
        Op::Save => match &target {
            Target::One(c) => {
                c.save().await?;
                out.line("OK");
            }
            Target::Cluster(cluster) => {
                each_server(cluster, |c| async move { c.save().await.map(|_| "OK".into()) }, name_and_answer).await?
            }
        },
        Op::ConfigGet(name) => match &target {
            Target::One(c) => out.line(&c.config_get(&name).await?),
            Target::Cluster(cluster) => each_server(cluster, |c| c.config_get(&name), name_and_answer).await?,
        },
        Op::ConfigSet(name, value) => match &target {
            Target::One(c) => {
                c.config_set(&name, &value).await?;
                out.line("OK");
            }
            Target::Cluster(cluster) => {
                let (name, value) = (name.as_str(), value.as_str());
                each_server(
                    cluster,
                    |c| async move { c.config_set(name, value).await.map(|()| "OK".into()) },
                    name_and_answer,
                )
                .await?
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

struct Printer {
    raw: bool,
}

impl Printer {
    fn line(&self, s: &str) {
        println!("{s}");
    }

    fn nil(&self) {
        println!("{}", if self.raw { "" } else { "(nil)" });
    }

    fn int(&self, n: i64) {
        if self.raw {
            println!("{n}");
        } else {
            println!("(integer) {n}");
        }
    }

    /// Raw: the bytes and a newline. Human: see [`human`].
    fn value(&self, v: &[u8]) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.raw {
            stdout.write_all(v)?;
            stdout.write_all(b"\n")?;
        } else {
            writeln!(stdout, "{}", human(v))?;
        }
        Ok(())
    }
}

/// A value as a terminal may safely show it: printable text as is; anything
/// with a control character (an escape sequence could recolour the terminal
/// or rewrite what was printed), invalid UTF-8, or nothing at all quoted,
/// with every control character and invalid byte escaped, as redis-cli does.
fn human(v: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(v) else {
        return format!("\"{}\"", v.escape_ascii());
    };
    if !text.is_empty() && !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn control_characters_are_escaped_and_quoted() {
        assert_eq!(human(b"plain text"), "plain text");
        assert_eq!(human("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(human(b"a\x1b[31mred"), "\"a\\x1b[31mred\"");
        assert_eq!(human(b"two\nlines\t\"q\" \\"), "\"two\\nlines\\t\\\"q\\\" \\\\\"");
        // C1 controls (U+009B is a one-character CSI on some terminals).
        assert_eq!(human("x\u{9b}31m".as_bytes()), "\"x\\u{009b}31m\"");
        assert_eq!(human(b"\xff\x1b"), "\"\\xff\\x1b\"");
        assert_eq!(human(b""), "\"\"");
        for b in 0u8..=255 {
            let shown = human(&[b'a', b]);
            assert!(!shown.chars().any(char::is_control), "byte {b:#x} printed as {shown:?}");
        }
    }
}
