//! Users: the validated pieces of a user and the stored record.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValidationError;

/// Longest email accepted, as the Go service's `VARCHAR(255)` column.
const EMAIL_MAX_CHARS: usize = 255;
/// Longest local part (before `@`) allowed by RFC 5321.
const EMAIL_LOCAL_MAX_CHARS: usize = 64;
/// Longest first or last name, after trimming.
const NAME_MAX_CHARS: usize = 100;

/// A stored user, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
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

/// A syntactically valid email address: trimmed, at most 255 characters,
/// one `@`, a non-empty local part and a dotted domain (stored lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim();
        let invalid = |why: &str| ValidationError::new(field, why.to_owned());
        if value.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if value.chars().count() > EMAIL_MAX_CHARS {
            return Err(invalid("must be at most 255 characters"));
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err(invalid("must be an email address like name@example.com"));
        };
        let local_ok = !local.is_empty()
            && local.chars().count() <= EMAIL_LOCAL_MAX_CHARS
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && !"\"(),:;<>@[\\]".contains(c));
        let domain_ok = domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().count() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err(invalid("must be an email address like name@example.com"));
        }
        // Domains are case-insensitive (RFC 5321 §2.4); the local part is kept
        // as given because the receiving server decides what it means.
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A first or last name: 1 to 100 characters after trimming, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
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
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `POST /api/v1/users` creates.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
}

/// What `PUT /api/v1/users/{id}` changes: absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<Email>,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
}

impl UserPatch {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.first_name.is_none() && self.last_name.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_accepts_common_addresses_and_lowercases_the_domain() {
        let email = Email::parse("email", "  Jane.Doe+tag@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Jane.Doe+tag@example.com");
        assert!(Email::parse("email", "a@b.co").is_ok());
        assert!(Email::parse("email", "user@mail.xn--p1ai").is_ok());
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
}
