//! PHP's `date()` formats, as WordPress prints a comment's date and time (`wp_date()` in the
//! `en_US` locale): what a page shows of a comment, for the page patches.

use chrono::{Datelike, NaiveDateTime, Timelike};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// `local` (a wall-clock time `offset` seconds east of UTC) in PHP's `format`; `None` for a
/// format character this port does not know (the timezone's name, ISO week years, …): the
/// caller then does without.
pub fn php_date(format: &str, local: NaiveDateTime, offset: i32) -> Option<String> {
    let mut out = String::with_capacity(format.len() * 3);
    let mut chars = format.chars();
    let (h, m) = (local.hour(), local.minute());
    let h12 = if h % 12 == 0 { 12 } else { h % 12 };
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            'd' => out.push_str(&format!("{:02}", local.day())),
            'j' => out.push_str(&local.day().to_string()),
            'D' => out.push_str(&DAYS[local.weekday().num_days_from_monday() as usize][..3]),
            'l' => out.push_str(DAYS[local.weekday().num_days_from_monday() as usize]),
            'N' => out.push_str(&local.weekday().number_from_monday().to_string()),
            'w' => out.push_str(&local.weekday().num_days_from_sunday().to_string()),
            'S' => out.push_str(ordinal_suffix(local.day())),
            'z' => out.push_str(&local.ordinal0().to_string()),
            'F' => out.push_str(MONTHS[local.month0() as usize]),
            'M' => out.push_str(&MONTHS[local.month0() as usize][..3]),
            'm' => out.push_str(&format!("{:02}", local.month())),
            'n' => out.push_str(&local.month().to_string()),
            'Y' => out.push_str(&local.year().to_string()),
            'y' => out.push_str(&format!("{:02}", local.year().rem_euclid(100))),
            'a' => out.push_str(if h < 12 { "am" } else { "pm" }),
            'A' => out.push_str(if h < 12 { "AM" } else { "PM" }),
            'g' => out.push_str(&h12.to_string()),
            'h' => out.push_str(&format!("{h12:02}")),
            'G' => out.push_str(&h.to_string()),
            'H' => out.push_str(&format!("{h:02}")),
            'i' => out.push_str(&format!("{m:02}")),
            's' => out.push_str(&format!("{:02}", local.second())),
            'O' => out.push_str(&offset_text(offset, "")),
            'P' => out.push_str(&offset_text(offset, ":")),
            'Z' => out.push_str(&offset.to_string()),
            'U' => out.push_str(&(local.and_utc().timestamp() - i64::from(offset)).to_string()),
            'c' => {
                out.push_str(&php_date("Y-m-d\\TH:i:s", local, offset)?);
                out.push_str(&offset_text(offset, ":"));
            }
            c if c.is_ascii_alphabetic() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn ordinal_suffix(day: u32) -> &'static str {
    match (day % 10, day % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

/// `+HHMM` or `+HH:MM`.
fn offset_text(offset: i32, sep: &str) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    format!("{sign}{:02}{sep}{:02}", a / 3600, a % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    #[test]
    fn wordpress_default_and_common_formats() {
        let t = at("2024-12-16 22:34:53");
        assert_eq!(php_date("F j, Y", t, 0).unwrap(), "December 16, 2024");
        assert_eq!(php_date("H:i", t, 0).unwrap(), "22:34");
        assert_eq!(php_date("g:i a", t, 0).unwrap(), "10:34 pm");
        assert_eq!(php_date("Y-m-d", t, 0).unwrap(), "2024-12-16");
        assert_eq!(php_date("m/d/Y", t, 0).unwrap(), "12/16/2024");
        assert_eq!(php_date("d/m/Y", t, 0).unwrap(), "16/12/2024");
        assert_eq!(php_date("jS \\o\\f F", t, 0).unwrap(), "16th of December");
        assert_eq!(php_date("D, M j", t, 0).unwrap(), "Mon, Dec 16");
        assert_eq!(php_date("g:i A", at("2024-01-01 00:05:00"), 0).unwrap(), "12:05 AM");
    }

    #[test]
    fn iso_dates_carry_the_offset() {
        let t = at("2024-12-16 22:34:53");
        assert_eq!(php_date("c", t, 0).unwrap(), "2024-12-16T22:34:53+00:00");
        assert_eq!(php_date("c", t, -5 * 3600 - 1800).unwrap(), "2024-12-16T22:34:53-05:30");
        assert_eq!(php_date("O", t, 3600).unwrap(), "+0100");
        assert_eq!(php_date("U", t, 3600).unwrap(), "1734384893");
    }

    #[test]
    fn ordinals() {
        let s = |d: u32| ordinal_suffix(d);
        assert_eq!(
            [s(1), s(2), s(3), s(4), s(11), s(12), s(13), s(21), s(22), s(23), s(31)],
            ["st", "nd", "rd", "th", "th", "th", "th", "st", "nd", "rd", "st"]
        );
    }

    #[test]
    fn unknown_format_characters_give_nothing() {
        assert_eq!(php_date("T", at("2024-12-16 22:34:53"), 0), None);
        assert_eq!(php_date("\\T", at("2024-12-16 22:34:53"), 0).as_deref(), Some("T"));
    }
}
