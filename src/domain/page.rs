//! Pagination of the list endpoints: by page number (`page`, `limit`), or
//! by keyset cursor (`cursor`, `limit`).
//!
//! Lists are ordered newest first by `(created_at, id)`, both descending. A
//! cursor names the sort key of the last row a client has seen; the next
//! page is what sorts after it, found by an index seek, so that a deep
//! page costs what the first one does and rows inserted meanwhile (which
//! sort first) neither repeat nor hide older ones.
//!
//! A cursor is opaque to clients: a version, the key, and a MAC over the
//! key and the list it belongs to (the collection and its filters), as hex.
//! The MAC is HMAC-SHA256 (its first 8 bytes) under a server secret
//! ([`CursorKey`]: `CURSOR_SECRET`, or one the replicas share through the
//! database), so a client cannot make a cursor, only pass one on. A cursor
//! that was changed, cut short, taken from another list, or made elsewhere
//! fails the MAC and is refused as invalid input; the time of one that
//! passes is still range-checked.

use chrono::{DateTime, Datelike, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::ValidationError;

/// Largest page size a client may ask for.
pub(super) const MAX_LIMIT: u32 = 100;
/// Largest page number: the OpenAPI document declares `page` an int32, so
/// the server accepts exactly that range (and clients in languages whose
/// default integer is 32 bits can echo it back).
pub(super) const MAX_PAGE: u32 = i32::MAX as u32;
const DEFAULT_LIMIT: u32 = 10;

/// The format of the cursors this version writes (its first byte). Version
/// 1 had a checksum anyone could compute; its cursors are refused.
const CURSOR_VERSION: u8 = 2;
/// Version, microseconds since the epoch, id, MAC.
const CURSOR_BYTES: usize = 1 + 8 + 16 + 8;

/// The key of the cursors' MAC.
#[derive(Clone)]
pub(crate) struct CursorKey(Hmac<Sha256>);

impl CursorKey {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self(Hmac::new_from_slice(secret).expect("BUG: HMAC takes keys of any length"))
    }

    /// The MAC of a cursor's first 25 bytes in the list named `list`.
    fn mac(&self, list: &str, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(list.as_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        mac
    }
}

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

/// A requested page: `limit` 1–100 (default 10) rows, from where `start`
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    pub start: Start,
    pub limit: u32,
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Page number 1–2³¹−1: `(number − 1) × limit` rows are skipped.
    Number(u32),
    /// Just after the row with this key (from a cursor).
    After(Key),
}

/// Where a row sorts in a list: lists run newest first, by `created_at`
/// and then `id`, both descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            start: Start::Number(1),
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Page {
    /// Parses the `page`, `limit` and `cursor` query parameters (absent
    /// means default) of the list named `list` (see [`Key::to_cursor`]).
    pub(crate) fn parse(
        page: Option<&str>,
        limit: Option<&str>,
        cursor: Option<&str>,
        list: &str,
        key: &CursorKey,
    ) -> Result<Self, ValidationError> {
        let number = match page {
            None => 1,
            Some(raw) => raw
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| (1..=MAX_PAGE).contains(p))
                .ok_or_else(|| {
                    ValidationError::new("page", "must be an integer between 1 and 2147483647")
                })?,
        };
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => raw
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    ValidationError::new("limit", "must be an integer between 1 and 100")
                })?,
        };
        let start = match cursor {
            None => Start::Number(number),
            Some(_) if page.is_some() => {
                return Err(ValidationError::new(
                    "cursor",
                    "cannot be combined with page: a cursor says where the page starts",
                ));
            }
            Some(raw) => Start::After(Key::from_cursor(raw, list, key)?),
        };
        Ok(Self { start, limit })
    }

    /// The page number; 1 for a page that starts at a cursor.
    pub(crate) fn number(&self) -> u32 {
        match self.start {
            Start::Number(n) => n,
            Start::After(_) => 1,
        }
    }

    /// Rows to skip; cannot overflow (2³¹ × 100 fits in i64).
    pub(crate) fn offset(&self) -> i64 {
        match self.start {
            Start::Number(n) => i64::from(n - 1) * i64::from(self.limit),
            Start::After(_) => 0,
        }
    }

    /// The key the page starts after, if it starts at a cursor.
    pub(crate) fn after(&self) -> Option<Key> {
        match self.start {
            Start::Number(_) => None,
            Start::After(key) => Some(key),
        }
    }
}

