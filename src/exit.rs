//! Process exit codes (sysexits-style), documented in
//! `docs/operations/exit-codes.md`. systemd's `RestartPreventExitStatus=`
//! lists the ones a restart cannot fix.

/// Runtime failure; a restart may help.
pub const FAILURE: u8 = 1;
/// Bad command line (clap's own code).
pub const USAGE: u8 = 2;
/// The database was written by a newer erlmcp (schema too new).
pub const DATA_TOO_NEW: u8 = 65;
/// A listener could not be bound.
pub const UNAVAILABLE: u8 = 69;
/// The data directory or database cannot be created or opened.
pub const CANT_CREATE: u8 = 73;
/// The configuration is invalid.
pub const CONFIG: u8 = 78;
