//! A server that dies on start is reported with its exit status and its log.
//! Own test binary: writing and then executing a script while other threads
//! fork can fail with "text file busy", so this binary has one test only.

#![allow(clippy::expect_used)] // a test fails loudly on any unexpected error

use std::fs;
use std::os::unix::fs::PermissionsExt;

use testkit::{Error, NatsServer};

#[test]
fn a_server_that_dies_is_reported_with_its_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("nats-server");
    fs::write(
        &fake,
        "#!/bin/sh\n\
         if [ \"$1\" = --version ]; then echo 'nats-server: v2.14.6'; exit 0; fi\n\
         echo 'fatal: pretend the store is corrupt' >&2\n\
         exit 3\n",
    )
    .expect("write");
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).expect("chmod");

    let err = NatsServer::start_with_binary(&fake).expect_err("it exits at once");
    assert!(matches!(err, Error::Exited { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(
        message.contains("fatal: pretend the store is corrupt"),
        "{message}"
    );

    // A binary whose --version names no version is refused before it is started.
    let err = NatsServer::start_with_binary("/bin/true").expect_err("not a nats-server");
    assert!(matches!(err, Error::Version { .. }), "{err}");
}
