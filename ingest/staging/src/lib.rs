//! Staging relay (work in progress).
