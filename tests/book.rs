//! Checks on the book: includes resolve, generated step diffs are fresh, and
//! every console transcript still prints what the book says it prints.

use std::fs;
use std::process::ExitCode;

use ferry_tests::{book, privileged, steps, transcript};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    match trials() {
        Ok(trials) => libtest_mimic::run(&arguments, trials).exit_code(),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn failed(error: anyhow::Error) -> Failed {
    format!("{error:#}").into()
}

fn trials() -> anyhow::Result<Vec<Trial>> {
    let mut trials = vec![Trial::test("book::includes_resolve", || book::check_includes().map_err(failed))];
    for pair in steps::workspace_steps()?.windows(2) {
        let (before, after) = (pair[0].clone(), pair[1].clone());
        trials.push(Trial::test(format!("book::diff_{}_is_fresh", after.folder), move || {
            let path = book::diff_path(&after);
            let expected = book::step_diff(&before, &after).map_err(failed)?;
            match fs::read_to_string(&path) {
                Ok(text) if text == expected => Ok(()),
                Ok(_) => Err(format!("{} is stale: regenerate it with `just bless`", path.display()).into()),
                Err(error) => Err(format!("{}: {error}: generate it with `just bless`", path.display()).into()),
            }
        }));
    }
    let privilege = privileged();
    for path in book::files_below(&book::src(), ".console")? {
        let name = path.strip_prefix(book::src())?.display().to_string();
        let trial = Trial::test(format!("transcript::{name}"), move || transcript::check(&path, false).map_err(failed));
        trials.push(privilege.gate(trial));
    }
    Ok(trials)
}
