//! The steps under test, and the binary that stands for each.
//!
//! By default every folder `steps/NN-slug` is a step, tested through the
//! binary `stepNN-slug` that cargo built. To grade another implementation
//! (a learner's own), set `FERRY_BIN=/path/to/binary` and `FERRY_STEP=N`:
//! the suite then runs every behaviour up to step N against that binary alone
//! (a relative path is taken from the workspace's top folder).
//! `FERRY_STEPS=2,3` limits a normal run to those steps' binaries, and
//! `FERRY_SINCE=4` to the behaviours that step 04 or a later one introduced.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};

use crate::{target_dir, workspace};

#[derive(Debug, Clone)]
pub struct Step {
    pub number: u8,
    /// The folder name, `02-pid-ns`.
    pub folder: String,
    pub binary: PathBuf,
}

impl Step {
    pub fn label(&self) -> String {
        format!("step{:02}", self.number)
    }
}

/// Every step folder in the workspace, in order, with cargo's binary for each.
pub fn workspace_steps() -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let dir = workspace().join("steps");
    for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let folder = entry?.file_name().to_string_lossy().into_owned();
        let Some(number) = folder.get(..2).and_then(|n| n.parse().ok()) else {
            continue;
        };
        let binary = target_dir().join("debug").join(binary_name(&folder)?);
        steps.push(Step {
            number,
            folder,
            binary,
        });
    }
    steps.sort_by_key(|step| step.number);
    for (expected, step) in (1..).zip(&steps) {
        ensure!(
            step.number == expected,
            "steps/ has no step {expected:02}: {}",
            step.folder
        );
    }
    Ok(steps)
}

/// The name of the binary that step `folder` builds: its `[[bin]]` name
/// (step 07's is `ferry`), or the package's, `stepNN-slug`.
pub fn binary_name(folder: &str) -> Result<String> {
    let path = workspace().join("steps").join(folder).join("Cargo.toml");
    let manifest: toml::Table = fs::read_to_string(&path)
        .with_context(|| format!("read {}", path.display()))?
        .parse()
        .with_context(|| format!("parse {}", path.display()))?;
    let bin = manifest
        .get("bin")
        .and_then(|bins| bins.as_array()?.first()?.get("name")?.as_str());
    Ok(bin.map_or_else(|| format!("step{folder}"), str::to_owned))
}

/// Step `number` of the workspace.
pub fn workspace_step(number: u8) -> Result<Step> {
    let all = workspace_steps()?;
    let last = all.last().map_or(0, |step| step.number);
    all.into_iter()
        .find(|step| step.number == number)
        .with_context(|| format!("there is no step {number} in steps/: the steps are 1 to {last}"))
}

/// The steps this run tests: see the module's documentation.
pub fn under_test() -> Result<Vec<Step>> {
    let all = workspace_steps()?;
    if let Some(binary) = std::env::var_os("FERRY_BIN") {
        let number: u8 = std::env::var("FERRY_STEP")
            .context("FERRY_BIN needs FERRY_STEP=N: which step the binary claims to be")?
            .parse()
            .context("FERRY_STEP must be a step number")?;
        let Some(step) = all.into_iter().find(|step| step.number == number) else {
            bail!("FERRY_STEP={number}: there is no such step");
        };
        // Relative to the workspace, where `just` runs its recipes.
        let binary = workspace().join(binary);
        return Ok(vec![Step { binary, ..step }]);
    }
    let Ok(only) = std::env::var("FERRY_STEPS") else {
        return Ok(all);
    };
    let wanted: Vec<u8> = only
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .with_context(|| format!("FERRY_STEPS: bad step {n:?}"))
        })
        .collect::<Result<_>>()?;
    Ok(all
        .into_iter()
        .filter(|step| wanted.contains(&step.number))
        .collect())
}

/// The oldest step whose behaviours this run checks (FERRY_SINCE, or 1).
pub fn since() -> Result<u8> {
    match std::env::var("FERRY_SINCE") {
        Ok(number) => number
            .parse()
            .with_context(|| format!("FERRY_SINCE: bad step {number:?}")),
        Err(_) => Ok(1),
    }
}

/// Whether this run grades one foreign binary (FERRY_BIN) rather than the workspace.
pub fn grading() -> bool {
    std::env::var_os("FERRY_BIN").is_some()
}
