//! Lab skeletons: step N with the code that teaches step N's idea cut out,
//! for a learner to write (`just lab N`).
//!
//! A skeleton is generated from the reference step itself, so a lab can never
//! drift from its solution. The step marks each cut with a pair of mdBook
//! anchors named `labNN-K-what` (NN the step that teaches it, K its place in
//! the order the learner writes them):
//!
//! ```text
//! // ANCHOR: lab02-1-namespaces Ask clone(2) for new PID, UTS and IPC namespaces [02-pid-ns.md#namespaces]
//! const NAMESPACES: CloneFlags = …;
//! // ANCHOR_END: lab02-1-namespaces instead: const NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS;
//! ```
//!
//! (`instead:` with nothing after it: the step before did nothing there.)
//!
//! Anchors, because mdBook drops every anchor line from the listings it
//! includes: the book shows the code without its markers. The hint names the
//! system call or file and, in brackets, the book section that explains it.
//! The cut becomes `todo!("hint")`; or, where the code lies on a path every
//! run takes (so that a `todo!` would fail every behaviour of the earlier
//! steps too), the end marker says after `instead:` what stands in for it
//! until the learner writes it: what the step before did, usually nothing.
//! A later step keeps the markers it copied; only step N's own are cut.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::book;
use crate::steps::Step;
use crate::workspace;

/// One cut: where it is, what the learner writes there, and the stand-in.
#[derive(Debug, Clone)]
pub struct Cut {
    /// The file, relative to the step's folder (`src/namespaces.rs`).
    pub file: PathBuf,
    /// The line of the opening marker, from 1.
    pub line: usize,
    pub order: u32,
    pub name: String,
    pub hint: String,
    /// The book page and section, `02-pid-ns.md#namespaces`.
    pub book: String,
    /// What stands in for the cut code, or None for `todo!`.
    pub instead: Option<String>,
    /// How many lines the cut takes, markers included.
    lines: usize,
}

impl Cut {
    /// The TODO's label as the learner sees it: "TODO 2 of 4".
    fn label(&self, of: usize) -> String {
        format!("TODO {} of {of}", self.order)
    }
}

/// The lab crate's name for a step: `lab02-pid-ns`.
pub fn crate_name(step: &Step) -> String {
    format!("lab{}", step.folder)
}

/// The cuts of step `step`, in the order the learner writes them.
pub fn cuts(step: &Step) -> Result<Vec<Cut>> {
    let folder = step_folder(step);
    let mut cuts = Vec::new();
    for path in book::files_below(&folder.join("src"), ".rs")? {
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let file = path
            .strip_prefix(&folder)
            .expect("below the step")
            .to_owned();
        cuts.extend(cuts_in(&text, &file, step.number)?);
    }
    cuts.sort_by_key(|cut| cut.order);
    for (expected, cut) in (1..).zip(&cuts) {
        ensure!(
            cut.order == expected,
            "step {:02}'s lab markers are numbered with a gap or twice: {} is number {}, where {expected} was expected",
            step.number,
            cut.name,
            cut.order
        );
    }
    ensure!(
        !cuts.is_empty(),
        "step {:02} marks no code for its lab (see ferry_tests::skeleton)",
        step.number
    );
    Ok(cuts)
}

/// The cuts for step `number` in one file's text.
fn cuts_in(text: &str, file: &Path, number: u8) -> Result<Vec<Cut>> {
    let prefix = format!("lab{number:02}-");
    let lines: Vec<&str> = text.lines().collect();
    let mut cuts = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(rest) = marker(line, "// ANCHOR: ") else {
            continue;
        };
        let (name, hint) = rest.split_once(' ').unwrap_or((rest, ""));
        let Some(tail) = name.strip_prefix(&prefix) else {
            continue;
        };
        let place = || format!("{}:{}", file.display(), at + 1);
        let (order, _) = tail
            .split_once('-')
            .with_context(|| format!("{}: a lab marker is named labNN-K-what", place()))?;
        let order = order
            .parse()
            .with_context(|| format!("{}: {name}: K must be a number", place()))?;
        let (hint, book) = hint
            .trim()
            .strip_suffix(']')
            .and_then(|hint| hint.rsplit_once('['))
            .with_context(|| {
                format!(
                    "{}: {name}: the hint must end with the book section, [page.md#section]",
                    place()
                )
            })?;
        let end_at = lines[at + 1..]
            .iter()
            .position(|line| {
                marker(line, "// ANCHOR_END: ")
                    .is_some_and(|rest| rest.split(' ').next() == Some(name))
            })
            .with_context(|| format!("{}: {name} has no ANCHOR_END", place()))?
            + at
            + 1;
        // "instead:" with nothing after it: the step before did nothing here.
        let instead = marker(lines[end_at], "// ANCHOR_END: ")
            .and_then(|rest| rest.split_once(" instead:"))
            .map(|(_, code)| code.trim().to_owned());
        cuts.push(Cut {
            file: file.to_owned(),
            line: at + 1,
            order,
            name: name.to_owned(),
            hint: hint.trim().to_owned(),
            book: book.to_owned(),
            instead,
            lines: end_at - at + 1,
        });
    }
    Ok(cuts)
}

