//! What every run that starts registries does first and last: find the berth
//! binary to measure (and check distribution's is there), make the run's
//! temporary directory, and finally keep or remove it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::Args;
use tempfile::TempDir;

use crate::{
    progress::{phase, spinner},
    servers::RegistryKind,
};

/// The target directory this binary was built into (berth goes beside it).
fn target_dir(workspace: &Path) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent() {
            let name = profile_dir.file_name().and_then(|n| n.to_str());
            if matches!(name, Some("release" | "debug")) {
                if let Some(t) = profile_dir.parent() {
                    return t.to_path_buf();
                }
            }
        }
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

/// `cargo build --release --bin berth` in this workspace; the binary's path.
async fn build_berth() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let target = target_dir(&workspace);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    phase("building berth (cargo build --release --bin berth)");
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--release", "--bin", "berth"])
        .env("CARGO_TARGET_DIR", &target)
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(1800), cmd.status())
        .await
        .context("cargo build timed out")??;
    if !status.success() {
        bail!("cargo build --release --bin berth failed ({status})");
    }
    let bin = target.join("release").join("berth");
    if !bin.exists() {
        bail!("built berth not found at {}", bin.display());
    }
    Ok(bin)
}

/// The binaries a run measures.
#[derive(Args, Clone, Debug)]
pub struct BinaryArgs {
    /// Use this berth binary instead of `cargo build --release --bin berth`.
    #[arg(long)]
    pub berth_bin: Option<PathBuf>,
    /// distribution's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub registry_bin: PathBuf,
}

/// The berth binary: `--berth-bin`, else a release build of this workspace.
/// Unless `berth_only`, distribution's binary must exist too.
pub async fn binaries(bins: &BinaryArgs, berth_only: bool) -> Result<PathBuf> {
    let berth = match &bins.berth_bin {
        Some(p) => p.clone(),
        None => build_berth().await?,
    };
    if !berth_only && !bins.registry_bin.exists() {
        bail!(
            "{} not found (apt-get install docker-registry), or use --berth-only",
            bins.registry_bin.display()
        );
    }
    Ok(berth)
}

/// The registries a run measures, each with its binary: Berth, then
/// distribution unless `berth_only`.
pub fn registries<'a>(
    berth: &'a Path,
    bins: &'a BinaryArgs,
    berth_only: bool,
) -> Vec<(RegistryKind, &'a Path)> {
    let mut kinds = vec![(RegistryKind::Berth, berth)];
    if !berth_only {
        kinds.push((RegistryKind::Distribution, bins.registry_bin.as_path()));
    }
    kinds
}

/// A fresh `<prefix>…` directory in `workdir` (else the system's temporary
/// directory), announced as the run's work directory.
pub fn work_dir(prefix: &str, workdir: Option<&Path>) -> Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let tmp = match workdir {
        Some(w) => builder.tempdir_in(w)?,
        None => builder.tempdir()?,
    };
    phase(&format!("work directory {}", tmp.path().display()));
    Ok(tmp)
}

/// Keep the work directory (noting where) or remove it behind a spinner:
/// removing a large root takes a while.
pub fn finish_work_dir(tmp: TempDir, keep: bool, notes: &mut Vec<String>) {
    if keep {
        let kept = tmp.keep();
        notes.push(format!("work directory kept: {}", kept.display()));
    } else {
        let sp = spinner("removing the work directory");
        drop(tmp);
        sp.finish_and_clear();
    }
}
