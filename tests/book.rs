//! Checks on the book: includes resolve, generated step diffs and pictures
//! are fresh, and every console transcript still prints what the book says
//! it prints.

use std::process::ExitCode;

use ferry_tests::{book, privileged, steps, transcript};
use libtest_mimic::{Failed, Trial};

fn main() -> ExitCode {
    ferry_tests::run_trials(trials())
}

fn failed(error: anyhow::Error) -> Failed {
    format!("{error:#}").into()
}

fn trials() -> anyhow::Result<Vec<Trial>> {
    let mut trials = vec![Trial::test("book::includes_resolve", || {
        book::check_includes().map_err(failed)
    })];
    for pair in steps::workspace_steps()?.windows(2) {
        let (before, after) = (pair[0].clone(), pair[1].clone());
        let name = format!("book::diff_{}_is_fresh", after.folder);
        trials.push(Trial::test(name, move || {
            book::check_diff(&before, &after).map_err(failed)
        }));
    }
    for source in book::diagram_sources()? {
        let name = source
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        trials.push(Trial::test(
            format!("book::diagram_{name}_is_fresh"),
            move || book::check_diagram(&source).map_err(failed),
        ));
    }
    let privilege = privileged();
    for path in book::files_below(&book::src(), ".console")? {
        let name = path.strip_prefix(book::src())?.display().to_string();
        let trial = Trial::test(format!("transcript::{name}"), move || {
            transcript::check(&path, false).map_err(failed)
        });
        trials.push(privilege.gate(trial));
    }
    Ok(trials)
}
