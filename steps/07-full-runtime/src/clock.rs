//! Times as Docker shows them: RFC 3339 in `inspect` and `logs -t`, and
//! "3 seconds", "About a minute" in `ps` (the rules of Docker's go-units
//! HumanDuration).

use std::time::{SystemTime, UNIX_EPOCH};

const SECOND: u64 = 1_000_000_000;

/// Nanoseconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// `2026-12-01T13:05:27.123456789Z`.
pub fn rfc3339(nanos: u64) -> String {
    let seconds = nanos / SECOND;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        nanos % SECOND
    )
}

/// The calendar date of a day counted from 1970-01-01: Howard Hinnant's
/// days-to-civil algorithm, on eras of 400 years (146 097 days), which
/// repeat exactly in the Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that February's leap day comes last.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// How long ago, or for how long, in Docker's words: "Less than a
/// second", "5 seconds", "About a minute", "3 hours", "2 weeks".
pub fn human(nanos: u64) -> String {
    let seconds = nanos / SECOND;
    let minutes = seconds / 60;
    // Hours are rounded, the rest cut down, as go-units does.
    let hours = (seconds + 1800) / 3600;
    match () {
        () if seconds < 1 => "Less than a second".to_owned(),
        () if seconds == 1 => "1 second".to_owned(),
        () if seconds < 60 => format!("{seconds} seconds"),
        () if minutes == 1 => "About a minute".to_owned(),
        () if minutes < 60 => format!("{minutes} minutes"),
        () if hours == 1 => "About an hour".to_owned(),
        () if hours < 48 => format!("{hours} hours"),
        () if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        () if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        () if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        () => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// How long ago `then` was.
pub fn since(then: u64) -> u64 {
    now().saturating_sub(then)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_across_leap_years() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2024-02-29T12:34:56.5Z
        assert_eq!(
            rfc3339(1_709_210_096 * SECOND + SECOND / 2),
            "2024-02-29T12:34:56.500000000Z"
        );
        assert_eq!(
            rfc3339(1_796_083_200 * SECOND),
            "2026-12-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn words_durations_as_docker_does() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (15 * 86_400, "2 weeks"),
            (70 * 86_400, "2 months"),
            (800 * 86_400, "2 years"),
        ];
        for (seconds, words) in cases {
            assert_eq!(human(seconds * SECOND), words, "{seconds} s");
        }
    }
}
