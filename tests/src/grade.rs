//! Grading a lab (`just check N`): build the learner's crate, run the
//! behaviour suite against it as step N, and report every behaviour by name,
//! with a hint for each one that fails.
//!
//! The suite itself runs in its own process, the `behaviours` test binary:
//! `FERRY_BIN` and `FERRY_STEP` point it at the lab, and `FERRY_REPORT`
//! makes it write what happened to each behaviour as JSON, which this
//! module reads, prints, and turns into the instructor's JSON or JUnit.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::scratch::Scratch;
use crate::steps::Step;
use crate::{skeleton, workspace};

/// What the suite found of one behaviour.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The trial's name, `step02::sets_hostname`.
    pub trial: String,
    pub behaviour: String,
    /// The step that introduces the behaviour.
    pub since: u8,
    /// Whether failing on a lab that lacks the feature is expected of it
    /// (bad-input checks may pass there: other code rejects the input).
    pub feature: bool,
    pub passed: bool,
    /// Why it failed.
    pub message: String,
    /// What the behaviour checks, and where the book explains it.
    pub hint: String,
}

/// The report's form, shared with the behaviours harness, which writes it.
pub fn to_json(results: &[Verdict]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|r| {
                json!({
                    "trial": r.trial,
                    "behaviour": r.behaviour,
                    "since": r.since,
                    "feature": r.feature,
                    "passed": r.passed,
                    "message": r.message,
                    "hint": r.hint,
                })
            })
            .collect(),
    )
}

fn from_json(value: &Value) -> Result<Vec<Verdict>> {
    let field = |entry: &Value, key: &str| -> Result<Value> {
        entry
            .get(key)
            .cloned()
            .with_context(|| format!("a report entry has no {key}"))
    };
    let text = |entry: &Value, key: &str| -> Result<String> {
        Ok(field(entry, key)?.as_str().unwrap_or_default().to_owned())
    };
    value
        .as_array()
        .context("the report is not a list")?
        .iter()
        .map(|entry| {
            Ok(Verdict {
                trial: text(entry, "trial")?,
                behaviour: text(entry, "behaviour")?,
                since: u8::try_from(field(entry, "since")?.as_u64().unwrap_or(0))?,
                feature: field(entry, "feature")?.as_bool().unwrap_or(true),
                passed: field(entry, "passed")?.as_bool().unwrap_or(false),
                message: text(entry, "message")?,
                hint: text(entry, "hint")?,
            })
        })
        .collect()
}

/// The folder of step `step`'s lab below `labs`.
pub fn lab_folder(labs: &Path, step: &Step) -> PathBuf {
    labs.join(&step.folder)
}

/// Builds the lab crate in `folder` into the target folder `target` (the
/// workspace's, so that the dependencies built for the steps serve) and
/// returns its binary. Cargo's messages go to the caller's terminal: a
/// learner's compile errors are theirs to read.
pub fn build(folder: &Path, step: &Step, target: &Path) -> Result<PathBuf> {
    let manifest = folder.join("Cargo.toml");
    let status = Command::new("cargo")
        .args(["build", "-q", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target)
        .status()
        .context("run cargo")?;
    ensure!(
        status.success(),
        "{} does not build: the compiler's errors are above",
        folder.display()
    );
    Ok(target.join("debug").join(skeleton::crate_name(step)))
}

/// The behaviour suite's test binary, built if it is not.
fn suite() -> Result<PathBuf> {
    let output = Command::new("cargo")
        .args(["test", "-q", "-p", "ferry-tests", "--test", "behaviours"])
        .args(["--no-run", "--message-format=json"])
        .current_dir(workspace())
        .output()
        .context("run cargo")?;
    ensure!(
        output.status.success(),
        "the behaviour suite does not build: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message["target"]["name"] == "behaviours" && message["profile"]["test"] == true
        })
        .filter_map(|message| message["executable"].as_str().map(PathBuf::from))
        .next_back()
        .context("cargo built no behaviours test binary")
}

/// Runs every behaviour up to step `step` against `binary`, as root (through
/// sudo if need be), and returns what happened to each.
pub fn run_suite(binary: &Path, step: &Step) -> Result<Vec<Verdict>> {
    let suite = suite()?;
    let scratch = Scratch::new("report")?;
    let report = scratch.join("report.json");
    let mut command = if nix::unistd::geteuid().is_root() {
        Command::new(&suite)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("--preserve-env").arg(&suite);
        sudo
    };
    let output = command
        .args(["-q", "--test-threads", "2"])
        .env("FERRY_BIN", binary)
        .env("FERRY_STEP", step.number.to_string())
        .env("FERRY_REPORT", &report)
        .env_remove("FERRY_STEPS")
        .env_remove("FERRY_SINCE")
        .current_dir(workspace())
        .output()
        .context("run the behaviour suite")?;
    let Ok(text) = fs::read_to_string(&report) else {
        bail!(
            "the behaviour suite ended without a report ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let mut results = from_json(&serde_json::from_str(&text).context("read the report")?)?;
    results.sort_by(|a, b| (a.since, &a.behaviour).cmp(&(b.since, &b.behaviour)));
    Ok(results)
}

/// How many lines of a failure's message `just check` shows after the first.
const MESSAGE_LINES: usize = 6;

/// What `just check` prints: a line per behaviour, a hint under each that
/// failed, and the count.
pub fn summary(results: &[Verdict]) -> String {
    let mut text = String::new();
    for result in results {
        let verdict = if result.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(
            text,
            "{verdict}  step {:02}  {}",
            result.since, result.behaviour
        );
        if !result.passed {
            let _ = writeln!(text, "      checks: {}", result.hint);
            // What went wrong, shortened: the first lines say it.
            let mut lines = result
                .message
                .lines()
                .filter(|line| !line.trim().is_empty());
            let _ = writeln!(
                text,
                "      found:  {}",
                lines.next().unwrap_or("(no message)")
            );
            for line in lines.by_ref().take(MESSAGE_LINES) {
                let _ = writeln!(text, "              {line}");
            }
            if lines.next().is_some() {
                let _ = writeln!(text, "              …");
            }
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let _ = writeln!(text, "{passed} passed, {} failed", results.len() - passed);
    text
}

/// An instructor's report: the lab, the counts, and every behaviour.
pub fn json_report(step: &Step, lab: &Path, results: &[Verdict]) -> Value {
    let passed = results.iter().filter(|r| r.passed).count();
    json!({
        "step": step.number,
        "lab": lab.display().to_string(),
        "passed": passed,
        "failed": results.len() - passed,
        "behaviours": to_json(results),
    })
}

/// The same as JUnit XML, which most grading tools and CI systems read.
pub fn junit_report(step: &Step, results: &[Verdict]) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let failed = results.iter().filter(|r| !r.passed).count();
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuite name=\"lab{:02}\" tests=\"{}\" failures=\"{failed}\">\n",
        step.number,
        results.len()
    );
    for result in results {
        let _ = write!(
            xml,
            "  <testcase classname=\"step{:02}\" name=\"{}\"",
            result.since,
            escape(&result.behaviour)
        );
        if result.passed {
            xml.push_str("/>\n");
        } else {
            let _ = write!(
                xml,
                ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                escape(&result.hint),
                escape(&result.message)
            );
        }
    }
    xml.push_str("</testsuite>\n");
    xml
}
