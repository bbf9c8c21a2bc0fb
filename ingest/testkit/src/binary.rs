//! Which nats-server binary: the version gate ([`MIN_SERVER_VERSION`]), the search order
//! (`$NATS_SERVER_BIN`, `.tools/bin`, `PATH`), and Debian's legacy 2.9 for the tests that
//! prove old servers are refused.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, VersionError, MIN_SERVER_VERSION};

/// The path of a nats-server ≥ [`MIN_SERVER_VERSION`]: `$NATS_SERVER_BIN` if
/// set (used as given, never passed over), else the first good one of
/// `<workspace>/.tools/bin/nats-server` and `nats-server` on `PATH`.
pub fn nats_server_binary() -> Result<PathBuf, Error> {
    find_server().map(|(path, _)| path)
}

pub(crate) fn find_server() -> Result<(PathBuf, String), Error> {
    let explicit = env::var_os("NATS_SERVER_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut candidates = vec![workspace_root().join(".tools/bin/nats-server")];
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    select_server(explicit, &candidates)
}

/// The version gate behind [`nats_server_binary`], with its inputs passed in.
fn select_server(
    explicit: Option<PathBuf>,
    candidates: &[PathBuf],
) -> Result<(PathBuf, String), Error> {
    if let Some(path) = explicit {
        let version = recent_version(&path)?;
        return Ok((path, version));
    }
    let mut first_rejection = None;
    for path in candidates.iter().filter(|p| p.is_file()) {
        match recent_version(path) {
            Ok(version) => return Ok((path.clone(), version)),
            Err(e) => {
                first_rejection.get_or_insert(e);
            }
        }
    }
    Err(first_rejection.unwrap_or_else(|| Error::NotFound {
        searched: format!(
            "$NATS_SERVER_BIN (unset), {}, nats-server on PATH",
            workspace_root().join(".tools/bin/nats-server").display()
        ),
    }))
}

/// The version of `path` if it is at least [`MIN_SERVER_VERSION`].
fn recent_version(path: &Path) -> Result<String, Error> {
    let version = server_version(path)?;
    match parse_version(&version) {
        Some(v) if v >= MIN_SERVER_VERSION => Ok(version),
        _ => Err(Error::TooOld {
            path: path.to_path_buf(),
            version,
        }),
    }
}

/// Runs `path --version` and returns the version it prints (`nats-server: v2.14.6`
/// gives `2.14.6`).
pub fn server_version(path: &Path) -> Result<String, Error> {
    let failed = |source: VersionError| Error::Version {
        path: path.to_path_buf(),
        source,
    };
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(VersionError::Run(e)))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(failed(VersionError::Failed {
            status: output.status,
            output: text.trim().to_owned(),
        }));
    }
    text.split_whitespace()
        .map(|token| token.trim_start_matches('v'))
        .find(|token| parse_version(token).is_some())
        .map(str::to_owned)
        .ok_or_else(|| {
            failed(VersionError::NoVersion {
                output: text.trim().to_owned(),
            })
        })
}

/// Parses `MAJOR.MINOR.PATCH`, with an optional leading `v` and an optional
/// `-pre` or `+build` suffix: `"2.14.6"`, `"v2.10.0-RC.1"`. `None` for anything else.
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let core = s.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<u32>().ok()
        } else {
            None
        }
    });
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// `<root>/.tools/legacy/nats-server` (Debian's 2.9, from
/// `bash deploy/setup-nats.sh --with-legacy`), if it is there.
pub fn legacy_nats_server_binary() -> Option<PathBuf> {
    let path = workspace_root().join(".tools/legacy/nats-server");
    path.is_file().then_some(path)
}

