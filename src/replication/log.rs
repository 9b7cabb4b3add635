//! The replication log (`repl_log`): one entry per committed group that
//! changed a recorded table, with a sequence number, the epoch of the
//! primary that wrote it, and a hash chaining it to the entry before:
//! `hash(n) = SHA-256(hash(n-1) || seq || epoch || changeset)`, cut to 16
//! bytes. Two nodes agree on their history up to `seq` exactly when their
//! hashes at `seq` are equal, so a standby that holds an entry the primary
//! never committed (a group rolled back after it was shipped) is told apart
//! from one that is merely behind.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::store::StoreError;

pub(crate) type Hash = [u8; 16];

/// Where a log ends: the last entry's sequence, epoch and hash. The empty
/// log is at [`Position::GENESIS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) hash: Hash,
}

impl Position {
    pub(crate) const GENESIS: Position = Position {
        seq: 0,
        epoch: 0,
        hash: [0; 16],
    };
}

/// One log entry, as stored and as shipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) epoch: u64,
    pub(crate) hash: Hash,
    /// When the primary committed it (Unix milliseconds): lag in seconds.
    pub(crate) at_ms: i64,
    pub(crate) changeset: Vec<u8>,
}

impl Entry {
    pub(crate) fn position(&self) -> Position {
        Position {
            seq: self.seq,
            epoch: self.epoch,
            hash: self.hash,
        }
    }

    /// True when this entry follows `prev` and its hash is right.
    pub(crate) fn follows(&self, prev: &Position) -> bool {
        self.seq == prev.seq + 1
            && self.hash == chain(&prev.hash, self.seq, self.epoch, &self.changeset)
    }
}

/// The hash of entry `seq` after one hashed `prev`.
pub(crate) fn chain(prev: &Hash, seq: u64, epoch: u64, changeset: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(epoch.to_be_bytes());
    h.update(changeset);
    let full = h.finalize();
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn hash_of(blob: Vec<u8>) -> Result<Hash, StoreError> {
    blob.try_into().map_err(|b: Vec<u8>| {
        StoreError::Invalid(format!("a repl_log hash has {} bytes, not 16", b.len()))
    })
}

/// The end of the log.
pub(crate) fn last(conn: &Connection) -> Result<Position, StoreError> {
    let row = conn
        .query_row(
            "SELECT seq, epoch, hash FROM repl_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            },
        )
        .optional()?;
    match row {
        None => Ok(Position::GENESIS),
        Some((seq, epoch, hash)) => Ok(Position {
            seq: seq as u64,
            epoch: epoch as u64,
            hash: hash_of(hash)?,
        }),
    }
}

/// The hash of entry `seq`, if the log holds it.
pub(crate) fn hash_at(conn: &Connection, seq: u64) -> Result<Option<Hash>, StoreError> {
    if seq == 0 {
        return Ok(Some(Position::GENESIS.hash));
    }
    conn.query_row(
        "SELECT hash FROM repl_log WHERE seq = ?1",
        [seq as i64],
        |r| r.get::<_, Vec<u8>>(0),
    )
    .optional()?
    .map(hash_of)
    .transpose()
}

/// The first sequence the log still holds (entries below were pruned).
pub(crate) fn oldest(conn: &Connection) -> Result<Option<u64>, StoreError> {
    Ok(conn
        .query_row("SELECT min(seq) FROM repl_log", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .map(|s| s as u64))
}

/// Appends the changes of the group being committed in `conn`'s open
/// transaction, after whatever the log ends with (another process may
/// have appended since this one last looked).
pub(crate) fn append(
    conn: &Connection,
    epoch: u64,
    changeset: Vec<u8>,
) -> Result<Entry, StoreError> {
    let prev = last(conn)?;
    let seq = prev.seq + 1;
    let entry = Entry {
        seq,
        epoch,
        hash: chain(&prev.hash, seq, epoch, &changeset),
        at_ms: crate::clock::now_millis(),
        changeset,
    };
    insert(conn, &entry)?;
    Ok(entry)
}

/// Stores an entry as it came from the primary.
pub(crate) fn insert(conn: &Connection, e: &Entry) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO repl_log (seq, epoch, hash, at_ms, changeset) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            e.seq as i64,
            e.epoch as i64,
            &e.hash[..],
            e.at_ms,
            &e.changeset
        ],
    )?;
    Ok(())
}

/// Entries from `from` on, at most `max` of them and about `max_bytes`.
pub(crate) fn range(
    conn: &Connection,
    from: u64,
    max: usize,
    max_bytes: usize,
) -> Result<Vec<Entry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, epoch, hash, at_ms, changeset FROM repl_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![from as i64, max as i64], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Vec<u8>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let (seq, epoch, hash, at_ms, changeset) = row?;
        bytes += changeset.len();
        out.push(Entry {
            seq: seq as u64,
            epoch: epoch as u64,
            hash: hash_of(hash)?,
            at_ms,
            changeset,
        });
        if bytes >= max_bytes {
            break;
        }
    }
    Ok(out)
}

/// The last `n` (sequence, hash) pairs, newest first: what a node sends
/// so its peer can find where their histories part.
pub(crate) fn recent(conn: &Connection, n: usize) -> Result<Vec<(u64, Hash)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT seq, hash FROM repl_log ORDER BY seq DESC LIMIT ?1")?;
    let rows = stmt.query_map([n as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, hash) = row?;
        out.push((seq as u64, hash_of(hash)?));
    }
    Ok(out)
}

/// Deletes entries below `seq`; returns how many.
pub(crate) fn prune_below(conn: &Connection, seq: u64) -> Result<usize, StoreError> {
    Ok(conn.execute("DELETE FROM repl_log WHERE seq < ?1", [seq as i64])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrations::to_latest(&mut c).unwrap();
        c
    }

    #[test]
    fn entries_chain_and_a_changed_byte_breaks_the_chain() {
        let c = db();
        assert_eq!(last(&c).unwrap(), Position::GENESIS);
        let a = append(&c, 1, b"one".to_vec()).unwrap();
        let b = append(&c, 1, b"two".to_vec()).unwrap();
        assert!(a.follows(&Position::GENESIS));
        assert!(b.follows(&a.position()));
        assert_eq!(last(&c).unwrap(), b.position());
        let mut forged = b.clone();
        forged.changeset = b"tw0".to_vec();
        assert!(!forged.follows(&a.position()));
        assert_eq!(
            range(&c, 1, 10, 1 << 20).unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert_eq!(recent(&c, 1).unwrap(), vec![(2, b.hash)]);
        assert_eq!(hash_at(&c, 1).unwrap(), Some(a.hash));
        assert_eq!(prune_below(&c, 2).unwrap(), 1);
        assert_eq!(oldest(&c).unwrap(), Some(2));
    }
}
