//! Console transcripts in the book, checked by running them.
//!
//! A transcript (`*.console` under book/src) is what a reader types and sees:
//! lines starting with `# ` are commands, run as root, one after another in
//! one shell; the lines after a command are its output, stdout and stderr
//! together as on a terminal. `[..]` in an expected line matches any text,
//! for what differs from run to run (an id, a pid, the host's name).
//! The commands run in a lab (see `lab`), as a learner's do after `just shell`.
//! A transcript of step 05 or later (`05-….console`) runs in a network lab
//! of its own too (see `netlab`): what it does to "the host's" network (the
//! bridge and its rules, the by-hand veth pair) happens there, never on this
//! machine's. The earlier ones run in the host's network namespace, as the
//! reader's do: sysfs, for one, behaves otherwise in another namespace.
//! From step 06 (`06-….console`) the network lab has a registry too (see
//! `registry_lab`): on the lab's 127.0.0.1:5000, with token auth that lets
//! anyone pull the demo images, which are pushed before the shell starts.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::lab::Lab;
use crate::netlab::NetLab;
use crate::registry_lab::{self, Auth, RegistryLab};
use crate::rootfs;
use crate::run::Run;

const PROMPT: &str = "# ";
/// The step from which a transcript runs in a network lab.
const NETWORK_SINCE: u8 = 5;
/// The step from which that lab has a registry with the demo images.
const REGISTRY_SINCE: u8 = 6;
const MARKER: &str = "@@ferry-transcript-end-of-command@@";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub command: String,
    pub output: Vec<String>,
}

pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if let Some(command) = line.strip_prefix(PROMPT) {
            entries.push(Entry {
                command: command.to_owned(),
                output: Vec::new(),
            });
        } else {
            let Some(last) = entries.last_mut() else {
                bail!("a transcript starts with a command: {line:?}")
            };
            last.output.push(line.to_owned());
        }
    }
    Ok(entries)
}

