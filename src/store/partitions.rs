//! How `events` is cut into partitions on PostgreSQL, once
//! `EVENTS_RETENTION` is set (`sql/partition_events.sql`, run by the first
//! start with it): by `created_at`, in ranges of one width, created ahead
//! of time and dropped whole once every event in them is past the
//! retention. Without a retention `events` stays one table: a list of
//! events reads one index, not one per partition.
//!
//! - The first partition, `events_history`, holds everything before the
//!   hour after the migration (the rows the table had then).
//! - Each next one starts where the last ends and is [`width_for`] the
//!   retention long: an eighth of it, in whole hours, from an hour to 30
//!   days (30 days once the retention is turned off again). About ten partitions are
//!   alive at a time, so a read by id probes few indexes, and an expired
//!   eighth leaves at once.
//! - They are made [`ahead`] of time: a service stopped for less than that
//!   comes back to partitions for its writes.
//! - Each is named after its start (`events_20261206t1300`).

use std::time::Duration;

use chrono::{DateTime, Utc};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// How long each new partition is, for events kept `retention` (`None`:
/// forever).
pub(crate) fn width_for(retention: Option<Duration>) -> Duration {
    let Some(retention) = retention else {
        return 30 * DAY;
    };
    let hours = (retention / 8).as_secs() / HOUR.as_secs();
    (HOUR * u32::try_from(hours).unwrap_or(u32::MAX)).clamp(HOUR, 30 * DAY)
}

/// How far past now the partitions reach: two widths, and at least a
/// week.
pub(crate) fn ahead(width: Duration) -> Duration {
    (width * 2).max(7 * DAY)
}

/// The ranges to create after the last partition's end (`last_end`,
/// none: no partition yet, so from the hour of `now`) for the partitions
/// to reach `now` plus [`ahead`].
pub(crate) fn to_create(
    last_end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    width: Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let (Ok(width), Ok(ahead)) = (
        chrono::Duration::from_std(width),
        chrono::Duration::from_std(ahead(width)),
    ) else {
        return Vec::new();
    };
    let until = now + ahead;
    let mut start = last_end.unwrap_or_else(|| hour_of(now));
    let mut ranges = Vec::new();
    while start < until {
        ranges.push((start, start + width));
        start += width;
    }
    ranges
}

/// The partition's name, from its start.
pub(crate) fn name(start: DateTime<Utc>) -> String {
    format!("events_{}", start.format("%Y%m%dt%H%M"))
}

fn hour_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let seconds = at.timestamp() - at.timestamp().rem_euclid(3600);
    DateTime::from_timestamp(seconds, 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn partitions_are_an_eighth_of_the_retention_in_whole_hours() {
        assert_eq!(width_for(None), 30 * DAY);
        assert_eq!(width_for(Some(2 * Duration::from_secs(1))), HOUR);
        assert_eq!(width_for(Some(7 * DAY)), 21 * HOUR);
        assert_eq!(width_for(Some(30 * DAY)), 90 * HOUR);
        assert_eq!(width_for(Some(10 * 365 * DAY)), 30 * DAY);
    }

    #[test]
    fn partitions_follow_the_last_one_until_they_reach_past_now() {
        let now = at("2026-12-06T12:34:00Z");
        let ranges = to_create(Some(at("2026-12-10T00:00:00Z")), now, DAY);
        assert_eq!(ranges.first().unwrap().0, at("2026-12-10T00:00:00Z"));
        assert_eq!(ranges.last().unwrap().1, at("2026-12-14T00:00:00Z"));
        assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0), "{ranges:?}");
        assert_eq!(ranges.len(), 4);

        let fresh = to_create(None, now, 30 * DAY);
        assert_eq!(fresh[0].0, at("2026-12-06T12:00:00Z"));
        assert_eq!(fresh.len(), 3, "two widths ahead: {fresh:?}");

        assert!(to_create(Some(at("2027-01-01T00:00:00Z")), now, DAY).is_empty());
        assert_eq!(name(at("2026-12-06T13:00:00Z")), "events_20261206t1300");
    }
}
