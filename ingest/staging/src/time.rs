//! RFC 3339 timestamps as used in firehose `time` fields, to and from Unix microseconds.
//!
//! Only what the relay needs: parse `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (also with a
//! space or lowercase `t`/`z`), and format as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the shape the real
//! relay emits.

/// Parses an RFC 3339 timestamp into microseconds since the Unix epoch (UTC).
///
/// Returns `None` when the text is not a valid timestamp. Digits beyond microseconds are
/// truncated.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60 is allowed for leap seconds and folded into the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        let mut scale = 100_000i64;
        while i < b.len() && b[i].is_ascii_digit() {
            micros += i64::from(b[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
}

/// Formats microseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (millisecond
/// precision, like the real relay).
pub fn format_rfc3339_millis(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let millis = micros.rem_euclid(1_000_000) / 1000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_relay_times() {
        // 2026-07-04T14:38:07.517Z, from the real corpus.
        let t = parse_rfc3339_micros("2026-07-04T14:38:07.517Z");
        assert_eq!(t, Some(1_783_175_887_517_000));
        assert_eq!(
            format_rfc3339_millis(1_783_175_887_517_000),
            "2026-07-04T14:38:07.517Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("1969-12-31T23:59:59.999999Z"),
            Some(-1)
        );
        assert_eq!(
            parse_rfc3339_micros("2024-02-29T12:00:00.1234567Z"),
            Some(1_709_208_000_123_456)
        );
        assert_eq!(parse_rfc3339_micros("2023-02-29T12:00:00Z"), None);
        assert_eq!(parse_rfc3339_micros("2024-01-01T00:00:00"), None);
        assert_eq!(parse_rfc3339_micros("2024-01-01T00:00:00.Z"), None);
        assert_eq!(parse_rfc3339_micros("garbage-garbage-garbage"), None);
    }

    #[test]
    fn roundtrips_many_days() {
        for days in (-700_000i64..2_900_000).step_by(997) {
            let micros = days * 86_400_000_000 + 45_296_789_000;
            let s = format_rfc3339_millis(micros);
            assert_eq!(parse_rfc3339_micros(&s), Some(micros), "{s}");
        }
    }
}