pub fn render(entries: &[Entry]) -> String {
    let mut text = String::new();
    for entry in entries {
        text.push_str(&format!("{PROMPT}{}\n", entry.command));
        for line in &entry.output {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// What a transcript runs in besides the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surroundings {
    /// The host's network namespace.
    Host,
    /// A network lab (steps 05 on).
    NetLab,
    /// A network lab with a registry of the demo images (steps 06 on).
    Registry,
}

impl Surroundings {
    /// What a transcript of `step` runs in.
    pub fn of_step(step: u8) -> Self {
        if step >= REGISTRY_SINCE {
            Self::Registry
        } else if step >= NETWORK_SINCE {
            Self::NetLab
        } else {
            Self::Host
        }
    }
}

/// Runs the transcript's commands in a lab, the one `just shell` opens, and
/// returns it with the output they gave; in a network lab if asked.
pub fn replay(entries: &[Entry], network_lab: bool) -> Result<Vec<Entry>> {
    let surroundings = if network_lab {
        Surroundings::NetLab
    } else {
        Surroundings::Host
    };
    replay_in(entries, surroundings)
}

/// The same, in what `surroundings` says.
pub fn replay_in(entries: &[Entry], surroundings: Surroundings) -> Result<Vec<Entry>> {
    let lab = Lab::new()?;
    let net = (surroundings != Surroundings::Host)
        .then(NetLab::new)
        .transpose()?;
    // Started here, on the thread that waits for the shell: the registry
    // lives as long as the thread that started it.
    let registry = match (&net, surroundings) {
        (Some(net), Surroundings::Registry) => {
            let anonymous_pull = &registry_lab::DEMO_REPOSITORIES;
            let registry = RegistryLab::start(net, Auth::Token { anonymous_pull })?;
            registry.push_demo_images(&rootfs::built()?)?;
            Some(registry)
        }
        _ => None,
    };
    let mut script = String::from("exec 2>&1\n");
    for entry in entries {
        // Keep $? of the command for the next one across the marker.
        script.push_str(&format!(
            "{}\nferry_status=$?; echo; echo {MARKER}; (exit $ferry_status)\n",
            entry.command
        ));
    }
    let shell = match &net {
        Some(net) => lab.shell_through(&net.command_prefix()),
        None => lab.shell(),
    };
    let outcome = Run::from_command(shell).args(["-c", &script]).output()?;
    // Stopped before the lab it runs in goes.
    drop(registry);
    let mut outputs: Vec<&str> = outcome.stdout.split(&format!("\n{MARKER}\n")).collect();
    ensure!(
        outputs.pop() == Some(""),
        "the transcript's shell ended early:\n{outcome}"
    );
    ensure!(
        outputs.len() == entries.len(),
        "the transcript's shell ended early:\n{outcome}"
    );
    Ok(entries
        .iter()
        .zip(outputs)
        .map(|(entry, output)| Entry {
            command: entry.command.clone(),
            output: output.lines().map(str::to_owned).collect(),
        })
        .collect())
}

/// Whether an actual line matches an expected one, `[..]` matching any text.
pub fn line_matches(expected: &str, actual: &str) -> bool {
    let mut parts = expected.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        let Some(at) = rest.find(part) else {
            return false;
        };
        rest = &rest[at + part.len()..];
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn output_matches(expected: &[String], actual: &[String]) -> bool {
    expected.len() == actual.len() && expected.iter().zip(actual).all(|(e, a)| line_matches(e, a))
}

/// The expected output updated to what ran: lines that still match keep
/// their wildcards, the others take the actual text.
pub fn bless(expected: &[Entry], actual: &[Entry]) -> Vec<Entry> {
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            if output_matches(&e.output, &a.output) {
                return e.clone();
            }
            let keep = e.output.len() == a.output.len();
            let output = a
                .output
                .iter()
                .enumerate()
                .map(|(i, line)| match e.output.get(i) {
                    Some(pattern) if keep && line_matches(pattern, line) => pattern.clone(),
                    _ => line.clone(),
                })
                .collect();
            Entry {
                command: e.command.clone(),
                output,
            }
        })
        .collect()
}

/// Runs the transcript at `path` and checks its output; with `bless`, writes
/// the actual output back instead of failing.
pub fn check(path: &Path, bless_it: bool) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let expected = parse(&text)?;
    let step: u8 = path
        .file_name()
        .and_then(|name| name.to_str()?.get(..2)?.parse().ok())
        .unwrap_or(0);
    let actual = replay_in(&expected, Surroundings::of_step(step))?;
    let mut problems = Vec::new();
    for (e, a) in expected.iter().zip(&actual) {
        if !output_matches(&e.output, &a.output) {
            problems.push(format!(
                "# {}\nexpected:\n{}\nactual:\n{}",
                e.command,
                e.output.join("\n"),
                a.output.join("\n")
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    if bless_it {
        return fs::write(path, render(&bless(&expected, &actual)))
            .with_context(|| format!("write {}", path.display()));
    }
    bail!(
        "{} is stale (regenerate with `just bless`):\n{}",
        path.display(),
        problems.join("\n\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_text() {
        assert!(line_matches("my pid is [..]", "my pid is 4711"));
        assert!(line_matches("[..]", ""));
        assert!(line_matches("a[..]b[..]c", "a-b-c"));
        assert!(line_matches("exact", "exact"));
        assert!(!line_matches("exact", "exactly"));
        assert!(!line_matches("my pid is [..]", "your pid is 1"));
        assert!(!line_matches("a[..]b", "ab-"));
        // The suffix must not overlap the prefix.
        assert!(!line_matches("ab[..]ba", "aba"));
    }

    #[test]
    fn parses_commands_and_their_output() {
        let entries = parse("# echo a; echo b\na\nb\n# true\n").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].output, ["a", "b"]);
        assert!(entries[1].output.is_empty());
        assert_eq!(render(&entries), "# echo a; echo b\na\nb\n# true\n");
        assert!(parse("output before any command\n").is_err());
    }

    #[test]
    fn bless_keeps_wildcards_that_still_match() {
        let expected = parse("# c\npid [..]\nold\n").unwrap();
        let actual = parse("# c\npid 12\nnew\n").unwrap();
        assert_eq!(render(&bless(&expected, &actual)), "# c\npid [..]\nnew\n");
    }
}
