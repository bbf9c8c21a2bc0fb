//! [`free_port`]: a loopback port for a server a test starts, chosen where no outgoing
//! connection can take it.
//!
//! A port found by binding `127.0.0.1:0` comes from the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), the same range every outgoing connection
//! on the machine draws its local port from. Between the test releasing it and the
//! server binding it, a busy machine can hand it to some connection, and the server then
//! fails with "address in use" (`ingest --test stack` did, with other work running). So
//! the port is drawn at random from outside that range, from 10000 up, and bound once
//! to check that no listener holds it. A process never gets the same port twice.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// Where the candidates start: below it live well-known services (and `deploy/run.sh`'s
/// defaults, 4222, 8080…), which a person may start while tests run.
const LOWEST: u16 = 10_000;

/// How many random candidates are tried before giving up.
const ATTEMPTS: u32 = 1_000;

/// The ephemeral range when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32_768..=60_999;

struct Picker {
    rng: u64,
    given: HashSet<u16>,
}

static PICKER: Mutex<Option<Picker>> = Mutex::new(None);

/// A free loopback port outside the ephemeral range, not handed out before by this
/// process. Free means: bound on 127.0.0.1 a moment ago, then released; outgoing
/// connections never take it, so only a listener started meanwhile can.
pub fn free_port() -> Result<u16, Error> {
    let candidates = candidates(ephemeral_range());
    let total: u32 = candidates
        .iter()
        .map(|r| u32::from(r.end() - r.start()) + 1)
        .sum();
    if total == 0 {
        return any_port(); // the whole range is ephemeral: the old way is all there is
    }
    let mut guard = PICKER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let picker = guard.get_or_insert_with(|| Picker {
        rng: seed(),
        given: HashSet::new(),
    });
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let port = nth(
            &candidates,
            (next(&mut picker.rng) % u64::from(total)) as u32,
        );
        if picker.given.contains(&port) {
            continue;
        }
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => {
                picker.given.insert(port);
                return Ok(port);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(Error::Io {
        what: format!(
            "finding a free port on 127.0.0.1 outside the ephemeral range after {ATTEMPTS} tries"
        ),
        source: last_error.unwrap_or_else(|| io::Error::other("every candidate was handed out")),
    })
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(str::parse::<u16>);
            Some(it.next()?.ok()?..=it.next()?.ok()?)
        })
        .filter(|r| r.start() <= r.end())
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// The port ranges from [`LOWEST`] up that lie outside `ephemeral`.
fn candidates(ephemeral: RangeInclusive<u16>) -> Vec<RangeInclusive<u16>> {
    let mut out = Vec::new();
    if *ephemeral.start() > LOWEST {
        out.push(LOWEST..=ephemeral.start() - 1);
    }
    if *ephemeral.end() < u16::MAX {
        out.push((*ephemeral.end() + 1).max(LOWEST)..=u16::MAX);
    }
    out
}

/// The `i`th port of `ranges` taken one after the other.
fn nth(ranges: &[RangeInclusive<u16>], mut i: u32) -> u16 {
    for r in ranges {
        let len = u32::from(r.end() - r.start()) + 1;
        if i < len {
            return r.start() + i as u16;
        }
        i -= len;
    }
    *ranges[0].start()
}

/// The kernel's choice on 127.0.0.1:0.
fn any_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(Error::io("finding a free port on 127.0.0.1"))
}

/// Different in every process, so parallel test binaries draw different sequences.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

/// splitmix64: enough to spread candidates, no dependency.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_lie_outside_the_ephemeral_range_and_are_never_repeated() {
        let ephemeral = ephemeral_range();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let port = free_port().unwrap();
            if candidates(ephemeral.clone()).is_empty() {
                continue;
            }
            assert!(!ephemeral.contains(&port), "{port} is in {ephemeral:?}");
            assert!(port >= LOWEST, "{port}");
            assert!(seen.insert(port), "{port} handed out twice");
        }
    }

    #[test]
    fn candidates_skip_the_ephemeral_range() {
        assert_eq!(
            candidates(32_768..=60_999),
            vec![10_000..=32_767, 61_000..=65_535]
        );
        assert_eq!(candidates(1_024..=65_535), vec![]);
        assert_eq!(candidates(20_000..=65_535), vec![10_000..=19_999]);
        let ranges = candidates(32_768..=60_999);
        assert_eq!(nth(&ranges, 0), 10_000);
        assert_eq!(nth(&ranges, 22_767), 32_767);
        assert_eq!(nth(&ranges, 22_768), 61_000);
    }
}
