//! Build script: records the git revision the binary is built from, for `--version` and the
//! `fapi_gateway_build_info` metric. `FAPI_GATEWAY_GIT_REVISION` set in the environment wins
//! (container builds have no `.git`); else `git rev-parse`; else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo::rerun-if-env-changed=FAPI_GATEWAY_GIT_REVISION");
    let revision = match std::env::var("FAPI_GATEWAY_GIT_REVISION") {
        Ok(revision) if !revision.trim().is_empty() => revision.trim().to_string(),
        _ => {
            if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                // A new commit or checkout changes HEAD or a ref: record the new revision.
                println!("cargo::rerun-if-changed={git_dir}/HEAD");
                println!("cargo::rerun-if-changed={git_dir}/refs/heads");
                println!("cargo::rerun-if-changed={git_dir}/packed-refs");
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo::rustc-env=FAPI_GATEWAY_GIT_REVISION={revision}");
}
