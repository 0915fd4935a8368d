//! ferry's behaviour suite: black-box checks of the real step binaries.
//!
//! Each behaviour is written once and tagged with the step that introduces
//! it. It runs against that step and every later one, and a feature must
//! also FAIL on the step just before it, so that no test can pass on a
//! runtime that lacks the feature. See `ferry_tests::steps` for choosing the
//! binary under test (`FERRY_BIN`, `FERRY_STEP`, `FERRY_STEPS`).

mod basics;
mod cgroups;
mod check;
mod mount_overlay;
mod pid_ns;

use std::process::ExitCode;

use anyhow::Result;
use ferry_tests::steps::{self, Step};
use libtest_mimic::{Failed, Trial};

pub use check::Ctx;

/// One observable behaviour of a step binary.
pub struct Behaviour {
    pub name: &'static str,
    /// The step that introduces it.
    pub since: u8,
    pub kind: Kind,
    pub check: fn(&Ctx) -> Result<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something a step adds: it must fail on the step before.
    Feature,
    /// Bad input that the step before rejects as well (with an "unknown
    /// option" error, say), so it is exempt from failing there.
    RejectedBefore,
}

fn behaviours() -> impl Iterator<Item = &'static Behaviour> {
    basics::BEHAVIOURS
        .iter()
        .chain(pid_ns::BEHAVIOURS)
        .chain(mount_overlay::BEHAVIOURS)
        .chain(cgroups::BEHAVIOURS)
}

fn main() -> ExitCode {
    ferry_tests::run_trials(trials())
}

fn trials() -> Result<Vec<Trial>> {
    let privilege = ferry_tests::privileged();
    let since = steps::since()?;
    let mut trials = Vec::new();
    for step in steps::under_test()? {
        for behaviour in behaviours().filter(|behaviour| behaviour.since >= since) {
            let trial = if behaviour.since <= step.number {
                passes_on(step.clone(), behaviour)
            } else if behaviour.since == step.number + 1
                && behaviour.kind == Kind::Feature
                && !steps::grading()
            {
                fails_on(step.clone(), behaviour)
            } else {
                continue;
            };
            trials.push(privilege.gate(trial));
        }
    }
    Ok(trials)
}

fn passes_on(step: Step, behaviour: &'static Behaviour) -> Trial {
    Trial::test(format!("{}::{}", step.label(), behaviour.name), move || {
        let ctx = Ctx::new(step)?;
        (behaviour.check)(&ctx).map_err(|error| Failed::from(format!("{error:#}")))
    })
}

fn fails_on(step: Step, behaviour: &'static Behaviour) -> Trial {
    let name = format!(
        "{}::{}::fails_before_step{:02}",
        step.label(),
        behaviour.name,
        behaviour.since
    );
    Trial::test(name, move || {
        let ctx = Ctx::new(step)?;
        match (behaviour.check)(&ctx) {
            Err(_) => Ok(()),
            Ok(()) => Err(format!(
                "passes on {}, which lacks the feature: this test cannot tell the steps apart",
                ctx.step.label()
            )
            .into()),
        }
    })
}
