//! The users of `deploy/accounts.conf` as tests start them: the nats-server variable of
//! each password and a test password, for servers started from the shipped configuration
//! ([`crate::NatsServer::start_with_config`]).

/// (user, the nats-server variable of its password, a test password).
pub const USERS: [(&str, &str, &str); 7] = [
    ("ingest", "BSKY_NATS_INGEST_PASSWORD", "pIngestTest1"),
    ("charts", "BSKY_NATS_CHARTS_PASSWORD", "pChartsTest1"),
    ("feedgen", "BSKY_NATS_FEEDGEN_PASSWORD", "pFeedgenTest1"),
    ("gateway", "BSKY_NATS_GATEWAY_PASSWORD", "pGatewayTest1"),
    ("archive", "BSKY_NATS_ARCHIVE_PASSWORD", "pArchiveTest1"),
    ("operator", "BSKY_NATS_OPERATOR_PASSWORD", "pOperatorTest1"),
    ("sys", "BSKY_NATS_SYS_PASSWORD", "pSysTest1"),
];

/// The environment nats-server needs to parse `deploy/accounts.conf`.
pub fn server_env() -> Vec<(&'static str, &'static str)> {
    USERS.iter().map(|(_, var, pw)| (*var, *pw)).collect()
}

/// The test password of `user`, `None` for a user the configuration does not have.
pub fn password(user: &str) -> Option<&'static str> {
    USERS
        .iter()
        .find(|(u, _, _)| *u == user)
        .map(|(_, _, pw)| *pw)
}
