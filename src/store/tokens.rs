//! Static API tokens: a name, the SHA-256 digest of a secret, the scopes it
//! grants, when it was made, when it expires and whether it was revoked.
//! The secret itself is never stored: it is shown once, when made.
//!
//! Why plain SHA-256 and not a password hash: a secret is 32 bytes from the
//! operating system's CSPRNG, so there is nothing to guess and nothing a
//! salt or a slow hash would protect; a fast digest lets every request be
//! checked against the table, so a revocation holds from the next request.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::StoreError;

/// What every secret starts with, so a leaked one is recognisable (secret
/// scanners, logs) and a wrong kind of credential is told apart at once.
pub const PREFIX: &str = "emcp_";

/// The longest secret accepted for a look-up (ours are 5 + 64 bytes); a
/// longer credential is refused without touching the database.
pub const MAX_SECRET_LEN: usize = 256;

/// A token as listed: everything but the secret.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Token {
    pub name: String,
    pub scopes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Token {
    /// `active`, `expired` or `revoked` at `now` (Unix seconds).
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Why a presented secret is not a valid token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired,
    Revoked,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown token",
            Refusal::Expired => "token expired",
            Refusal::Revoked => "token revoked",
        }
    }
}

/// A new secret: `emcp_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{PREFIX}{}", hex::encode(bytes))
}

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Stores a token; a name already taken is [`StoreError::Invalid`].
pub fn insert(tx: &Transaction<'_>, token: &Token, hash: &[u8; 32]) -> Result<(), StoreError> {
    let taken: bool = tx
        .query_row(
            "SELECT 1 FROM tokens WHERE name = ?1",
            [&token.name],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if taken {
        return Err(StoreError::Invalid(format!(
            "a token named {:?} exists already (revoke it, or choose another name)",
            token.name
        )));
    }
    tx.execute(
        "INSERT INTO tokens (name, hash, scopes, created_at, expires_at, revoked_at)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
        params![
            token.name,
            &hash[..],
            token.scopes.join(" "),
            token.created_at,
            token.expires_at
        ],
    )?;
    Ok(())
}

/// Marks a token revoked (at `now`); false when there is no such token.
/// Revoking twice keeps the first time.
pub fn revoke(tx: &Transaction<'_>, name: &str, now: i64) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE name = ?1",
        params![name, now],
    )?;
    Ok(n > 0)
}

/// A revocation as a restore carries it over: the token's digest, and
/// when it was revoked.
pub type Revocation = (Vec<u8>, i64);

/// Every revocation; none in a database older than the tokens.
pub fn revocations(conn: &Connection) -> Result<Vec<Revocation>, StoreError> {
    if !has_table(conn)? {
        return Ok(Vec::new());
    }
    let mut stmt =
        conn.prepare("SELECT hash, revoked_at FROM tokens WHERE revoked_at IS NOT NULL")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Revokes the tokens of `revs` still active here (a database restored
/// from a backup made before they were revoked); returns how many.
pub fn apply_revocations(tx: &Transaction<'_>, revs: &[Revocation]) -> Result<usize, StoreError> {
    if !has_table(tx)? {
        return Ok(0);
    }
    let mut stmt =
        tx.prepare("UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL")?;
    let mut n = 0;
    for (hash, at) in revs {
        n += stmt.execute(params![hash, at])?;
    }
    Ok(n)
}

fn has_table(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'tokens'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Every token, by name.
pub fn list(conn: &Connection) -> Result<Vec<Token>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, scopes, created_at, expires_at, revoked_at FROM tokens ORDER BY name",
    )?;
    let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    let scopes: String = r.get(1)?;
    Ok(Token {
        name: r.get(0)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}

/// The name of the token `secret` belongs to, whatever its state.
pub fn name_of(conn: &Connection, secret: &str) -> Result<Option<String>, StoreError> {
    let hash = digest(secret);
    Ok(conn
        .query_row(
            "SELECT name FROM tokens WHERE hash = ?1",
            [&hash[..]],
            |r| r.get(0),
        )
        .optional()?)
}

/// The token a presented secret belongs to, if it is valid at `now`.
///
/// The look-up is by digest, so what a timing difference could reveal is
/// how much of a *digest* matched, which tells nothing about a secret; the
/// digest found is compared once more in constant time all the same.
pub fn verify(
    conn: &Connection,
    secret: &str,
    now: i64,
) -> Result<Result<Token, Refusal>, StoreError> {
    if secret.len() > MAX_SECRET_LEN || !secret.starts_with(PREFIX) {
        return Ok(Err(Refusal::Unknown));
    }
    let wanted = digest(secret);
    let mut stmt = conn.prepare_cached(
        "SELECT name, scopes, created_at, expires_at, revoked_at, hash FROM tokens WHERE hash = ?1",
    )?;
    let found = stmt
        .query_row([&wanted[..]], |r| {
            let hash: Vec<u8> = r.get(5)?;
            Ok((row(r)?, hash))
        })
        .optional()?;
    let Some((token, hash)) = found else {
        return Ok(Err(Refusal::Unknown));
    };
    if !bool::from(hash.as_slice().ct_eq(&wanted[..])) {
        return Ok(Err(Refusal::Unknown));
    }
    Ok(match token.state(now) {
        "revoked" => Err(Refusal::Revoked),
        "expired" => Err(Refusal::Expired),
        _ => Ok(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrations::to_latest(&mut c).unwrap();
        c
    }

    fn token(name: &str, expires_at: Option<i64>) -> Token {
        Token {
            name: name.into(),
            scopes: vec!["memory:read".into(), "tool:x".into()],
            created_at: 100,
            expires_at,
            revoked_at: None,
        }
    }

    #[test]
    fn a_secret_finds_its_token_until_revoked_or_expired() {
        let mut c = db();
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 64);
        let tx = c.transaction().unwrap();
        insert(&tx, &token("a", None), &digest(&a)).unwrap();
        insert(&tx, &token("b", Some(200)), &digest(&b)).unwrap();
        assert!(insert(&tx, &token("a", None), &digest(&b)).is_err());
        tx.commit().unwrap();

        let got = verify(&c, &a, 150).unwrap().unwrap();
        assert_eq!(got.scopes, vec!["memory:read", "tool:x"]);
        assert_eq!(verify(&c, &b, 150).unwrap().unwrap().name, "b");
        assert_eq!(verify(&c, &b, 200).unwrap(), Err(Refusal::Expired));
        assert_eq!(verify(&c, "emcp_nope", 150).unwrap(), Err(Refusal::Unknown));
        assert_eq!(verify(&c, &a[1..], 150).unwrap(), Err(Refusal::Unknown));
        let long = format!("{PREFIX}{}", "a".repeat(MAX_SECRET_LEN));
        assert_eq!(verify(&c, &long, 150).unwrap(), Err(Refusal::Unknown));

        let tx = c.transaction().unwrap();
        assert!(revoke(&tx, "a", 160).unwrap());
        assert!(revoke(&tx, "a", 170).unwrap());
        assert!(!revoke(&tx, "zz", 170).unwrap());
        tx.commit().unwrap();
        assert_eq!(verify(&c, &a, 180).unwrap(), Err(Refusal::Revoked));
        let l = list(&c).unwrap();
        assert_eq!(l[0].revoked_at, Some(160));
        assert_eq!(l[0].state(180), "revoked");
        assert_eq!(l[1].state(150), "active");
    }
}
