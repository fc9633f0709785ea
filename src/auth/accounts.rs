//! Built-in accounts (`AUTH_MODE=accounts`), as the Go service's latest
//! version offers them: login with email and password for an access token
//! (an HS256 JWT with the Go service's claims, signed with `JWT_SECRET`)
//! and a refresh token; refresh; logout; profile. Stronger where it is
//! weak:
//!
//! - passwords are hashed with Argon2id; a bcrypt hash the Go service
//!   wrote is verified at login and replaced by an Argon2id one;
//! - a refresh token is stored only as its SHA-256 and replaced at every
//!   use; a replaced token presented again revokes its whole family (it was
//!   stolen, or the client is confused: either way, log in again);
//! - failed logins are counted per account and per client: past
//!   `LOGIN_MAX_FAILURES` within `LOGIN_LOCKOUT`, login answers 429 until
//!   the window ends;
//! - an unknown email is checked against a dummy hash, so that it takes
//!   as long to refuse as a wrong password.
//!
//! An access token stays valid until it expires, also after logout: it is
//! checked in memory, without a database read per request. Keep
//! `JWT_EXPIRATION` short; logout ends the refresh tokens, so no new access
//! token comes after it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use jsonwebtoken::{EncodingKey, Header};
use moka::sync::Cache;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

use super::Role;
use super::api_key::hash_of;
use crate::config::auth::AccountsConfig;
use crate::domain::{Email, PersonName, ValidationError};
use crate::store::{AccountBy, AccountRow, AccountTable, NewRefreshToken, Revoke};

/// The `iss` of the access tokens: the Go service's, so that whatever
/// checks its tokens accepts ours.
pub(crate) const ISSUER: &str = "highload-microservice";
/// Random bytes of a refresh token (hex in the token).
const REFRESH_TOKEN_BYTES: usize = 32;
/// Shortest password accepted for a new account (the Go service's).
pub(crate) const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted: hashing is paid per byte.
pub(crate) const MAX_PASSWORD_LEN: usize = 128;
/// Clients and accounts whose failures are remembered at once.
const LIMITER_ENTRIES: u64 = 100_000;

/// What a login or a refresh answers, as the Go service does.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// HS256 JWT: `user_id`, `email`, `role`, `exp`, `iat`, `iss`, `sub`.
    pub(crate) access_token: String,
    /// Send it to /api/v1/auth/refresh for the next pair; it works once.
    pub(crate) refresh_token: String,
    #[schema(example = "Bearer")]
    pub(crate) token_type: &'static str,
    /// Seconds until the access token expires.
    pub(crate) expires_in: u64,
    pub(crate) user: AccountView,
}

