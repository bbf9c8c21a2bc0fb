//! RFC 3339 timestamps as used in firehose `time` fields, to and from Unix microseconds.
//!
//! Only what the relay needs: parse `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (also with a
//! space or lowercase `t`/`z`), and format as `YYYY-MM-DDTHH:MM:SS.mmmZ`, the shape the real
//! relay emits.

/// Parsing is the decoder's own: one parser for event time in the whole pipeline.
pub use firehose::parse_rfc3339_micros;

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

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
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
