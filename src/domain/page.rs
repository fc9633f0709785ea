//! Pagination of the list endpoints.

use super::ValidationError;

/// Largest page size a client may ask for.
pub const MAX_LIMIT: u32 = 100;
/// Largest page number: the OpenAPI document declares `page` an int32, so
/// the server accepts exactly that range (and clients in languages whose
/// default integer is 32 bits can echo it back).
pub const MAX_PAGE: u32 = i32::MAX as u32;
const DEFAULT_LIMIT: u32 = 10;

/// A requested page: `page` 1–2³¹−1, `limit` 1–100 (defaults 1 and 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub page: u32,
    pub limit: u32,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            page: 1,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl Page {
    /// Parses the `page` and `limit` query parameters; absent means default.
    pub fn parse(page: Option<&str>, limit: Option<&str>) -> Result<Self, ValidationError> {
        let page = match page {
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
        Ok(Self { page, limit })
    }

    /// Rows to skip; cannot overflow (2³¹ × 100 fits in i64).
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.limit)
    }
}

/// One page of results and how many there are in all.
#[derive(Debug, Clone)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_absent() {
        assert_eq!(Page::parse(None, None).unwrap(), Page::default());
    }

    #[test]
    fn out_of_range_values_name_the_parameter() {
        assert_eq!(Page::parse(Some("0"), None).unwrap_err().field, "page");
        assert_eq!(Page::parse(Some("-1"), None).unwrap_err().field, "page");
        assert_eq!(Page::parse(Some("x"), None).unwrap_err().field, "page");
        assert_eq!(Page::parse(None, Some("0")).unwrap_err().field, "limit");
        assert_eq!(Page::parse(None, Some("101")).unwrap_err().field, "limit");
        assert_eq!(Page::parse(Some("3"), Some("100")).unwrap().offset(), 200);
        assert_eq!(
            Page::parse(Some("2147483647"), Some("100"))
                .unwrap()
                .offset(),
            214_748_364_600
        );
        assert_eq!(
            Page::parse(Some("2147483648"), None).unwrap_err().field,
            "page"
        );
        assert_eq!(
            Page::parse(Some("4294967295"), None).unwrap_err().field,
            "page"
        );
    }
}