/// An account, as the API shows it (never its password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct AccountView {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    #[schema(example = "user")]
    pub(crate) role: String,
    pub(crate) is_active: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl From<&AccountRow> for AccountView {
    fn from(row: &AccountRow) -> Self {
        Self {
            id: row.id,
            email: row.email.clone(),
            first_name: row.first_name.clone(),
            last_name: row.last_name.clone(),
            role: row.role.clone(),
            is_active: row.is_active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    /// Unknown email, wrong password or inactive account: the client is
    /// not told which.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed logins for this account or from this client.
    #[error("too many failed logins; retry in {0:?}")]
    Throttled(Duration),
    /// Unknown, expired, used or revoked.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("an account with this email exists")]
    EmailTaken,
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("the account store is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

fn unavailable(context: &'static str) -> impl FnOnce(sqlx::Error) -> AccountError {
    move |err| AccountError::Unavailable(anyhow::Error::new(err).context(context))
}

/// The accounts and their tokens.
pub(crate) struct Accounts {
    table: Arc<dyn AccountTable>,
    signing: EncodingKey,
    settings: AccountsConfig,
    failures: Cache<String, Arc<AtomicU32>>,
    /// Verified when the email is unknown, so that it costs what a wrong
    /// password costs.
    dummy_hash: String,
}

impl Accounts {
    pub(crate) fn new(
        table: Arc<dyn AccountTable>,
        settings: AccountsConfig,
    ) -> anyhow::Result<Self> {
        let dummy_hash = hash_password("not the password of any account")?;
        Ok(Self {
            table,
            signing: EncodingKey::from_secret(settings.jwt_secret.expose_secret().as_bytes()),
            failures: Cache::builder()
                .max_capacity(LIMITER_ENTRIES)
                .time_to_live(settings.lockout)
                .build(),
            settings,
            dummy_hash,
        })
    }

    /// Checks an email and password; a new session when they match an
    /// active account.
    pub(crate) async fn login(
        &self,
        email: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<Session, AccountError> {
        // An address that is not one matches no account; its canonical
        // form is the one accounts are stored under.
        let email = Email::parse("email", email)
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|_| email.trim().to_lowercase());
        let keys = [
            format!("account:{email}"),
            format!(
                "client:{}",
                client.map_or_else(String::new, |ip| ip.to_string())
            ),
        ];
        if keys
            .iter()
            .any(|key| self.failures_of(key) >= self.settings.max_failures)
        {
            return Err(AccountError::Throttled(self.settings.lockout));
        }
        let found = self
            .table
            .find_account(AccountBy::Email(&email))
            .await
            .map_err(unavailable("failed to look up the account"))?;
        let stored = found
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |a| a.password_hash.clone());
        let attempt = password.to_owned();
        let verdict = tokio::task::spawn_blocking(move || verify_password(&attempt, &stored))
            .await
            .map_err(|e| AccountError::Unavailable(e.into()))?;
        let account = match (found, verdict) {
            (Some(account), Verdict::Match { rehash }) if account.is_active => {
                if rehash {
                    self.upgrade_hash(&account, password).await;
                }
                account
            }
            _ => {
                for key in &keys {
                    self.failures
                        .get_with(key.clone(), || Arc::new(AtomicU32::new(0)))
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(email, client = ?client, "login refused");
                return Err(AccountError::InvalidCredentials);
            }
        };
        self.failures.invalidate(&keys[0]);
        tracing::info!(account = %account.id, "logged in");
        self.start_session(&account, Uuid::now_v7()).await
    }

    /// A new session for the holder of a refresh token, which works once.
    pub(crate) async fn refresh(&self, token: &str) -> Result<Session, AccountError> {
        let hash = hash_of(token);
        let now = Utc::now();
        let Some(used) = self
            .table
            .use_refresh_token(&hash, now)
            .await
            .map_err(unavailable("failed to use the refresh token"))?
        else {
            // Unknown, expired, revoked, or used before: the last is a
            // replay, and ends the family.
            if let Some(found) = self
                .table
                .find_refresh_token(&hash)
                .await
                .map_err(unavailable("failed to look up the refresh token"))?
                && found.used
                && !found.revoked
            {
                tracing::warn!(
                    account = %found.user_id,
                    "a used refresh token came again: its family is revoked"
                );
                self.table
                    .revoke_refresh_tokens(Revoke::Family(found.family), now)
                    .await
                    .map_err(unavailable("failed to revoke the token family"))?;
            }
            return Err(AccountError::InvalidRefreshToken);
        };
        let account = self
            .table
            .find_account(AccountBy::Id(used.user_id))
            .await
            .map_err(unavailable("failed to look up the account"))?
            .filter(|account| account.is_active)
            .ok_or(AccountError::InvalidRefreshToken)?;
        self.start_session(&account, used.family).await
    }

    /// Ends the refresh token's family, or with none given every refresh
    /// token of the account.
    pub(crate) async fn logout(
        &self,
        account: Uuid,
        refresh_token: Option<&str>,
    ) -> Result<(), AccountError> {
        let now = Utc::now();
        match refresh_token {
            Some(token) => {
                let found = self
                    .table
                    .find_refresh_token(&hash_of(token))
                    .await
                    .map_err(unavailable("failed to look up the refresh token"))?;
                match found {
                    Some(found) if found.user_id == account => self
                        .table
                        .revoke_refresh_tokens(Revoke::Family(found.family), now)
                        .await
                        .map_err(unavailable("failed to revoke the token family"))?,
                    _ => return Err(AccountError::InvalidRefreshToken),
                }
            }
            None => self
                .table
                .revoke_refresh_tokens(Revoke::Account(account), now)
                .await
                .map_err(unavailable("failed to revoke the refresh tokens"))?,
        }
        tracing::info!(%account, "logged out");
        Ok(())
    }

    fn failures_of(&self, key: &str) -> u32 {
        self.failures
            .get(key)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Replaces a bcrypt hash (or Argon2 parameters weaker than today's)
    /// by an Argon2id hash of the same password; a failure only logs.
    async fn upgrade_hash(&self, account: &AccountRow, password: &str) {
        let password = password.to_owned();
        let hashed = tokio::task::spawn_blocking(move || hash_password(&password)).await;
        let Ok(Ok(new)) = hashed else {
            tracing::warn!(account = %account.id, "could not hash a password again");
            return;
        };
        match self
            .table
            .replace_password_hash(account.id, &account.password_hash, &new, Utc::now())
            .await
        {
            Ok(()) => tracing::info!(account = %account.id, "password hash upgraded to Argon2id"),
            Err(err) => {
                tracing::warn!(account = %account.id, error = %err, "could not store an upgraded password hash")
            }
        }
    }

    async fn start_session(
        &self,
        account: &AccountRow,
        family: Uuid,
    ) -> Result<Session, AccountError> {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| AccountError::Unavailable(anyhow::anyhow!("no randomness: {e}")))?;
        let refresh_token = hex(&bytes);
        let now = Utc::now();
        self.table
            .insert_refresh_token(NewRefreshToken {
                hash: &hash_of(&refresh_token),
                family,
                user_id: account.id,
                created_at: now,
                expires_at: now + self.settings.refresh_ttl,
            })
            .await
            .map_err(unavailable("failed to store the refresh token"))?;
        Ok(Session {
            access_token: self.access_token(account, now)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: self.settings.access_ttl.as_secs(),
            user: AccountView::from(account),
        })
    }

    fn access_token(
        &self,
        account: &AccountRow,
        now: DateTime<Utc>,
    ) -> Result<String, AccountError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            user_id: String,
            email: &'a str,
            role: &'a str,
            exp: i64,
            iat: i64,
            iss: &'static str,
            sub: String,
        }
        let claims = Claims {
            user_id: account.id.to_string(),
            email: &account.email,
            role: &account.role,
            exp: (now + self.settings.access_ttl).timestamp(),
            iat: now.timestamp(),
            iss: ISSUER,
            sub: account.id.to_string(),
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.signing).map_err(|e| {
            AccountError::Unavailable(anyhow::Error::new(e).context("failed to sign a token"))
        })
    }
}

/// Creates an active account (the first admin comes from the command
/// line; there is no sign-up).
pub(crate) async fn create_account(
    table: &dyn AccountTable,
    email: &str,
    first_name: &str,
    last_name: &str,
    role: Role,
    password: &SecretString,
) -> Result<AccountView, AccountError> {
    let email = Email::parse("email", email)?;
    let first_name = name("first_name", first_name)?;
    let last_name = name("last_name", last_name)?;
    check_password(password.expose_secret())?;
    let password = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(password.expose_secret()))
        .await
        .map_err(|e| AccountError::Unavailable(e.into()))?
        .map_err(AccountError::Unavailable)?;
    let now = Utc::now();
    let row = AccountRow {
        id: Uuid::now_v7(),
        email: email.as_str().to_owned(),
        first_name,
        last_name,
        role: role.as_str().to_owned(),
        is_active: true,
        password_hash: hash,
        created_at: now,
        updated_at: now,
    };
    if !table
        .insert_account(&row)
        .await
        .map_err(unavailable("failed to store the account"))?
    {
        return Err(AccountError::EmailTaken);
    }
    Ok(AccountView::from(&row))
}

fn name(field: &'static str, raw: &str) -> Result<String, ValidationError> {
    if raw.is_empty() {
        return Ok(String::new());
    }
    Ok(PersonName::parse(field, raw)?.as_str().to_owned())
}

fn check_password(password: &str) -> Result<(), ValidationError> {
    let len = password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
        return Err(ValidationError::new(
            "password",
            format!("must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"),
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Argon2id hash of `password` (PHC string, the crate's default
/// parameters: 19 MiB, 2 passes).
pub(crate) fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("failed to hash a password: {e}"))
}

/// Whether a password matches a stored hash.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It matches; `rehash` when the hash should be replaced by an
    /// Argon2id one of today's parameters.
    Match {
        rehash: bool,
    },
    NoMatch,
}

fn verify_password(password: &str, stored: &str) -> Verdict {
    if stored.starts_with("$2") {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verdict::Match { rehash: true },
            _ => Verdict::NoMatch,
        };
    }
    let Ok(hash) = PasswordHash::new(stored) else {
        return Verdict::NoMatch;
    };
    if Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_err()
    {
        return Verdict::NoMatch;
    }
    let current = argon2::Params::default();
    let rehash = hash.algorithm != argon2::Algorithm::Argon2id.ident()
        || argon2::Params::try_from(&hash).map_or(true, |params| {
            (params.m_cost(), params.t_cost(), params.p_cost())
                != (current.m_cost(), current.t_cost(), current.p_cost())
        });
    Verdict::Match { rehash }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert_eq!(
            verify_password("correct horse", &a),
            Verdict::Match { rehash: false }
        );
        assert_eq!(verify_password("wrong horse", &a), Verdict::NoMatch);
        assert_eq!(
            verify_password("correct horse", "garbage"),
            Verdict::NoMatch
        );
    }

    #[test]
    fn a_bcrypt_hash_verifies_and_asks_to_be_replaced() {
        let go = bcrypt::hash("s3cret-pass", 4).unwrap();
        assert_eq!(
            verify_password("s3cret-pass", &go),
            Verdict::Match { rehash: true }
        );
        assert_eq!(verify_password("other-pass", &go), Verdict::NoMatch);
    }

    #[test]
    fn passwords_have_a_length_range() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }
}
