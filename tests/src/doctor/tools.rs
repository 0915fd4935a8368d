//! The programs the recipes run, found on the learner's PATH, at the
//! versions the workspace pins.

use std::fs;

use super::{Finding, Machine, first_line};
use crate::rootfs::{BUSYBOX, is_static};
use crate::workspace;

pub(super) fn check(machine: &Machine, report: &mut dyn FnMut(Finding)) {
    report(rust(machine));
    report(just(machine));
    report(mdbook(machine));
    report(busybox());
    report(runc(machine));
    for (check, program) in [("qemu", "qemu-system-x86_64"), ("cpio", "cpio")] {
        report(for_vm_tests(machine, check, program));
    }
    report(iproute2(machine));
}

/// A release number: the leading `MAJOR.MINOR[.PATCH]` of a text such as
/// `1.95.0`, `1.90.0-nightly` or `6.1.0-28-amd64`.
pub(super) fn version_in(text: &str) -> Option<(u64, u64, u64)> {
    let numeric = text
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?;
    let mut parts = numeric.split('.').map(|part| part.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The value of `KEY = "VALUE"` (Cargo.toml) or `KEY := "VALUE"` (justfile)
/// on the first line that sets KEY.
fn setting<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix(key)?.trim_start();
        let value = rest
            .strip_prefix(":=")
            .or_else(|| rest.strip_prefix('='))?
            .trim();
        value.strip_prefix('"')?.strip_suffix('"')
    })
}

/// Who runs a tool: the learner runs cargo and the book's tools; the
/// recipes run runc and `ip` as root.
#[derive(Clone, Copy)]
enum As {
    Learner,
    Root,
}

/// Runs `tool ARGS` (`--version`): Ok(the first line it printed), or
/// Err(what went wrong); None if the tool is not installed.
fn version_line(
    machine: &Machine,
    who: As,
    tool: &str,
    args: &[&str],
) -> Option<Result<String, String>> {
    let outcome = match who {
        As::Learner => machine.run_as_learner(tool, args)?,
        As::Root => machine.run_as_root(tool, args)?,
    };
    let shown = format!("`{tool} {}`", args.join(" "));
    Some(match outcome {
        Ok(outcome) if outcome.status == 0 => Ok(first_line(&outcome).to_owned()),
        Ok(outcome) => Err(format!("{shown} failed: {}", first_line(&outcome))),
        Err(error) => Err(format!("{shown} could not run: {}", error.root_cause())),
    })
}

