//! `cryptomem token add|list|revoke`: online through an admin connection, or
//! offline on a data dir with `--data` (a running server picks the change up
//! within a second).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cryptomem_client::Client;
use cryptomem_server::auth::{HashParams, Role, TokenRecord, TokenTable, new_record};
use cryptomem_server::server::TOKENS_FILE;

use super::ClientOpts;
use super::commands::connect;

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once.
    Add {
        #[command(flatten)]
        target: Target,
        /// What the token may do.
        #[arg(long)]
        role: Role,
        /// Limit the token to keys starting with this prefix (repeatable).
        #[arg(long = "prefix")]
        prefixes: Vec<String>,
        /// A note for humans, e.g. the application's name.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List tokens (ids, roles, prefixes, labels; never secrets).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token by id; open connections using it fail on their next request.
    Revoke {
        #[command(flatten)]
        target: Target,
        /// The token id (the part between `cmt_` and the second `_`).
        id: String,
    },
}

/// Where the table is: offline (`--data`) or online (the client options).
#[derive(Debug, clap::Args)]
struct Target {
    /// Edit the token table of this data dir directly instead of asking a server.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    opts: ClientOpts,
}

pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TokenCommand::Add { target, role, prefixes, label } => {
            let raw = target.opts.raw;
            let token = match &target.data {
                Some(dir) => {
                    let token = cryptomem_wire::Token::generate()?;
                    let now = cryptomem_server::store::Clock::System.now_ms();
                    let record =
                        new_record(&token, role, prefixes.clone(), label.clone(), HashParams::default(), now).await?;
                    edit_offline(dir, |t| t.insert(record))?;
                    token
                }
                None => admin(&target.opts).await?.token_add(role, prefixes.clone(), label.clone()).await?,
            };
            if raw {
                println!("{}", token.expose().as_str());
            } else {
                println!("token:    {}", token.expose().as_str());
                println!("id:       {}", token.id());
                println!("role:     {}", role.as_str());
                println!("prefixes: {}", if prefixes.is_empty() { "(every key)".into() } else { prefixes.join(" ") });
                println!("label:    {label}");
                println!("shown once: only its argon2id hash is kept");
            }
        }
        TokenCommand::List { target } => {
            let rows: Vec<(String, Role, Vec<String>, String, u64)> = match &target.data {
                Some(dir) => load(dir)?
                    .records()
                    .iter()
                    .map(|r: &TokenRecord| {
                        (r.id.clone(), r.role, r.prefixes.clone(), r.label.clone(), r.created_unix_ms)
                    })
                    .collect(),
                None => admin(&target.opts)
                    .await?
                    .token_list()
                    .await?
                    .into_iter()
                    .map(|t| (t.id, t.role, t.prefixes, t.label, t.created_unix_ms))
                    .collect(),
            };
            println!("{:<12}  {:<5}  {:<24}  {:<13}  label", "id", "role", "prefixes", "created_ms");
            for (id, role, prefixes, label, created) in rows {
                let prefixes = if prefixes.is_empty() { "*".into() } else { prefixes.join(",") };
                println!("{id:<12}  {:<5}  {prefixes:<24}  {created:<13}  {label}", role.as_str());
            }
        }
        TokenCommand::Revoke { target, id } => {
            let existed = match &target.data {
                Some(dir) => edit_offline(dir, |t| t.remove(&id))?,
                None => admin(&target.opts).await?.token_revoke(&id).await?,
            };
            if !existed {
                bail!("no token with id {id}");
            }
            println!("revoked {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn admin(opts: &ClientOpts) -> anyhow::Result<Client> {
    connect(opts, false).await
}

fn load(dir: &Path) -> anyhow::Result<TokenTable> {
    let path = dir.join(TOKENS_FILE);
    TokenTable::load(&path).with_context(|| format!("{} has no readable token table", dir.display()))
}

fn edit_offline<R>(dir: &Path, change: impl FnOnce(&mut TokenTable) -> R) -> anyhow::Result<R> {
    let mut table = load(dir)?;
    let result = change(&mut table);
    table.save(&dir.join(TOKENS_FILE))?;
    Ok(result)
}
