//! The replication protocol: frames exchanged with the peer over one
//! duplex connection (a WebSocket on the ops listener). Log entries and
//! snapshot chunks travel as binary frames; everything else is a small JSON
//! control message.
//!
//! A connection opens with one request from the node that connected:
//! - `Hello` (a standby asking to follow): answered by `Welcome` and then a
//!   stream of entries (the standby answers `Ack`s), or by `Refuse`;
//! - `Status`: answered by `PeerStatus`, then closed;
//! - `Snapshot`: answered by `SnapshotMeta`, the file in `Chunk`s, `Done`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::log::{Entry, Hash, Position};

/// One message on the link.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Frame {
    Entry(Entry),
    Chunk(Vec<u8>),
    Control(Control),
}

/// Which role a node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Primary,
    Standby,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

/// Why a primary will not stream to a standby as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Refusal {
    /// The node asked is not a primary (now).
    NotPrimary,
    /// The standby must first take a snapshot: it is new, too far behind
    /// what the log still holds, or its history parted from the primary's.
    NeedSnapshot,
    /// The asking node knows a higher epoch: this primary is deposed.
    StaleEpoch,
    /// The standby's schema is older than the primary's: a newer schema's
    /// changes cannot be applied to an older one. Upgrade the standby first.
    OlderSchema,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Control {
    Hello {
        node: String,
        epoch: u64,
        last: Pos,
        /// The standby's newest (seq, hash) pairs, to find where histories part.
        recent: Vec<Pos>,
        /// The standby binary's schema version.
        #[serde(default)]
        schema: i64,
    },
    Welcome {
        node: String,
        epoch: u64,
        /// The first entry that will follow.
        from: u64,
    },
    Refuse {
        refusal: Refusal,
        reason: String,
        node: String,
        role: Role,
        epoch: u64,
        /// Entries of the standby's log the primary never had (to be
        /// discarded by the snapshot), when known.
        #[serde(default)]
        discarded: Option<u64>,
    },
    /// The standby has applied, durably, every entry up to `seq`.
    Ack {
        seq: u64,
    },
    /// The primary's tip, every half second.
    Heartbeat {
        epoch: u64,
        last_seq: u64,
        last_at_ms: i64,
        /// Whether the primary holds writes for this standby's acks: a
        /// standby that has every entry up to `last_seq` then has every
        /// acknowledged write.
        sync: bool,
    },
    Status,
    PeerStatus(PeerStatus),
    Snapshot,
    SnapshotMeta {
        position: Pos,
        bytes: u64,
        /// SHA-256 (hex) of the whole file.
        sha256: String,
        schema_version: i64,
    },
    Done,
    /// The sender stops, and says why.
    Stop {
        reason: String,
    },
}

/// What a node says about itself to its peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PeerStatus {
    pub(crate) node: String,
    pub(crate) role: Role,
    pub(crate) epoch: u64,
    pub(crate) last_seq: u64,
    /// A primary refusing writes (two primaries, no standby in block mode).
    pub(crate) writable: bool,
}

/// A log position as JSON (hash in hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pos {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) hash: String,
}

impl Pos {
    pub(crate) fn of(p: &Position) -> Pos {
        Pos {
            seq: p.seq,
            epoch: p.epoch,
            hash: hex::encode(p.hash),
        }
    }

    pub(crate) fn hash(&self) -> Result<Hash, FrameError> {
        let mut out = [0; 16];
        hex::decode_to_slice(&self.hash, &mut out).map_err(|_| FrameError::Malformed("hash"))?;
        Ok(out)
    }

    pub(crate) fn position(&self) -> Result<Position, FrameError> {
        Ok(Position {
            seq: self.seq,
            epoch: self.epoch,
            hash: self.hash()?,
        })
    }
}

#[derive(Debug, Error, PartialEq)]
pub(crate) enum FrameError {
    #[error("malformed replication frame: {0}")]
    Malformed(&'static str),
    #[error("malformed replication control message: {0}")]
    Json(String),
}

const ENTRY: u8 = b'E';
const CHUNK: u8 = b'C';
/// tag, seq, epoch, at_ms, hash.
const ENTRY_HEADER: usize = 1 + 8 + 8 + 8 + 16;

impl Frame {
    /// A binary frame's bytes.
    pub(crate) fn encode_binary(&self) -> Option<Vec<u8>> {
        match self {
            Frame::Entry(e) => {
                let mut out = Vec::with_capacity(ENTRY_HEADER + e.changeset.len());
                out.push(ENTRY);
                out.extend_from_slice(&e.seq.to_be_bytes());
                out.extend_from_slice(&e.epoch.to_be_bytes());
                out.extend_from_slice(&e.at_ms.to_be_bytes());
                out.extend_from_slice(&e.hash);
                out.extend_from_slice(&e.changeset);
                Some(out)
            }
            Frame::Chunk(data) => {
                let mut out = Vec::with_capacity(1 + data.len());
                out.push(CHUNK);
                out.extend_from_slice(data);
                Some(out)
            }
            Frame::Control(_) => None,
        }
    }

    /// A control frame's text.
    pub(crate) fn encode_text(&self) -> Option<String> {
        match self {
            Frame::Control(c) => {
                Some(serde_json::to_string(c).expect("control messages serialize"))
            }
            _ => None,
        }
    }

    pub(crate) fn decode_binary(b: &[u8]) -> Result<Frame, FrameError> {
        match b.first() {
            Some(&ENTRY) if b.len() >= ENTRY_HEADER => {
                let u = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
                let mut hash = [0; 16];
                hash.copy_from_slice(&b[25..41]);
                Ok(Frame::Entry(Entry {
                    seq: u(1),
                    epoch: u(9),
                    at_ms: u(17) as i64,
                    hash,
                    changeset: b[ENTRY_HEADER..].to_vec(),
                }))
            }
            Some(&ENTRY) => Err(FrameError::Malformed("short entry")),
            Some(&CHUNK) => Ok(Frame::Chunk(b[1..].to_vec())),
            Some(_) => Err(FrameError::Malformed("unknown tag")),
            None => Err(FrameError::Malformed("empty")),
        }
    }

    pub(crate) fn decode_text(t: &str) -> Result<Frame, FrameError> {
        serde_json::from_str(t)
            .map(Frame::Control)
            .map_err(|e| FrameError::Json(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_an_error() {
        let e = Frame::Entry(Entry {
            seq: 7,
            epoch: 2,
            hash: [9; 16],
            at_ms: 1_700_000_000_123,
            changeset: b"abc".to_vec(),
        });
        assert_eq!(
            Frame::decode_binary(&e.encode_binary().unwrap()).unwrap(),
            e
        );
        let c = Frame::Control(Control::Ack { seq: 3 });
        assert_eq!(Frame::decode_text(&c.encode_text().unwrap()).unwrap(), c);
        assert!(Frame::decode_binary(b"E123").is_err());
        assert!(Frame::decode_binary(b"").is_err());
        assert!(Frame::decode_binary(b"Z").is_err());
        assert!(Frame::decode_text("{\"type\":\"nope\"}").is_err());
        assert!(
            Pos {
                seq: 1,
                epoch: 1,
                hash: "zz".into()
            }
            .hash()
            .is_err()
        );
    }
}