impl Key {
    /// The cursor of the page after this key in the list named `list`
    /// (`users`, or `events` with its filters: whatever names the list
    /// uniquely; the same name must be given to [`Key::from_cursor`]).
    pub(crate) fn to_cursor(self, list: &str, key: &CursorKey) -> String {
        cursor(self.created_at.timestamp_micros(), self.id, list, key)
    }

    /// Reads a cursor of the list named `list`; refuses one that is
    /// malformed, changed, or from another list.
    pub(crate) fn from_cursor(
        raw: &str,
        list: &str,
        key: &CursorKey,
    ) -> Result<Self, ValidationError> {
        let invalid = || {
            ValidationError::new(
                "cursor",
                "is not a cursor of this list: pass `next_cursor` from the previous page \
                 unchanged, with the same filters",
            )
        };
        let raw = raw.trim();
        if raw.len() != 2 * CURSOR_BYTES || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; CURSOR_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&raw[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        if bytes[0] != CURSOR_VERSION
            || key
                .mac(list, &bytes[..25])
                .verify_truncated_left(&bytes[25..])
                .is_err()
        {
            return Err(invalid());
        }
        let micros = i64::from_be_bytes(bytes[1..9].try_into().expect("BUG: 8 bytes"));
        // Whoever holds the secret could still make one: its time must be
        // one a row can have (years 1 to 9999, which both stores hold), or
        // PostgreSQL refuses the query with a 500.
        let created_at = DateTime::from_timestamp_micros(micros)
            .filter(|at| (1..=9999).contains(&at.year()))
            .ok_or_else(invalid)?;
        let id = Uuid::from_slice(&bytes[9..25]).map_err(|_| invalid())?;
        Ok(Self { created_at, id })
    }
}

/// The cursor of a key at `micros` with `id` in the list named `list`.
fn cursor(micros: i64, id: Uuid, list: &str, key: &CursorKey) -> String {
    let mut bytes = [0u8; CURSOR_BYTES];
    bytes[0] = CURSOR_VERSION;
    bytes[1..9].copy_from_slice(&micros.to_be_bytes());
    bytes[9..25].copy_from_slice(id.as_bytes());
    let mac = key.mac(list, &bytes[..25]).finalize().into_bytes();
    bytes[25..].copy_from_slice(&mac[..8]);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// One page of results, how many there are in all, and where the next
/// page starts.
#[derive(Debug, Clone)]
pub(crate) struct PageOf<T> {
    pub items: Vec<T>,
    pub total: u64,
    /// The key of the page's last row when more rows follow it; `None` on
    /// the last page.
    pub next: Option<Key>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(page: Option<&str>, limit: Option<&str>) -> Result<Page, ValidationError> {
        Page::parse(page, limit, None, "users", &secret())
    }

    fn secret() -> CursorKey {
        CursorKey::new(b"a test secret of 32 bytes or so!")
    }

    fn key() -> Key {
        Key {
            created_at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        }
    }

    #[test]
    fn defaults_apply_when_absent() {
        assert_eq!(parse(None, None).unwrap(), Page::default());
    }

    #[test]
    fn out_of_range_values_name_the_parameter() {
        assert_eq!(parse(Some("0"), None).unwrap_err().field, "page");
        assert_eq!(parse(Some("-1"), None).unwrap_err().field, "page");
        assert_eq!(parse(Some("x"), None).unwrap_err().field, "page");
        assert_eq!(parse(None, Some("0")).unwrap_err().field, "limit");
        assert_eq!(parse(None, Some("101")).unwrap_err().field, "limit");
        assert_eq!(parse(Some("3"), Some("100")).unwrap().offset(), 200);
        assert_eq!(
            parse(Some("2147483647"), Some("100")).unwrap().offset(),
            214_748_364_600
        );
        assert_eq!(parse(Some("2147483648"), None).unwrap_err().field, "page");
        assert_eq!(parse(Some("4294967295"), None).unwrap_err().field, "page");
    }

    #[test]
    fn a_cursor_reads_back_as_its_key_in_its_own_list_only() {
        let key = key();
        let cursor = key.to_cursor("events user_id= type=click", &secret());
        let page = Page::parse(
            None,
            Some("5"),
            Some(cursor.as_str()),
            "events user_id= type=click",
            &secret(),
        );
        assert_eq!(
            page.unwrap(),
            Page {
                start: Start::After(key),
                limit: 5
            }
        );
        let elsewhere = Key::from_cursor(&cursor, "events user_id= type=view", &secret());
        assert_eq!(elsewhere.unwrap_err().field, "cursor");
    }

    #[test]
    fn a_changed_or_malformed_cursor_names_the_parameter() {
        let cursor = key().to_cursor("users", &secret());
        let mut changed = cursor.clone().into_bytes();
        // Any one character changed (here, in the timestamp).
        changed[10] = if changed[10] == b'0' { b'1' } else { b'0' };
        let changed = String::from_utf8(changed).unwrap();
        let accented = cursor.replace(|c: char| c.is_ascii_digit(), "é");
        let bad: [&str; 5] = [
            changed.as_str(),
            &cursor[..cursor.len() - 2],
            "",
            "not-a-cursor",
            accented.as_str(),
        ];
        for bad in bad {
            let err = Page::parse(None, None, Some(bad), "users", &secret()).unwrap_err();
            assert_eq!(err.field, "cursor", "{bad:?}");
        }
    }

    #[test]
    fn a_forged_cursor_of_a_time_no_row_can_have_is_refused() {
        for micros in [
            i64::MIN,
            -210_000_000_000_000_000,
            300_000_000_000_000_000,
            i64::MAX,
        ] {
            let forged = cursor(micros, Uuid::nil(), "users", &secret());
            let err = Key::from_cursor(&forged, "users", &secret()).unwrap_err();
            assert_eq!(err.field, "cursor", "{micros}");
        }
    }

    #[test]
    fn a_cursor_made_without_the_secret_is_refused() {
        let key = key();
        let other = CursorKey::new(b"another secret");
        let elsewhere = key.to_cursor("users", &other);
        assert_eq!(
            Key::from_cursor(&elsewhere, "users", &secret())
                .unwrap_err()
                .field,
            "cursor"
        );
        // A version 1 cursor, with the checksum anyone could compute.
        let mut bytes = [0u8; CURSOR_BYTES];
        bytes[0] = 1;
        bytes[1..9].copy_from_slice(&key.created_at.timestamp_micros().to_be_bytes());
        bytes[9..25].copy_from_slice(key.id.as_bytes());
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for &byte in b"users".iter().chain(&[0]).chain(&bytes[..25]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        bytes[25..].copy_from_slice(&hash.to_be_bytes());
        let forged = hex(&bytes);
        assert!(Key::from_cursor(&forged, "users", &secret()).is_err());
        assert_eq!(
            Key::from_cursor(&key.to_cursor("users", &secret()), "users", &secret()).unwrap(),
            key
        );
    }

    #[test]
    fn a_cursor_with_a_page_number_is_refused() {
        let cursor = key().to_cursor("users", &secret());
        let err =
            Page::parse(Some("2"), None, Some(cursor.as_str()), "users", &secret()).unwrap_err();
        assert_eq!(err.field, "cursor");
        assert!(err.reason.contains("page"), "{err}");
    }
}