fn rust(machine: &Machine) -> Finding {
    const CHECK: &str = "rust";
    let cargo_toml = fs::read_to_string(workspace().join("Cargo.toml")).unwrap_or_default();
    let Some(wanted) = setting(&cargo_toml, "rust-version") else {
        return Finding::fail(CHECK, "no rust-version in the workspace's Cargo.toml");
    };
    let rustc = match version_line(machine, As::Learner, "rustc", &["--version"]) {
        None => {
            return Finding::fail(
                CHECK,
                "no rustc on your PATH: install Rust from https://rustup.rs",
            );
        }
        Some(Err(error)) => {
            return Finding::fail(CHECK, error);
        }
        Some(Ok(line)) => line,
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let have = rustc.split_whitespace().nth(1).and_then(version_in);
    if have.is_none_or(|have| Some(have) < version_in(wanted)) {
        return Finding::fail(
            CHECK,
            format!("{rustc} is older than the workspace's rust-version {wanted}: `rustup update`"),
        );
    }
    match version_line(machine, As::Learner, "cargo", &["--version"]) {
        None => Finding::fail(
            CHECK,
            format!("{rustc}, but no cargo on your PATH: install Rust with https://rustup.rs"),
        ),
        Some(Err(error)) => Finding::fail(CHECK, error),
        Some(Ok(cargo)) => Finding::ok(
            CHECK,
            format!("{rustc} and {cargo}; the workspace needs {wanted} or newer"),
        ),
    }
}

fn just(machine: &Machine) -> Finding {
    match version_line(machine, As::Learner, "just", &["--version"]) {
        Some(Ok(line)) => Finding::ok("just", line),
        Some(Err(error)) => Finding::fail("just", error),
        None => Finding::fail("just", "not on your PATH: `cargo install --locked just`"),
    }
}

fn mdbook(machine: &Machine) -> Finding {
    const CHECK: &str = "mdbook";
    let justfile = fs::read_to_string(workspace().join("justfile")).unwrap_or_default();
    let Some(pinned) = setting(&justfile, "mdbook_version") else {
        return Finding::fail(CHECK, "the justfile pins no mdbook_version");
    };
    let install = format!("`just setup` installs mdBook {pinned}, which builds the book");
    match version_line(machine, As::Learner, "mdbook", &["--version"]) {
        None => Finding::fail(CHECK, format!("not on your PATH: {install}")),
        Some(Err(error)) => Finding::fail(CHECK, format!("{error}; {install}")),
        // "mdbook v0.5.4"
        Some(Ok(line)) if line.strip_prefix("mdbook v") == Some(pinned) => {
            Finding::ok(CHECK, format!("{line}, the version the justfile pins"))
        }
        Some(Ok(line)) => Finding::fail(
            CHECK,
            format!("{line}, but the justfile pins {pinned}: {install}"),
        ),
    }
}

fn busybox() -> Finding {
    const CHECK: &str = "busybox";
    match fs::read(BUSYBOX) {
        Err(_) => Finding::fail(
            CHECK,
            format!(
                "no {BUSYBOX}: `just setup` installs busybox-static, which the workshop \
                 rootfs is made of"
            ),
        ),
        Ok(binary) if is_static(&binary) => {
            Finding::ok(CHECK, format!("{BUSYBOX} is linked statically"))
        }
        Ok(_) => Finding::fail(
            CHECK,
            format!(
                "{BUSYBOX} is linked dynamically, and the rootfs has no libraries for it: \
                 `sudo apt-get install busybox-static` replaces it with the static build"
            ),
        ),
    }
}

fn runc(machine: &Machine) -> Finding {
    const CHECK: &str = "runc";
    match version_line(machine, As::Root, "runc", &["--version"]) {
        Some(Ok(line)) => Finding::ok(CHECK, line),
        Some(Err(error)) => Finding::warn(CHECK, error),
        None => Finding::warn(
            CHECK,
            "not installed; only `just bench` and `just test` need it, to compare the \
             steps with it: `just setup` installs it",
        ),
    }
}

/// QEMU and cpio build and boot the machine on which `just test` runs step
/// 04 under each cgroup layout: nothing else needs them.
fn for_vm_tests(machine: &Machine, check: &'static str, program: &str) -> Finding {
    match version_line(machine, As::Learner, program, &["--version"]) {
        Some(Ok(line)) => Finding::ok(check, line),
        Some(Err(error)) => Finding::warn(check, error),
        None => Finding::warn(
            check,
            format!(
                "no {program}; only `just test` needs it, for the cgroup test machine: \
                 `just vm-setup` installs it"
            ),
        ),
    }
}

fn iproute2(machine: &Machine) -> Finding {
    const CHECK: &str = "iproute2";
    match iproute2_version(machine) {
        Some(Ok(line)) => Finding::ok(CHECK, line),
        Some(Err(error)) => Finding::fail(CHECK, error),
        None => Finding::fail(
            CHECK,
            "no `ip` command: `sudo apt-get install iproute2` (step 05 wires containers \
             with it, and the veth probe needs it)",
        ),
    }
}

/// `ip -V`'s version line if the `ip` that root runs is iproute2's; Err
/// says what it is instead and what to do; None if there is no `ip`.
pub(super) fn iproute2_version(machine: &Machine) -> Option<Result<String, String>> {
    version_line(machine, As::Root, "ip", &["-V"]).map(judge_ip)
}

/// BusyBox's `ip` (on a minimal system, and in the cgroup test machine)
/// knows neither `-V` nor `-batch`, and only some of `ip link`: anything
/// that runs it as iproute2's fails with BusyBox's usage text, which reads
/// like a broken kernel feature. Tell it by name.
fn judge_ip(answer: Result<String, String>) -> Result<String, String> {
    const INSTALL: &str = "`sudo apt-get install iproute2` (step 05 wires containers with \
                           it, and the veth probe needs it)";
    match answer {
        // "ip utility, iproute2-6.1.0, libbpf 1.1.2"; before 5.x, "iproute2-ss200127".
        Ok(line) if line.contains("iproute2") => Ok(line),
        Ok(line) => Err(format!(
            "`ip -V` says {line:?}, which is not iproute2's `ip`: {INSTALL}"
        )),
        Err(error) if error.contains("BusyBox") => Err(format!(
            "the `ip` here is BusyBox's, not iproute2's ({error}): {INSTALL}"
        )),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_their_leading_numbers() {
        assert_eq!(version_in("1.95.0"), Some((1, 95, 0)));
        assert_eq!(version_in("1.88"), Some((1, 88, 0)));
        assert_eq!(version_in("1.90.0-nightly"), Some((1, 90, 0)));
        assert_eq!(version_in("6.18.44-fc-v782"), Some((6, 18, 44)));
        assert_eq!(
            version_in("5.15.167.4-microsoft-standard-WSL2"),
            Some((5, 15, 167))
        );
        assert_eq!(version_in("v0.5.4"), None);
        assert_eq!(version_in("6"), None);
    }

    #[test]
    fn versions_compare_by_number_not_by_text() {
        assert!(version_in("1.100.0") > version_in("1.88"));
        assert!(version_in("1.9.0") < version_in("1.88"));
        assert!(version_in("5.10.0") >= Some((5, 7, 0)));
        assert!(version_in("5.4.0-150-generic") < Some((5, 7, 0)));
    }

    #[test]
    fn only_iproute2s_ip_passes() {
        let iproute2 = "ip utility, iproute2-6.1.0, libbpf 1.1.2".to_owned();
        assert_eq!(judge_ip(Ok(iproute2.clone())), Ok(iproute2));
        let busybox = "`ip -V` failed: BusyBox v1.35.0 (Debian 1:1.35.0-4) multi-call binary.";
        let judged = judge_ip(Err(busybox.to_owned())).unwrap_err();
        assert!(
            judged.starts_with("the `ip` here is BusyBox's") && judged.contains("apt-get install"),
            "{judged}"
        );
        assert!(judge_ip(Ok("ip 0.1".to_owned())).is_err());
        let broken = "`ip -V` could not run: permission denied".to_owned();
        assert_eq!(judge_ip(Err(broken.clone())), Err(broken));
    }

    #[test]
    fn settings_are_read_from_cargo_toml_and_the_justfile() {
        let cargo_toml = "[workspace.package]\nversion = \"0.1.0\"\nrust-version = \"1.88\"\n";
        assert_eq!(setting(cargo_toml, "rust-version"), Some("1.88"));
        assert_eq!(setting(cargo_toml, "version"), Some("0.1.0"));
        let justfile = "vm_dir := \"target/ferry/vm\"\nmdbook_version := \"0.5.4\"\n";
        assert_eq!(setting(justfile, "mdbook_version"), Some("0.5.4"));
        assert_eq!(setting(justfile, "mdbook"), None);
    }

    /// The pins the doctor reads are where it looks for them.
    #[test]
    fn this_workspace_pins_rust_and_mdbook() {
        let read = |file| fs::read_to_string(workspace().join(file)).unwrap();
        assert!(
            setting(&read("Cargo.toml"), "rust-version")
                .and_then(version_in)
                .is_some()
        );
        assert!(
            setting(&read("justfile"), "mdbook_version")
                .and_then(version_in)
                .is_some()
        );
    }
}
