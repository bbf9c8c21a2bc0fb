//! Pure decoder (work in progress).