/// The text after `tag` on a line that is only a comment holding it.
fn marker<'a>(line: &'a str, tag: &str) -> Option<&'a str> {
    line.trim_start().strip_prefix(tag).map(str::trim_end)
}

/// `text` with `cuts` (all of them in this file) replaced.
fn cut_text(text: &str, cuts: &[&Cut], of: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut at = 0;
    while at < lines.len() {
        let Some(cut) = cuts.iter().find(|cut| cut.line == at + 1) else {
            // The book's anchors, and the lab markers of other steps, mean
            // nothing in a lab: a learner would take them for TODOs.
            let anchor = marker(lines[at], "// ANCHOR: ").is_some()
                || marker(lines[at], "// ANCHOR_END: ").is_some();
            if !anchor {
                out.push_str(lines[at]);
                out.push('\n');
            }
            at += 1;
            continue;
        };
        let indent: String = lines[at]
            .chars()
            .take_while(|c| c.is_whitespace())
            .collect();
        let label = cut.label(of);
        let _ = writeln!(out, "{indent}// {label}: {}.", cut.hint);
        let _ = writeln!(
            out,
            "{indent}// The book explains it: book/src/{}.",
            cut.book
        );
        match &cut.instead {
            Some(code) if code.is_empty() => {
                let _ = writeln!(out, "{indent}// (The step before did nothing here.)");
            }
            Some(code) => {
                let _ = writeln!(
                    out,
                    "{indent}// Until you do, this does what the step before did:"
                );
                let _ = writeln!(out, "{indent}{code}");
            }
            None => {
                let message = format!("{label}: {}", cut.hint)
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"");
                let _ = writeln!(out, "{indent}todo!(\"{message}\");");
            }
        }
        at += cut.lines;
    }
    out
}

/// Every book section a cut names must exist: a learner follows it.
pub fn check_book_sections(cuts: &[Cut]) -> Result<()> {
    let mut problems = Vec::new();
    for cut in cuts {
        let (page, section) = cut.book.split_once('#').unwrap_or((&cut.book, ""));
        let Ok(text) = fs::read_to_string(book::src().join(page)) else {
            problems.push(format!("{}: no book page {page}", cut.name));
            continue;
        };
        if !section.is_empty() && !book::heading_ids(&text).iter().any(|id| id == section) {
            problems.push(format!("{}: {page} has no section #{section}", cut.name));
        }
    }
    ensure!(
        problems.is_empty(),
        "lab markers name book sections that do not exist:\n{}",
        problems.join("\n")
    );
    Ok(())
}

fn step_folder(step: &Step) -> PathBuf {
    workspace().join("steps").join(&step.folder)
}

/// Writes step `step`'s lab crate into `dest` (which must not exist yet).
pub fn write(step: &Step, dest: &Path) -> Result<Vec<Cut>> {
    let cuts = cuts(step)?;
    check_book_sections(&cuts)?;
    ensure!(!dest.exists(), "{} exists already", dest.display());
    let from = step_folder(step);
    for path in book::files_below(&from.join("src"), "")? {
        let relative = path.strip_prefix(&from).expect("below the step");
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let here: Vec<&Cut> = cuts.iter().filter(|cut| cut.file == relative).collect();
        let text = cut_text(&text, &here, cuts.len());
        let to = dest.join(relative);
        fs::create_dir_all(to.parent().expect("a file in a folder"))?;
        fs::write(&to, text).with_context(|| format!("write {}", to.display()))?;
    }
    fs::write(dest.join("Cargo.toml"), manifest(step)?)?;
    // The workspace's versions, so that the lab builds what the step built.
    fs::copy(workspace().join("Cargo.lock"), dest.join("Cargo.lock"))?;
    fs::write(dest.join("README.md"), readme(step, &cuts))?;
    fs::write(dest.join(".gitignore"), "/target\n")?;
    Ok(cuts)
}

