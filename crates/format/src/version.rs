//! MongoDB server versions as the tools record them (`buildInfo.version` in archive headers and
//! `prelude.json`), parsed the way mongorestore parses them.

use std::fmt;

/// A server version `major.minor.patch`, parsed the way the tools parse `buildInfo.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    /// Major version.
    pub major: i64,
    /// Minor version.
    pub minor: i64,
    /// Patch version.
    pub patch: i64,
}

impl ServerVersion {
    /// The first version whose timeseries collections are "viewless" (data under the
    /// collection's own name).
    pub const RAW_DATA: Self = Self {
        major: 8,
        minor: 3,
        patch: 0,
    };

    /// Parses `X.Y.Z`, ignoring everything from the first `-` and then from the first `+`
    /// (`"5.0.0-rc0"`, `"7.0.16+ent"`). Each part must be a decimal integer; anything else,
    /// including `"unknown"` or `"3.4"`, is `None`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.split('-').next().unwrap_or_default();
        let text = text.split('+').next().unwrap_or_default();
        let mut parts = text.splitn(3, '.');
        let mut next = || parts.next().and_then(|p| p.parse::<i64>().ok());
        let (major, minor, patch) = (next()?, next()?, next()?);
        Some(Self { major, minor, patch })
    }

    /// Whether timeseries data is stored under the collection's own name (≥ 8.3.0).
    #[must_use]
    pub fn supports_raw_data(self) -> bool {
        self >= Self::RAW_DATA
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}
