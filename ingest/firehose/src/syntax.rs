//! The identifier checks of the older API, kept for the crates not yet moved to
//! `contract::id` (the gateway). New code parses with [`contract::Did`],
//! [`contract::Nsid`] and [`contract::Rkey`]; the syntax and its interop tests live there.

/// An NSID check returning `Option`, as before `contract::Nsid::parse`.
pub struct Nsid;

impl Nsid {
    /// `contract::Nsid::parse(s).ok()`.
    pub fn parse(s: &str) -> Option<contract::Nsid<'_>> {
        contract::Nsid::parse(s).ok()
    }
}

/// `contract::Rkey::parse(s).is_ok()`.
pub fn is_record_key(s: &str) -> bool {
    contract::Rkey::parse(s).is_ok()
}

/// `contract::Did::parse(s).is_ok()`.
pub fn is_did(s: &str) -> bool {
    contract::Did::parse(s).is_ok()
}
