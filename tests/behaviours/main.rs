//! ferry's behaviour suite: black-box checks of the real step binaries.
//!
//! Each behaviour is written once and tagged with the step that introduces
//! it. It runs against that step and every later one, and a feature must
//! also FAIL on the step just before it, so that no test can pass on a
//! runtime that lacks the feature. See `ferry_tests::steps` for choosing the
//! binary under test (`FERRY_BIN`, `FERRY_STEP`, `FERRY_STEPS`).
//! With `FERRY_REPORT=FILE` the suite also writes what happened to each
//! behaviour as JSON, for `just check` (see `ferry_tests::grade`).

mod basics;
mod cgroups;
mod check;
mod full_runtime;
mod mount_overlay;
mod network;
mod pid_ns;
mod registry;

use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::{Context, Result};
use ferry_tests::grade::Verdict;
use ferry_tests::steps::{self, Step};
use libtest_mimic::{Failed, Trial};

pub use check::Ctx;

/// One observable behaviour of a step binary.
pub struct Behaviour {
    pub name: &'static str,
    /// What it checks, and where the book explains it: shown to a learner
    /// whose lab fails it.
    pub hint: &'static str,
    /// The step that introduces it.
    pub since: u8,
    pub kind: Kind,
    pub check: fn(&Ctx) -> Result<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something a step adds: it must fail on the step before, and on a lab
    /// of the step that nobody has written yet.
    Feature,
    /// A promise that every step from `since` on keeps, though no code of
    /// that step's own makes it true (step 01 gives the terminal back only
    /// because it makes no PID namespace to take it): exempt from failing
    /// on an unwritten lab of that step.
    Kept,
    /// Bad input, which the step before rejects as well (with an "unknown
    /// option" error, say), and so may a lab before it is written: exempt
    /// from failing on either.
    BadInput,
}

fn behaviours() -> impl Iterator<Item = &'static Behaviour> {
    basics::BEHAVIOURS
        .iter()
        .chain(pid_ns::BEHAVIOURS)
        .chain(mount_overlay::BEHAVIOURS)
        .chain(cgroups::BEHAVIOURS)
        .chain(network::BEHAVIOURS)
        .chain(registry::BEHAVIOURS)
        .chain(full_runtime::BEHAVIOURS)
}

/// What each trial found, for FERRY_REPORT.
static VERDICTS: Mutex<Vec<Verdict>> = Mutex::new(Vec::new());

fn main() -> ExitCode {
    let code = ferry_tests::run_trials(trials());
    if let Some(path) = std::env::var_os("FERRY_REPORT") {
        let verdicts = VERDICTS.lock().expect("no trial panicked holding it");
        let report = ferry_tests::grade::to_json(&verdicts).to_string();
        if let Err(error) = std::fs::write(&path, report)
            .with_context(|| format!("write the report {}", path.to_string_lossy()))
        {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    code
}

fn trials() -> Result<Vec<Trial>> {
    let privilege = ferry_tests::privileged();
    let since = steps::since()?;
    let under_test = steps::under_test()?;
    // A feature is checked to fail on the step before only in a run that
    // tests the feature's own step too (FERRY_STEPS=3,4 checks step 04's
    // features on step 03, not step 05's on step 04).
    let tested: Vec<u8> = under_test.iter().map(|step| step.number).collect();
    let mut trials = Vec::new();
    for step in under_test {
        for behaviour in behaviours().filter(|behaviour| behaviour.since >= since) {
            let trial = if behaviour.since <= step.number {
                passes_on(step.clone(), behaviour)
            } else if behaviour.since == step.number + 1
                && behaviour.kind == Kind::Feature
                && tested.contains(&behaviour.since)
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
    let name = format!("{}::{}", step.label(), behaviour.name);
    Trial::test(name.clone(), move || {
        let outcome = Ctx::new(step, behaviour).and_then(|ctx| (behaviour.check)(&ctx));
        let message = outcome.as_ref().err().map(|error| format!("{error:#}"));
        VERDICTS
            .lock()
            .expect("no trial panicked holding it")
            .push(Verdict {
                trial: name,
                behaviour: behaviour.name.to_owned(),
                since: behaviour.since,
                feature: behaviour.kind == Kind::Feature,
                passed: message.is_none(),
                message: message.clone().unwrap_or_default(),
                hint: behaviour.hint.to_owned(),
            });
        match message {
            None => Ok(()),
            // A learner grading their own code reads what the behaviour
            // is about, not only what went wrong.
            Some(message) if steps::grading() => {
                Err(format!("{message}\nchecks: {}", behaviour.hint).into())
            }
            Some(message) => Err(Failed::from(message)),
        }
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
        let ctx = Ctx::new(step, behaviour)?;
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
