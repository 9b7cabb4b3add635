//! `erlmcp token create --name N --scope S... [--expires 30d] | list |
//! revoke NAME`: static API tokens, written straight into the database of
//! the data directory, beside a running daemon (SQLite serializes the
//! writes; the daemon looks tokens up on every request, so a revocation
//! holds from its next request on). With replication on, the change is
//! recorded for the daemon to ship to the standby, and refused on a
//! standby: run it on the primary.

use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

use super::CliError;
use super::output;
use crate::config::Config;
use crate::exit;
use crate::mcp::grant;
use crate::node;
use crate::store::tokens::{self, Token};

#[derive(Args, Debug)]
pub(super) struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Directory of the database (default: $STATE_DIRECTORY or ./erlmcp-data).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TokenAction {
    /// Make a token and print its secret, once (on stdout; nothing else is).
    Create {
        /// A name for the token: letters, digits, `_`, `-`, `.`.
        #[arg(long)]
        name: String,
        /// What it may do: `*`, `ops`, `<toolset>:read`, `<toolset>:write`,
        /// `tool:<name>`; repeat the flag for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Valid for this long (`90d`, `12h`); without it, until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token; it is refused from the next request on.
    Revoke { name: String },
}

/// What `create` prints with `--json`.
#[derive(Serialize)]
struct Created<'a> {
    #[serde(flatten)]
    token: &'a Token,
    secret: &'a str,
}

pub(super) fn run(args: TokenArgs) -> Result<(), CliError> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    let out = super::runtime()?.block_on(dispatch(&config, args.action, args.json));
    if let Err(e) = &out {
        output::print_failure(e, args.json);
    }
    out
}

async fn dispatch(config: &Config, action: TokenAction, json: bool) -> Result<(), CliError> {
    let now = crate::clock::now_secs();
    match action {
        TokenAction::Create {
            name,
            scopes,
            expires,
        } => {
            check_name(&name)?;
            for s in &scopes {
                grant::check_scope(s).map_err(|message| CliError::Other {
                    message,
                    code: exit::USAGE,
                })?;
            }
            let token = Token {
                name,
                scopes,
                created_at: now,
                expires_at: expires.map(|d| now.saturating_add(d.as_secs() as i64)),
                revoked_at: None,
            };
            let secret = tokens::new_secret();
            let hash = tokens::digest(&secret);
            let store = node::open_beside(config).await?;
            let t = token.clone();
            store
                .write(move |tx| tokens::insert(tx, &t, &hash))
                .await
                .map_err(node::NodeError::from)?;
            if json {
                output::print(
                    &Created {
                        token: &token,
                        secret: &secret,
                    },
                    true,
                    |_| {},
                );
            } else {
                eprintln!(
                    "token {} created ({}); its secret follows and is not shown again:",
                    token.name,
                    describe(&token, now)
                );
                println!("{secret}");
            }
        }
        TokenAction::List => {
            let store = node::open_beside(config).await?;
            let list = store
                .read(tokens::list)
                .await
                .map_err(node::NodeError::from)?;
            output::print(&list, json, |l| print_list(l, now));
        }
        TokenAction::Revoke { name } => {
            let store = node::open_beside(config).await?;
            let n = name.clone();
            let found = store
                .write(move |tx| tokens::revoke(tx, &n, now))
                .await
                .map_err(node::NodeError::from)?;
            if !found {
                return Err(CliError::Other {
                    message: format!("no token named {name:?}"),
                    code: exit::NO_INPUT,
                });
            }
            output::print(&serde_json::json!({ "revoked": name }), json, |_| {
                println!("token {name} revoked")
            });
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CliError::Other {
            message: format!(
                "invalid token name {name:?}: 1 to 64 letters, digits, `_`, `-` or `.`"
            ),
            code: exit::USAGE,
        })
    }
}

fn describe(t: &Token, now: i64) -> String {
    let expiry = match t.expires_at {
        Some(e) => format!("expires {}", crate::clock::rfc3339(e)),
        None => "no expiry".into(),
    };
    format!("scopes {}, {expiry}, {}", t.scopes.join(" "), t.state(now))
}

fn print_list(list: &[Token], now: i64) {
    if list.is_empty() {
        println!("no tokens");
        return;
    }
    println!(
        "{:<20} {:<8} {:<21} {:<21} SCOPES",
        "NAME", "STATE", "CREATED", "EXPIRES"
    );
    for t in list {
        println!(
            "{:<20} {:<8} {:<21} {:<21} {}",
            t.name,
            t.state(now),
            crate::clock::rfc3339(t.created_at),
            t.expires_at.map_or("-".into(), crate::clock::rfc3339),
            t.scopes.join(" ")
        );
    }
}
