//! Protocol revisions this server speaks, and how one is chosen.
//!
//! Revisions up to 2025-11-25 are *legacy*: a client opens a session with
//! `initialize` and the version is fixed for that session. 2026-07-28 is
//! *modern*: every request names its version in `_meta`, there is no session.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every version we serve, oldest first.
    pub const ALL: [ProtocolVersion; 4] = [
        Self::V2025_03_26,
        Self::V2025_06_18,
        Self::V2025_11_25,
        Self::V2026_07_28,
    ];

    /// The newest version that uses the `initialize` handshake; what we offer
    /// a legacy client whose requested version we do not know.
    pub const NEWEST_LEGACY: ProtocolVersion = Self::V2025_11_25;

    /// The newest modern (stateless) version.
    pub const NEWEST_MODERN: ProtocolVersion = Self::V2026_07_28;

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "2025-03-26" => Self::V2025_03_26,
            "2025-06-18" => Self::V2025_06_18,
            "2025-11-25" => Self::V2025_11_25,
            "2026-07-28" => Self::V2026_07_28,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// Modern versions carry version and capabilities on every request and
    /// have no sessions.
    pub fn is_stateless(self) -> bool {
        self >= Self::V2026_07_28
    }

    /// Version negotiation for `initialize`: echo a legacy version we support,
    /// otherwise offer our newest legacy version. Never fails.
    pub fn negotiate_legacy(requested: &str) -> Self {
        match Self::parse(requested) {
            Some(v) if !v.is_stateless() => v,
            _ => Self::NEWEST_LEGACY,
        }
    }

    /// Versions listed in `UnsupportedProtocolVersion` errors and
    /// `server/discover`, newest first.
    pub fn supported_strings() -> Vec<&'static str> {
        Self::ALL.iter().rev().map(|v| v.as_str()).collect()
    }

    /// Since 2025-11-25 a server primes each SSE stream with an event id and an
    /// empty data field so the client can resume it.
    pub fn primes_sse_streams(self) -> bool {
        self >= Self::V2025_11_25
    }

    /// `title`, `outputSchema`/`structuredContent` and resource links arrived
    /// in 2025-06-18.
    pub fn has_titles(self) -> bool {
        self >= Self::V2025_06_18
    }

    /// Tasks as the core's experimental utility (`capabilities.tasks`,
    /// `execution.taskSupport`, `tasks/result`, `tasks/list`): 2025-11-25
    /// only; 2026-07-28 moved them to the `io.modelcontextprotocol/tasks`
    /// extension.
    pub fn has_experimental_tasks(self) -> bool {
        self == Self::V2025_11_25
    }

    /// Icons on tools, prompts, resources and implementations arrived in 2025-11-25.
    pub fn has_icons(self) -> bool {
        self >= Self::V2025_11_25
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_known_legacy_versions() {
        for v in ["2025-03-26", "2025-06-18", "2025-11-25"] {
            assert_eq!(ProtocolVersion::negotiate_legacy(v).as_str(), v);
        }
    }

    #[test]
    fn negotiation_offers_newest_legacy_otherwise() {
        for v in ["2024-11-05", "1900-01-01", "", "2026-07-28"] {
            assert_eq!(
                ProtocolVersion::negotiate_legacy(v),
                ProtocolVersion::V2025_11_25
            );
        }
    }
}
