//! The shipped alert rules (`deploy/monitoring/alerts.yml`) pass their tests on synthetic
//! series (`alerts.test.yml`) under `promtool test rules`. promtool comes from Debian's
//! `prometheus` package (`deploy/setup-prometheus.sh`); without it the test says so and
//! passes, except under `CI=true`, where it fails. That every metric the rules and the
//! dashboard name is exported is checked against a running stack by
//! `consumers/bench/tests/any_order.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

#[test]
fn promtool_passes_the_shipped_alert_rules() {
    let dir = testkit::workspace_root().join("deploy/monitoring");
    let out = match Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required under CI=true: {e} (bash deploy/setup-prometheus.sh)"
            );
            eprintln!(
                "SKIPPED: promtool not found ({e}); bash deploy/setup-prometheus.sh installs it"
            );
            return;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}
