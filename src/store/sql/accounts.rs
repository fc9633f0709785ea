//! The `auth_users` and `auth_refresh_tokens` tables (migration
//! `accounts`), written once for both dialects: what `auth::accounts`
//! stores of an account and of its refresh tokens. Look-ups that decide a
//! login read the writer, so that a password just changed or a token just
//! used is seen at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::database::HasStatementCache;
use sqlx::migrate::Migrate;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::SqlStore;
use super::dialect::Dialect;

/// An account as the table holds it.
#[derive(Debug, Clone)]
pub(crate) struct AccountRow {
    pub(crate) id: Uuid,
    pub(crate) email: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) role: String,
    pub(crate) is_active: bool,
    /// Argon2id (PHC string), or bcrypt (`$2a$`, `$2b$`, `$2y$`) when the
    /// Go service wrote it.
    pub(crate) password_hash: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

/// A refresh token as the table holds it (its hash is the key).
#[derive(Debug, Clone)]
pub(crate) struct RefreshTokenRow {
    pub(crate) family: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) used: bool,
    pub(crate) revoked: bool,
}

/// A refresh token to store.
pub(crate) struct NewRefreshToken<'a> {
    /// The token's SHA-256, in hex.
    pub(crate) hash: &'a str,
    pub(crate) family: Uuid,
    pub(crate) user_id: Uuid,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
}

/// How an account is looked up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AccountBy<'a> {
    Id(Uuid),
    /// In its canonical form.
    Email(&'a str),
}

/// Which refresh tokens to revoke.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Revoke {
    /// Every token of a family (one login and its refreshes).
    Family(Uuid),
    /// Every token of an account.
    Account(Uuid),
}

/// The account tables. Errors are the driver's: each caller says what
/// failed.
#[async_trait]
pub(crate) trait AccountTable: Send + Sync + 'static {
    /// The account with this id, or this (canonical) email.
    async fn find_account(&self, by: AccountBy<'_>) -> Result<Option<AccountRow>, sqlx::Error>;

    /// Stores a new, active account; `false` when the email is taken.
    async fn insert_account(&self, account: &AccountRow) -> Result<bool, sqlx::Error>;

    /// Replaces the password hash, unless it changed since `old` was read.
    async fn replace_password_hash(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error>;

    async fn insert_refresh_token(&self, token: NewRefreshToken<'_>) -> Result<(), sqlx::Error>;

    /// Marks the token used at `at`, if it is unused, unrevoked and
    /// unexpired; its row as it was when that succeeded.
    async fn use_refresh_token(
        &self,
        hash: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RefreshTokenRow>, sqlx::Error>;

    /// The token with this hash, whatever its state.
    async fn find_refresh_token(&self, hash: &str) -> Result<Option<RefreshTokenRow>, sqlx::Error>;

    /// Revokes the tokens `which` names.
    async fn revoke_refresh_tokens(
        &self,
        which: Revoke,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error>;
}

/// A row of the account statements, in [`ACCOUNT_COLUMNS`] order.
type Row = (
    Uuid,
    String,
    String,
    String,
    String,
    bool,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

const ACCOUNT_COLUMNS: &str = "id, email, first_name, last_name, role, is_active, password_hash, \
                               created_at, updated_at";

fn account(row: Row) -> AccountRow {
    let (id, email, first_name, last_name, role, is_active, password_hash, created_at, updated_at) =
        row;
    AccountRow {
        id,
        email,
        first_name,
        last_name,
        role,
        is_active,
        password_hash,
        created_at,
        updated_at,
    }
}

/// A row of the refresh token statements.
type TokenRow = (Uuid, Uuid, bool, bool);

const TOKEN_COLUMNS: &str =
    "family, user_id, used_at IS NOT NULL AS used, revoked_at IS NOT NULL AS revoked";

fn token((family, user_id, used, revoked): TokenRow) -> RefreshTokenRow {
    RefreshTokenRow {
        family,
        user_id,
        used,
        revoked,
    }
}

with_driver_bounds! {
[#[async_trait]
impl<D: Dialect> AccountTable for SqlStore<D>] {
    async fn find_account(&self, by: AccountBy<'_>) -> Result<Option<AccountRow>, sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        let column = match by {
            AccountBy::Id(_) => "id",
            AccountBy::Email(_) => "email",
        };
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM auth_users WHERE {column} = $1");
        let query = sqlx::query_as(&sql);
        let query = match by {
            AccountBy::Id(id) => query.bind(id),
            AccountBy::Email(email) => query.bind(email.to_owned()),
        };
        let found: Option<Row> = query.fetch_optional(&mut *conn).await?;
        Ok(found.map(account))
    }

    async fn insert_account(&self, account: &AccountRow) -> Result<bool, sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO auth_users \
             (id, email, first_name, last_name, role, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (email) DO NOTHING RETURNING id",
        )
        .bind(account.id)
        .bind(account.email.clone())
        .bind(account.first_name.clone())
        .bind(account.last_name.clone())
        .bind(account.role.clone())
        .bind(account.password_hash.clone())
        .bind(D::time(&account.created_at))
        .bind(D::time(&account.updated_at))
        .fetch_all(&mut *conn)
        .await?;
        Ok(inserted.len() == 1)
    }

    async fn replace_password_hash(
        &self,
        id: Uuid,
        old: &str,
        new: &str,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        sqlx::query(
            "UPDATE auth_users SET password_hash = $1, updated_at = $2 \
             WHERE id = $3 AND password_hash = $4",
        )
        .bind(new.to_owned())
        .bind(D::time(&at))
        .bind(id)
        .bind(old.to_owned())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn insert_refresh_token(&self, token: NewRefreshToken<'_>) -> Result<(), sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        sqlx::query(
            "INSERT INTO auth_refresh_tokens \
             (token_hash, family, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token.hash.to_owned())
        .bind(token.family)
        .bind(token.user_id)
        .bind(D::time(&token.created_at))
        .bind(D::time(&token.expires_at))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        hash: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RefreshTokenRow>, sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        // One statement: of two requests presenting the same token, one
        // uses it and the other finds it used.
        let sql = format!(
            "UPDATE auth_refresh_tokens SET used_at = $1 \
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL \
             AND expires_at > $1 RETURNING {TOKEN_COLUMNS}"
        );
        let used: Option<TokenRow> = sqlx::query_as(&sql)
            .bind(D::time(&at))
            .bind(hash.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
        // RETURNING shows the row as changed; it was unused before.
        Ok(used.map(token).map(|row| RefreshTokenRow { used: false, ..row }))
    }

    async fn find_refresh_token(
        &self,
        hash: &str,
    ) -> Result<Option<RefreshTokenRow>, sqlx::Error> {
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM auth_refresh_tokens WHERE token_hash = $1");
        let found: Option<TokenRow> = sqlx::query_as(&sql)
            .bind(hash.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
        Ok(found.map(token))
    }

    async fn revoke_refresh_tokens(
        &self,
        which: Revoke,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (column, id) = match which {
            Revoke::Family(family) => ("family", family),
            Revoke::Account(user_id) => ("user_id", user_id),
        };
        let mut conn = self.writer.waiting.on(self.writer.pool.acquire()).await?;
        let sql = format!(
            "UPDATE auth_refresh_tokens SET revoked_at = $1 \
             WHERE {column} = $2 AND revoked_at IS NULL"
        );
        sqlx::query(&sql)
            .bind(D::time(&at))
            .bind(id)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}
}
