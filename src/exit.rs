//! Process exit codes (sysexits-style), documented in
//! `docs/operations/exit-codes.md`. systemd's `RestartPreventExitStatus=`
//! lists the ones a restart cannot fix.

/// Runtime failure; a restart may help.
pub const FAILURE: u8 = 1;
/// Bad command line (clap's own code).
pub const USAGE: u8 = 2;
/// The database was written by a newer erlmcp (schema too new), or a backup
/// to restore has a schema newer than this binary.
pub const DATA_TOO_NEW: u8 = 65;
/// A backup is unusable: it failed verification (checksum, decompression,
/// integrity check) or its manifest is unreadable. Same sysexits class as
/// [`DATA_TOO_NEW`] (EX_DATAERR); `--json` output tells them apart.
pub const DATA_ERROR: u8 = 65;
/// The named backup does not exist, there is no good backup, or there is no
/// database to back up (EX_NOINPUT).
pub const NO_INPUT: u8 = 66;
/// Writing a backup failed: disk full, I/O error (EX_IOERR).
pub const IO_ERROR: u8 = 74;
/// Try again later: another backup/restore is running, or a daemon holds
/// the data directory and could not be reached (EX_TEMPFAIL).
pub const TEMP_FAIL: u8 = 75;
/// A listener could not be bound.
pub const UNAVAILABLE: u8 = 69;
/// The data directory or database cannot be created or opened.
pub const CANT_CREATE: u8 = 73;
/// The ops listener refused the command's credential: none, unknown,
/// expired, revoked, or without scope `ops` (EX_NOPERM).
pub const NO_PERM: u8 = 77;
/// The configuration is invalid.
pub const CONFIG: u8 = 78;
