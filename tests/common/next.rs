//! The test build of a plausible next release (`--features next-release`:
//! one more migration, a later version string), built once into its own
//! target directory unless `CI_ERLMCP_NEXT_BIN` names it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

pub fn next_release_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("CI_ERLMCP_NEXT_BIN") {
            return PathBuf::from(p);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target").join("next-release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--locked",
                "--features",
                "fault-injection,next-release",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(&root)
            .status()
            .expect("run cargo to build the next release");
        assert!(status.success(), "building the next release failed");
        target.join("debug").join("erlmcp")
    })
    .clone()
}