/// Debian's nats-server 2.9 for a test that proves old servers are refused, or `None` after
/// printing why that test skips:
/// - `deploy/setup-nats.sh --with-legacy` recorded that it cannot get one here (no
///   `apt-get`, or the distribution packages 2.10 or newer): its reason is printed;
/// - `apt-get` is not on `PATH` at all;
/// - outside CI, nobody ran the set-up.
///
/// Under CI (`$CI` set) with `apt-get` present and no recorded reason, a missing legacy
/// server fails the test: there the check is demanded, never skipped.
pub fn legacy_server_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(path) = legacy_nats_server_binary() {
        return Some(path);
    }
    let recorded = workspace_root().join(".tools/legacy/SKIPPED");
    if let Ok(reason) = fs::read_to_string(&recorded) {
        eprintln!("skipped {test}: {}", reason.trim());
        return None;
    }
    if !on_path("apt-get") {
        eprintln!(
            "skipped {test}: apt-get is unavailable (not Debian or Ubuntu), so Debian's \
             nats-server 2.9 cannot be had"
        );
        return None;
    }
    assert!(
        env::var_os("CI").is_none(),
        "{test}: CI must run `bash deploy/setup-nats.sh --with-legacy` first (apt-get is here)"
    );
    eprintln!(
        "skipped {test}: no .tools/legacy/nats-server; run bash deploy/setup-nats.sh --with-legacy"
    );
    None
}

/// True when an executable file `name` is in a directory of `PATH`.
fn on_path(name: &str) -> bool {
    env::var_os("PATH").is_some_and(|path| {
        env::split_paths(&path).any(|dir| {
            let candidate = dir.join(name);
            candidate.is_file()
                && fs::metadata(&candidate).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.join("../.."), Path::to_path_buf)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a test fails loudly on any unexpected error
mod tests {
    use super::*;

    #[test]
    fn parse_version_accepts_release_and_prerelease_forms() {
        assert_eq!(parse_version("2.14.6"), Some((2, 14, 6)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version(" v2.10.0-RC.1 "), Some((2, 10, 0)));
        assert_eq!(parse_version("2.11.3+build.7"), Some((2, 11, 3)));
        for bad in [
            "",
            "2",
            "2.10",
            "2.10.x",
            "2.10.0.1",
            "nats-server: v2.14.6",
            "2..1",
            "+2.1.1",
        ] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn version_gate_orders_numerically_not_lexically() {
        let gate = |s| parse_version(s).is_some_and(|v| v >= MIN_SERVER_VERSION);
        assert!(!gate("2.9.10"));
        assert!(gate("2.10.0"));
        assert!(gate("2.14.6"));
        assert!(gate("3.0.0"));
        assert!(!gate("1.99.99"));
    }

    #[test]
    fn missing_explicit_binary_is_an_error_not_a_fallback() {
        let tools = workspace_root().join(".tools/bin/nats-server");
        let err = select_server(Some(PathBuf::from("/nonexistent/nats-server")), &[tools])
            .expect_err("a missing NATS_SERVER_BIN must not fall back");
        assert!(matches!(err, Error::Version { .. }), "{err}");
    }

    #[test]
    fn no_candidates_tells_how_to_install() {
        let err = select_server(None, &[PathBuf::from("/nonexistent/nats-server")])
            .expect_err("nothing to find");
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("deploy/setup-nats.sh"), "{err}");
    }

    #[test]
    fn legacy_server_is_refused_by_the_gate() {
        let Some(legacy) = legacy_server_or_skip("legacy_server_is_refused_by_the_gate") else {
            return;
        };
        let explicit = select_server(Some(legacy.clone()), &[]).expect_err("2.9 must be refused");
        assert!(
            matches!(&explicit, Error::TooOld { version, .. } if version.starts_with("2.9.")),
            "{explicit}"
        );
        assert!(
            explicit.to_string().contains("deploy/setup-nats.sh"),
            "{explicit}"
        );
        // Found while searching, it is passed over for a newer one.
        let newer = nats_server_binary().expect("a server >= 2.10");
        let (chosen, _) = select_server(None, &[legacy, newer.clone()]).expect("the newer one");
        assert_eq!(chosen, newer);
    }
}
