//! Users: the validated pieces of a user and the stored record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;
use uuid::Uuid;

use super::ValidationError;
use super::text::{is_invisible, is_visible, stray_invisible};

/// Longest email accepted, as the Go service's `VARCHAR(255)` column.
const EMAIL_MAX_CHARS: usize = 255;
/// Longest local part (before `@`) allowed by RFC 5321.
const EMAIL_LOCAL_MAX_CHARS: usize = 64;
/// Longest first or last name, after trimming.
const NAME_MAX_CHARS: usize = 100;

/// A stored user, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct User {
    pub id: Uuid,
    /// In canonical form: lowercased, the domain as punycode.
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada")]
    pub first_name: String,
    #[schema(example = "Lovelace")]
    pub last_name: String,
    pub created_at: DateTime<Utc>,
    /// Equals `created_at` until the first update.
    pub updated_at: DateTime<Utc>,
}

/// An email address in its one canonical form, so that two spellings of one
/// mailbox are one account: trimmed, the local part in Unicode's
/// compatibility form (NFKC: `é` typed as one character or as `e` and a
/// combining accent, full-width `ａ` and `a`, are one spelling) and
/// lowercased, the domain in its ASCII (punycode) form; at most 255 characters, one `@`, a local part of
/// at most 64 characters and a dotted domain. Control and invisible
/// characters (zero-width spaces, byte-order marks, …) are refused rather
/// than dropped, so that what a client sees is what is stored.
///
/// The local part is lowercased although RFC 5321 lets a mail server tell
/// `Ada@` from `ada@`: no provider in use does, and people type both for
/// one mailbox. Storing the canonical form (rather than the spelling given,
/// with uniqueness on a lowercased index) keeps the unique constraint the
/// Go service's clients already get their 409 from, and keeps "the same
/// address" defined here once: SQLite's `lower()` folds only ASCII and
/// PostgreSQL's follows the database locale, so an index on it could call an
/// address taken on one stack and free on the other. The API has no lookup
/// by email, so for existing clients only the echoed spelling changes, as
/// it already did for the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email(String);

