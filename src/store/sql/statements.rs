//! The text of generated statements: bind parameters as each dialect
//! writes them, multi-row `VALUES` and `IN` lists, and which statements
//! stay prepared. Statements written out in full use `$N` placeholders,
//! which both drivers accept.

use super::dialect::Dialect;

/// Whether a statement over `rows` rows (a multi-row `VALUES`, an `IN`
/// list) stays prepared on its connection for the next call. One-row ones
/// recur; every other size would stay as a statement of its own, on each
/// connection, up to sqlx's hundred: on SQLite, megabytes of the process's
/// memory for statements that rarely come again.
pub(crate) fn cached(rows: usize) -> bool {
    rows == 1
}

/// `($1, …, $width), ($width+1, …), …`: the placeholders of `rows` rows of
/// `width` values, for a multi-row `VALUES` that holds every parameter of
/// its statement.
pub(super) fn values<D: Dialect>(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * (width * 6 + 4));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        push_params::<D>(&mut sql, row * width + 1, width, true);
        sql.push(')');
    }
    sql
}

/// `($1, $2, …)`: `n` placeholders, for an `IN` that holds every parameter
/// of its statement.
pub(super) fn placeholders<D: Dialect>(n: usize) -> String {
    let mut sql = String::from("(");
    push_params::<D>(&mut sql, 1, n, true);
    sql.push(')');
    sql
}

/// `($first, …)`: `n` placeholders from `$first` on, for an `IN` after
/// parameters of the statement's own.
pub(crate) fn placeholders_from<D: Dialect>(first: usize, n: usize) -> String {
    let mut sql = String::from("(");
    push_params::<D>(&mut sql, first, n, false);
    sql.push(')');
    sql
}

/// Appends the bind parameters `first..first + n`, comma-separated, as
/// the dialect writes them; `in_order`: they are all of the statement's
/// parameters from the first on, so SQLite may leave them unnumbered.
fn push_params<D: Dialect>(sql: &mut String, first: usize, n: usize, in_order: bool) {
    use std::fmt::Write as _;
    for i in first..first + n {
        if i > first {
            sql.push_str(", ");
        }
        if in_order && D::UNNUMBERED_PARAMS {
            sql.push('?');
        } else {
            let _ = write!(sql, "{}{i}", D::PARAM);
        }
    }
}