/// The lab's Cargo.toml: the step's, with the workspace's versions and lints
/// written in, since the lab is a workspace of its own (a learner's
/// half-written code must not break the workshop's build).
fn manifest(step: &Step) -> Result<String> {
    let read = |path: PathBuf| -> Result<toml::Table> {
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        text.parse()
            .with_context(|| format!("parse {}", path.display()))
    };
    let top = read(workspace().join("Cargo.toml"))?;
    let own = read(step_folder(step).join("Cargo.toml"))?;
    let shared = |key: &str| -> Result<&toml::Table> {
        top.get("workspace")
            .and_then(|w| w.get(key))
            .and_then(toml::Value::as_table)
            .with_context(|| format!("the workspace's Cargo.toml has no [workspace.{key}]"))
    };
    let mut package = toml::Table::new();
    package.insert("name".into(), crate_name(step).into());
    for (key, value) in shared("package")? {
        package.insert(key.clone(), value.clone());
    }
    let mut dependencies = toml::Table::new();
    let versions = shared("dependencies")?;
    for (name, wanted) in own
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
    {
        let mut dependency = match versions.get(name) {
            Some(toml::Value::Table(table)) => table.clone(),
            Some(version) => toml::Table::from_iter([("version".to_owned(), version.clone())]),
            None => bail!("{name} is not in the workspace's dependencies"),
        };
        if let Some(extra) = wanted.as_table() {
            for (key, value) in extra.iter().filter(|(key, _)| *key != "workspace") {
                dependency.insert(key.clone(), value.clone());
            }
        }
        dependencies.insert(name.clone(), dependency.into());
    }
    let mut lints = toml::Table::new();
    for (key, value) in shared("lints")? {
        lints.insert(key.clone(), value.clone());
    }
    // Until the TODOs are written, the code they would call is unused: no
    // page of warnings about it before the learner has written a line.
    let quiet = toml::Table::from_iter([
        ("level".to_owned(), "allow".into()),
        ("priority".to_owned(), (-1).into()),
    ]);
    if let Some(toml::Value::Table(rust)) = lints.get_mut("rust") {
        rust.insert("unused".into(), quiet.into());
    }
    let mut manifest = toml::Table::new();
    manifest.insert("package".into(), package.into());
    manifest.insert("dependencies".into(), dependencies.into());
    manifest.insert("lints".into(), lints.into());
    // A workspace of its own: not a member of the workshop's.
    manifest.insert("workspace".into(), toml::Table::new().into());
    Ok(format!(
        "# Generated by `just lab {}` from steps/{}: edit the code, not this file.\n{}",
        step.number,
        step.folder,
        toml::to_string(&manifest)?
    ))
}

