//! Which release this binary is: what the upgrade machinery records and
//! compares, and what `serverInfo` and `erlmcp --version` say.

/// This release's version string.
#[cfg(not(feature = "next-release"))]
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The test build of a plausible next release (one more migration): never
/// a release build. It must read as another release than this one.
#[cfg(feature = "next-release")]
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-next");
