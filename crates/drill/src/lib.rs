//! Restore drills and queryable backups of repository snapshots.
//!
//! Both take a snapshot out of a [`tidemark_repo::Repository`] and put it into a running server:
//! a [`drill`](mod@drill) restores it with the ordinary restore engine and proves the result equal to the
//! snapshot's manifest, returning a typed [`drill::DrillReport`]; [`serve`] answers queries on it
//! read-only at once, loading its documents in the background and reporting
//! [`serve::LoadEvent`]s. The library never prints: the command line renders reports, progress
//! and exit codes.

pub mod drill;
pub mod serve;

use std::fmt;

use tidemark_repo::SnapshotReader;
use tidemark_repo::snapshot::Member;

pub use drill::{DrillOptions, DrillProgress, DrillReport, DrillStart, DrillTarget, drill};

/// Why a drill or a serve could not run.
///
/// Like `anyhow::Error`, any error converts into it with `?`; [`Error::is_invalid_option`] tells
/// an option that does not fit the repository (a usage error) from a failure.
pub struct Error {
    invalid_option: bool,
    error: anyhow::Error,
}

impl Error {
    /// An option that does not fit the repository or snapshot (no such member, ...).
    pub fn invalid_option(message: impl Into<String>) -> Self {
        Self {
            invalid_option: true,
            error: anyhow::anyhow!(message.into()),
        }
    }

    /// Whether the error is an option that does not fit (rather than a failure while working).
    #[must_use]
    pub fn is_invalid_option(&self) -> bool {
        self.invalid_option
    }

    /// The error with its chain of causes.
    #[must_use]
    pub fn into_inner(self) -> anyhow::Error {
        self.error
    }
}

impl<E: Into<anyhow::Error>> From<E> for Error {
    fn from(error: E) -> Self {
        Self {
            invalid_option: false,
            error: error.into(),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// The member to work on: `wanted`, or the only one.
///
/// # Errors
/// An invalid option: `wanted` is not a member, or none is given and the snapshot holds several.
pub fn pick_member<'a>(reader: &'a SnapshotReader, wanted: Option<&str>) -> Result<&'a Member, Error> {
    let members = reader.members();
    match wanted {
        Some(name) => members.iter().find(|m| m.name == name).ok_or_else(|| {
            Error::invalid_option(format!(
                "snapshot {} has no member {name:?} (members: {})",
                reader.id(),
                member_names(members)
            ))
        }),
        None if members.len() == 1 => Ok(&members[0]),
        None => Err(Error::invalid_option(format!(
            "snapshot {} holds {} members ({}); choose one with --member",
            reader.id(),
            members.len(),
            member_names(members)
        ))),
    }
}

fn member_names(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                "\"\"".to_owned()
            } else {
                m.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