/// The lab's README: what to write, in order, and how to check it.
fn readme(step: &Step, cuts: &[Cut]) -> String {
    let stand_ins = if cuts.iter().any(|cut| cut.instead.is_some()) {
        format!(
            "Where the code runs in every container, a stand-in does what step\n\
             {:02} did until you replace it, so that the earlier steps' behaviours\n\
             still pass; elsewhere the TODO is a `todo!()`.",
            step.number - 1
        )
    } else {
        "Each TODO is a `todo!()`: the runtime stops there until you write it.".to_owned()
    };
    let mut text = format!(
        "# Lab {n:02}: write step {n:02} yourself\n\n\
         This crate is `steps/{folder}` with the code that teaches step {n:02}'s\n\
         idea cut out. Everything the earlier steps built is here and complete:\n\
         you write only what is new, at the places marked `TODO K of {count}`.\n\
         {stand_ins}\n\n\
         Read the chapter's \"The idea\" first. Its \"The code\" shows the\n\
         reference code of each TODO: keep it for when you are stuck. Write the\n\
         TODOs in this order:\n\n\
         | TODO | where | what | the book |\n|---|---|---|---|\n",
        n = step.number,
        folder = step.folder,
        count = cuts.len(),
    );
    for cut in cuts {
        let _ = writeln!(
            text,
            "| {} | `{}` | {} | [{}](../../book/src/{}) |",
            cut.order,
            cut.file.display(),
            cut.hint,
            cut.book,
            cut.book
        );
    }
    let _ = write!(
        text,
        "\n## How to check your work\n\n\
         ```console\njust check {n}\n```\n\n\
         builds this crate and runs the behaviour suite against it as step {n:02}:\n\
         every behaviour of steps 01 to {n:02}, each by name, with a hint for each\n\
         one that fails, and a last line that counts them. The earlier steps'\n\
         behaviours pass from the start; step {n:02}'s pass when your code does\n\
         what the book says.\n\n\
         To try it by hand: in `just shell`, after `just check {n}` (or\n\
         `cargo build --manifest-path labs/{folder}/Cargo.toml --target-dir target`)\n\
         has built it, your runtime is on PATH as `{name}`:\n\n\
         ```console\n# {name} run rootfs /bin/sh\n```\n\n\
         Stuck? `just diff-step {n}` shows what the reference step changed, and\n\
         `steps/{folder}` is the whole answer.\n",
        n = step.number,
        folder = step.folder,
        name = crate_name(step),
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "\
fn run() -> u8 {
    setup();
    // ANCHOR: lab02-2-name Name it: sethostname(2) [02-pid-ns.md#the-code]
    name();
    // ANCHOR_END: lab02-2-name instead:
    // ANCHOR: lab02-1-flags Ask for namespaces [02-pid-ns.md#the-idea]
    let flags = all();
    // ANCHOR_END: lab02-1-flags instead: let flags = none();
    // ANCHOR: lab01-1-chroot Not this step's [01-chroot.md#the-idea]
    chroot();
    // ANCHOR_END: lab01-1-chroot
    // ANCHOR: lab02-3-exit Leave with its status [02-pid-ns.md#the-code]
    status(flags)
    // ANCHOR_END: lab02-3-exit
}
";

    fn cuts_of(text: &str) -> Result<Vec<Cut>> {
        cuts_in(text, Path::new("src/main.rs"), 2)
    }

    #[test]
    fn reads_only_this_steps_markers_with_their_stand_ins() {
        let cuts = cuts_of(SOURCE).unwrap();
        let seen: Vec<_> = cuts
            .iter()
            .map(|c| (c.order, c.line, c.book.as_str(), c.instead.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                (2, 3, "02-pid-ns.md#the-code", Some("")),
                (1, 6, "02-pid-ns.md#the-idea", Some("let flags = none();")),
                (3, 12, "02-pid-ns.md#the-code", None),
            ]
        );
        assert_eq!(cuts[0].hint, "Name it: sethostname(2)");
    }

    #[test]
    fn cuts_become_stand_ins_or_todos_and_other_markers_go() {
        let cuts = cuts_of(SOURCE).unwrap();
        let text = cut_text(SOURCE, &cuts.iter().collect::<Vec<_>>(), 3);
        assert_eq!(
            text,
            "\
fn run() -> u8 {
    setup();
    // TODO 2 of 3: Name it: sethostname(2).
    // The book explains it: book/src/02-pid-ns.md#the-code.
    // (The step before did nothing here.)
    // TODO 1 of 3: Ask for namespaces.
    // The book explains it: book/src/02-pid-ns.md#the-idea.
    // Until you do, this does what the step before did:
    let flags = none();
    chroot();
    // TODO 3 of 3: Leave with its status.
    // The book explains it: book/src/02-pid-ns.md#the-code.
    todo!(\"TODO 3 of 3: Leave with its status\");
}
"
        );
    }

    #[test]
    fn a_marker_without_its_book_section_or_end_is_refused() {
        let no_book = "// ANCHOR: lab02-1-x Hint\n// ANCHOR_END: lab02-1-x\n";
        assert!(format!("{:#}", cuts_of(no_book).unwrap_err()).contains("book section"));
        let no_end = "// ANCHOR: lab02-1-x Hint [p.md]\n";
        assert!(format!("{:#}", cuts_of(no_end).unwrap_err()).contains("no ANCHOR_END"));
    }
}
