//! A MongoDB-wire-compatible server (in progress).
