//! `highload api-key …` creates, lists and revokes API keys, and
//! `highload account create` creates accounts, in the configured database
//! (the same `DATABASE_URL`, `DB_*` or `SQLITE_PATH` as the server),
//! migrating it first as the server would.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use uuid::Uuid;

use super::api_key::{KeyStore, NewKey};
use secrecy::SecretString;

use super::accounts;
use super::{Role, Scope, Scopes};
use crate::config::DatabaseConfig;
use crate::store;

/// Manage the API keys of AUTH_MODE=api-key.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it, once: only its SHA-256 is stored
    Create {
        /// What the key is for (shown by `list`)
        #[arg(long)]
        name: String,
        /// Scopes, comma-separated: read (GET), write (POST, PUT), admin (DELETE, and all else)
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
        scope: Vec<Scope>,
    },
    /// List every key (id, name, first characters, scopes, created, revoked)
    List,
    /// Revoke a key by id; servers stop accepting it within API_KEY_CACHE_TTL
    Revoke {
        /// The key's id, as `create` and `list` print it
        id: Uuid,
    },
}

/// Manage the accounts of AUTH_MODE=accounts.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an active account (the first admin, say). The password comes from ACCOUNT_PASSWORD,
    /// else from the first line of standard input; 8 to 128 characters
    Create {
        /// The login email
        #[arg(long)]
        email: String,
        /// admin (every scope), user (read and write) or readonly (read)
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: Role,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        last_name: String,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw.trim())
        .ok_or_else(|| format!("unknown role {raw:?}; use admin, user or readonly"))
}

/// Runs the command, printing the account on standard output.
pub async fn run_account(database: &DatabaseConfig, command: AccountCommand) -> anyhow::Result<()> {
    let AccountCommand::Create {
        email,
        role,
        first_name,
        last_name,
    } = command;
    let password = match std::env::var("ACCOUNT_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("failed to read the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let password = SecretString::from(password);
    let opened = open_migrated(database).await?;
    let result = accounts::create_account(
        opened.accounts.as_ref(),
        &email,
        &first_name,
        &last_name,
        role,
        &password,
    )
    .await
    .map_err(|err| anyhow::anyhow!("{err}"));
    opened.store.close().await;
    let account = result?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "id:    {}", account.id)?;
    writeln!(out, "email: {}", account.email)?;
    writeln!(out, "role:  {}", account.role)?;
    Ok(())
}

/// The configured database on one connection, its schema brought up to
/// date as the server does at start (closed again if that fails).
async fn open_migrated(database: &DatabaseConfig) -> anyhow::Result<store::Opened> {
    let opened = store::open(database, 1).await?;
    if let Err(err) = opened.store.migrate().await {
        opened.store.close().await;
        return Err(anyhow::Error::new(err).context("failed to migrate the database"));
    }
    Ok(opened)
}

fn parse_scope(raw: &str) -> Result<Scope, String> {
    Scope::parse(raw.trim())
        .ok_or_else(|| format!("unknown scope {raw:?}; use read, write or admin"))
}

/// Runs the command, printing its result on standard output.
pub async fn run(database: &DatabaseConfig, command: ApiKeyCommand) -> anyhow::Result<()> {
    let opened = open_migrated(database).await?;
    let result = execute(&KeyStore::new(Arc::clone(&opened.api_keys)), command).await;
    opened.store.close().await;
    result
}

async fn execute(keys: &KeyStore, command: ApiKeyCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        ApiKeyCommand::Create { name, scope } => {
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be blank");
            anyhow::ensure!(
                !name.chars().any(char::is_control),
                "--name must not hold control characters (escapes, newlines)"
            );
            let key = NewKey::generate(name, scope.into_iter().collect::<Scopes>())?;
            keys.insert(&key).await?;
            writeln!(out, "id:     {}", key.record.id)?;
            writeln!(out, "name:   {}", key.record.name)?;
            writeln!(out, "scopes: {}", key.record.scopes)?;
            writeln!(out, "key:    {}", key.secret)?;
            writeln!(
                out,
                "\nStore the key now: it is not shown again (only its SHA-256 is kept)."
            )?;
        }
        ApiKeyCommand::List => {
            writeln!(
                out,
                "{:<36}  {:<12}  {:<16}  {:<20}  {:<20}  NAME",
                "ID", "KEY", "SCOPES", "CREATED", "REVOKED"
            )?;
            let time =
                |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            for key in keys.list().await? {
                writeln!(
                    out,
                    "{:<36}  {:<12}  {:<16}  {:<20}  {:<20}  {}",
                    key.id,
                    format!("{}…", key.shown),
                    key.scopes.to_string(),
                    time(key.created_at),
                    key.revoked_at.map_or_else(|| "-".to_owned(), time),
                    // A name written to the table by other means shows its
                    // control characters escaped: an escape sequence or a
                    // newline cannot fake a row or recolour the terminal.
                    key.name.escape_debug()
                )?;
            }
        }
        ApiKeyCommand::Revoke { id } => {
            anyhow::ensure!(
                keys.revoke(id).await?,
                "no key with id {id}, or it is revoked already"
            );
            writeln!(out, "revoked {id}")?;
        }
    }
    Ok(())
}