impl Email {
    pub(crate) fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim();
        let invalid = |why: &str| ValidationError::new(field, why.to_owned());
        let malformed = || invalid("must be an email address like name@example.com");
        if value.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if value.chars().count() > EMAIL_MAX_CHARS {
            return Err(invalid("must be at most 255 characters"));
        }
        if let Some(c) = value.chars().find(|&c| c.is_control() || is_invisible(c)) {
            return Err(ValidationError::new(
                field,
                format!(
                    "must not contain control or invisible characters (found U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err(malformed());
        };
        let local: String = local
            .nfkc()
            .collect::<String>()
            .to_lowercase()
            .nfc()
            .collect();
        let local_ok = !local.is_empty()
            && local.chars().count() <= EMAIL_LOCAL_MAX_CHARS
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !"\"(),:;<>@[\\]".contains(c));
        if !local_ok {
            return Err(malformed());
        }
        // UTS 46 maps the domain to what DNS looks up: case folded, Unicode
        // labels as punycode (`bücher.de` → `xn--bcher-kva.de`), and refuses
        // what no host name may contain.
        let domain = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::STD3)
            .map_err(|_| malformed())?;
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(malformed());
        }
        let canonical = format!("{local}@{domain}");
        // Punycode is longer than the Unicode it spells: check the stored form.
        if canonical.chars().count() > EMAIL_MAX_CHARS {
            return Err(invalid("must be at most 255 characters"));
        }
        Ok(Self(canonical))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A first or last name: 1 to 100 characters after trimming, with at least
/// one visible character, no control characters, and no invisible ones
/// except where they shape a visible neighbour (a zero-width joiner or
/// non-joiner between two letters, as Persian spelling needs; a variation
/// selector after an emoji).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PersonName(String);

impl PersonName {
    pub(crate) fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if value.chars().count() > NAME_MAX_CHARS {
            return Err(ValidationError::new(
                field,
                "must be at most 100 characters",
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field,
                "must not contain control characters",
            ));
        }
        if let Some(mark) = value.chars().next().filter(|&c| is_combining_mark(c)) {
            return Err(ValidationError::new(
                field,
                format!(
                    "must not begin with a combining mark (found U+{:04X}), which has no \
                     character to mark",
                    u32::from(mark)
                ),
            ));
        }
        if !value.chars().any(is_visible) {
            return Err(ValidationError::new(
                field,
                "must contain at least one visible character",
            ));
        }
        if let Some(c) = stray_invisible(value) {
            return Err(ValidationError::new(
                field,
                format!(
                    "must not contain invisible characters (found U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `POST /api/v1/users` creates.
#[derive(Debug, Clone)]
pub(crate) struct NewUser {
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
}

/// What `PUT /api/v1/users/{id}` changes: absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserPatch {
    pub email: Option<Email>,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
}

impl UserPatch {
    pub(crate) fn is_empty(&self) -> bool {
        self.email.is_none() && self.first_name.is_none() && self.last_name.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_accepts_common_addresses_in_their_canonical_form() {
        let email = Email::parse("email", "  Jane.Doe+tag@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "jane.doe+tag@example.com");
        assert!(Email::parse("email", "a@b.co").is_ok());
        assert!(Email::parse("email", "user@mail.xn--p1ai").is_ok());
    }

    #[test]
    fn one_mailbox_has_one_canonical_spelling() {
        let canonical = |raw: &str| Email::parse("email", raw).unwrap().as_str().to_owned();
        assert_eq!(canonical("Ada@example.com"), canonical("ada@EXAMPLE.com"));
        assert_eq!(canonical("ada@bücher.de"), "ada@xn--bcher-kva.de");
        assert_eq!(canonical("ada@BÜCHER.de"), "ada@xn--bcher-kva.de");
        assert_eq!(canonical("ada@xn--bcher-kva.de"), "ada@xn--bcher-kva.de");
        assert_eq!(canonical("ÅSA@example.com"), "åsa@example.com");
        assert_eq!(
            canonical("e\u{301}@example.com"),
            canonical("\u{e9}@example.com")
        );
        assert_eq!(canonical("ａｄａ@example.com"), "ada@example.com");
        assert_eq!(canonical("Ｅ\u{301}@example.com"), "\u{e9}@example.com");
    }

    #[test]
    fn email_with_invisible_characters_is_rejected_naming_one() {
        for bad in [
            "ada\u{200B}@example.com",
            "ada@exa\u{200C}mple.com",
            "\u{FEFF}ada@example.com",
            "ada@example.com\u{2060}",
            "a\u{200D}da@example.com",
            "ada\u{0}@example.com",
        ] {
            let err = Email::parse("email", bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad:?}");
            assert!(err.reason.contains("invisible"), "{bad:?}: {}", err.reason);
        }
    }

    #[test]
    fn email_whose_punycode_form_exceeds_255_characters_is_rejected() {
        // Five labels of 45 "ü" are 234 characters; as punycode, 264.
        let label = "ü".repeat(45);
        let long = format!("a@{label}.{label}.{label}.{label}.{label}.de");
        assert!(long.chars().count() <= 255);
        let err = Email::parse("email", &long).unwrap_err();
        assert!(err.reason.contains("255"), "{}", err.reason);
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "user@",
            "user@localhost",
            "user@exa mple.com",
            "us er@example.com",
            "user@example..com",
            "user@-example.com",
            ".user@example.com",
            "a..b@example.com",
            "user\u{7}@example.com",
        ] {
            let err = Email::parse("email", bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad:?}");
        }
    }

    #[test]
    fn email_longer_than_255_characters_is_rejected() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        let err = Email::parse("email", &long).unwrap_err();
        assert!(err.reason.contains("255"));
    }

    #[test]
    fn names_are_trimmed_and_limited_to_100_characters() {
        assert_eq!(
            PersonName::parse("first_name", "  Ann ").unwrap().as_str(),
            "Ann"
        );
        assert!(PersonName::parse("first_name", &"é".repeat(100)).is_ok());
        assert!(PersonName::parse("first_name", &"é".repeat(101)).is_err());
        assert!(PersonName::parse("first_name", " \t ").is_err());
        assert!(PersonName::parse("first_name", "A\u{0}B").is_err());
    }

    #[test]
    fn names_need_a_visible_character_and_no_stray_invisible_ones() {
        for blank in [
            "\u{200B}",
            "\u{FEFF}",
            "\u{3164}",
            "\u{200B} \u{FEFF}",
            "\u{2800}",
        ] {
            let err = PersonName::parse("last_name", blank).unwrap_err();
            assert_eq!(err.field, "last_name");
            assert!(err.reason.contains("visible"), "{blank:?}: {}", err.reason);
        }
        for hidden in ["An\u{200B}n", "\u{FEFF}Ann", "Ann\u{2060}", "A\u{202E}nn"] {
            let err = PersonName::parse("first_name", hidden).unwrap_err();
            assert!(
                err.reason.contains("invisible"),
                "{hidden:?}: {}",
                err.reason
            );
        }
        assert!(PersonName::parse("first_name", "مهر\u{200C}آسا").is_ok());
        assert!(PersonName::parse("first_name", "Zoë").is_ok());
        assert!(PersonName::parse("first_name", "Zoe\u{308}").is_ok());
        for marks in ["\u{300}", "\u{300}\u{301}", "\u{301}Ann"] {
            let err = PersonName::parse("first_name", marks).unwrap_err();
            assert!(
                err.reason.contains("combining mark"),
                "{marks:?}: {}",
                err.reason
            );
        }
    }
}
