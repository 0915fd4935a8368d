//! The labs (`just lab N`): for every step, the lab generated from it builds,
//! and graded as that step (`just check N`) it passes every behaviour of the
//! earlier steps and fails every feature of its own. So a lab that is
//! impossible (an earlier step's behaviour broken by a cut) or already
//! solved (a feature its cuts leave working) is caught here. That the
//! reference step passes the same grading is the behaviour suite's own run.

use std::process::ExitCode;

use anyhow::{Result, ensure};
use ferry_tests::scratch::Scratch;
use ferry_tests::steps::{self, Step};
use ferry_tests::{grade, privileged, skeleton, target_dir};
use libtest_mimic::{Failed, Trial};

fn main() -> ExitCode {
    ferry_tests::run_trials(trials())
}

fn trials() -> Result<Vec<Trial>> {
    let privilege = privileged();
    Ok(steps::workspace_steps()?
        .into_iter()
        .map(|step| {
            let name = format!(
                "labs::{}::fails_its_step_and_passes_the_earlier_ones",
                step.label()
            );
            privilege.gate(Trial::test(name, move || {
                lab_grades_as_intended(&step).map_err(|error| Failed::from(format!("{error:#}")))
            }))
        })
        .collect())
}

fn lab_grades_as_intended(step: &Step) -> Result<()> {
    let scratch = Scratch::new("lab")?;
    let folder = scratch.join(&step.folder);
    skeleton::write(step, &folder)?;
    // A target folder of the test's own: a learner's labs/ builds into
    // target/debug under the same crate names, and must not be overwritten.
    let binary = grade::build(
        &folder,
        step,
        &target_dir().join("ferry").join("labs-check"),
    )?;
    let verdicts = grade::run_suite(&binary, step)?;
    let wrong: Vec<String> = verdicts
        .iter()
        .filter_map(|v| {
            if v.since < step.number && !v.passed {
                Some(format!(
                    "{} fails on the lab, but is not the lab's to write: {}",
                    v.trial, v.message
                ))
            } else if v.since == step.number && v.feature && v.passed {
                Some(format!(
                    "{} passes on the lab before anything is written: its cuts leave it working",
                    v.trial
                ))
            } else {
                None
            }
        })
        .collect();
    ensure!(
        verdicts.iter().any(|v| v.since == step.number),
        "the grading ran no behaviour of step {:02}",
        step.number
    );
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
