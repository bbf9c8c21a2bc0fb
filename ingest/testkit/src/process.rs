//! What a process costs, read from `/proc` (Linux): peak and current memory, CPU time.
//! Benchmarks and memory tests sample their children with these.

/// Linux `USER_HZ`: the unit of utime/stime in `/proc/<pid>/stat`.
const CLOCK_TICKS: f64 = 100.0;

/// A `kB` field of `/proc/<pid>/status`: `VmRSS` (resident now), `VmHWM` (peak resident).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime of process `pid` (or `"self"`), in seconds.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&text)
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// The machine's CPU model, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = "Name:\tingest\nVmHWM:\t   41234 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(41234));
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(30000));
        assert_eq!(parse_status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn stat_cpu_skips_a_command_name_with_spaces() {
        let s = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu(s), Some(3.0));
    }

    #[test]
    fn this_process_is_readable() {
        assert!(status_kib(std::process::id(), "VmRSS").is_some_and(|k| k > 0));
        assert!(cpu_secs("self").is_some());
    }
}
