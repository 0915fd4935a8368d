//! Step 02 behaviours: PID, UTS, IPC and mount namespaces; the command is
//! PID 1 with a /proc of its own, and a hostname of its own.

use anyhow::{Context, Result, ensure};
use ferry_tests::host;

use crate::check::{Ctx, expect, expect_error, kill_runtime_mid_run, leaves_mounts_alone, listing};
use crate::{Behaviour, Kind::BadInput, Kind::Feature};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "command_is_pid_1",
        hint: "the command is PID 1: clone(2) with CLONE_NEWPID (book: Step 02 › The idea)",
        since: 2,
        kind: Feature,
        check: command_is_pid_1,
    },
    Behaviour {
        name: "sees_only_its_own_processes",
        hint: "/proc inside lists only the container's processes: a new PID namespace and a proc mount of it (book: Step 02 › The idea)",
        since: 2,
        kind: Feature,
        check: sees_only_its_own_processes,
    },
    Behaviour {
        name: "mounts_its_own_proc",
        hint: "/proc is a fresh proc mount, made in the container's own mount namespace (book: Step 02 › The code)",
        since: 2,
        kind: Feature,
        check: mounts_its_own_proc,
    },
    Behaviour {
        name: "gets_new_namespaces",
        hint: "the container's PID, UTS, IPC and mount namespaces differ from the host's, read in /proc/self/ns (so it needs the /proc mount too) (book: Step 02 › The idea)",
        since: 2,
        kind: Feature,
        check: gets_new_namespaces,
    },
    Behaviour {
        name: "sets_hostname",
        hint: "--hostname NAME: sethostname(2) inside a new UTS namespace (book: Step 02 › The code)",
        since: 2,
        kind: Feature,
        check: sets_hostname,
    },
    Behaviour {
        name: "generates_a_hostname",
        hint: "without --hostname, the hostname is a new 12-hex-digit id (book: Step 02 › The code)",
        since: 2,
        kind: Feature,
        check: generates_a_hostname,
    },
    Behaviour {
        name: "dies_with_its_runtime",
        hint: "kill -9 of the runtime ends the container: prctl(PR_SET_PDEATHSIG) with SIGKILL: a PID 1 ignores every other signal it has no handler for (book: Step 02 › The container dies with its runtime)",
        since: 2,
        kind: Feature,
        check: dies_with_its_runtime,
    },
    Behaviour {
        name: "rejects_bad_hostname",
        hint: "a hostname RFC 1123 does not allow: exit 125 and a one-line error (book: Step 02 › The code)",
        since: 2,
        kind: BadInput,
        check: rejects_bad_hostname,
    },
];

fn command_is_pid_1(ctx: &Ctx) -> Result<()> {
    expect(&ctx.sh(&[], "echo $$")?, 0, "1\n", "")
}

/// The shell lists /proc with a glob, a builtin, so no other process of its
/// own is running: the only pid it can see is its own.
fn sees_only_its_own_processes(ctx: &Ctx) -> Result<()> {
    let outcome = ctx.sh(&[], "for p in /proc/[0-9]*; do echo ${p#/proc/}; done")?;
    // An unmatched glob stays as it is: "[0-9]*" means /proc is empty.
    ensure!(
        outcome.stdout != "[0-9]*\n",
        "/proc inside holds no process at all: nothing is mounted on it"
    );
    expect(&outcome, 0, "1\n", "")
}

/// /proc inside is a fresh proc mount of the container's PID namespace; the
/// host's mount table and the rootfs's /proc folder are untouched by it.
fn mounts_its_own_proc(ctx: &Ctx) -> Result<()> {
    let outcome = leaves_mounts_alone(|| ctx.run(&[], &["/bin/cat", "/proc/1/comm"]).output())?;
    expect(&outcome, 0, "cat\n", "")?;
    // Mounted as Docker mounts it: no set-uid programs, no device files,
    // nothing to execute there.
    let options = ctx.sh(
        &[],
        "grep -m1 ' /proc proc ' /proc/self/mounts | cut -d' ' -f4",
    )?;
    let flags: Vec<&str> = options.stdout.trim().split(',').collect();
    ensure!(
        ["nosuid", "nodev", "noexec"]
            .iter()
            .all(|flag| flags.contains(flag)),
        "/proc's mount options: {:?}, without all of nosuid, nodev and noexec",
        options.stdout.trim()
    );
    ensure!(
        listing(&ctx.rootfs.join("proc"))?.is_empty(),
        "the rootfs's /proc is not empty on the host"
    );
    Ok(())
}

fn gets_new_namespaces(ctx: &Ctx) -> Result<()> {
    for kind in ["pid", "uts", "ipc", "mnt"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{kind}"))?;
        let outcome = ctx
            .run(&[], &["readlink", &format!("/proc/self/ns/{kind}")])
            .output()?;
        ensure!(
            outcome.status == 0,
            "readlink /proc/self/ns/{kind} in the container failed:\n{outcome}"
        );
        ensure!(
            outcome.stdout.trim_end() != host.to_string_lossy(),
            "the container shares the host's {kind} namespace ({})",
            host.display()
        );
    }
    Ok(())
}

/// Any name RFC 1123 allows, up to the kernel's 64 bytes.
fn sets_hostname(ctx: &Ctx) -> Result<()> {
    let before = host::hostname()?;
    let longest = format!("{}.{}", "a".repeat(31), "b".repeat(32));
    for name in ["ferry-box", &longest] {
        let outcome = ctx.run(&["--hostname", name], &["hostname"]).output()?;
        expect(&outcome, 0, &format!("{name}\n"), "")?;
    }
    ensure!(host::hostname()? == before, "the host's hostname changed");
    Ok(())
}

/// Without --hostname the container is named by a generated id: 12 hex
/// digits, as Docker's short ids, and a new one for every container.
fn generates_a_hostname(ctx: &Ctx) -> Result<()> {
    let name = |ctx: &Ctx| -> Result<String> {
        let outcome = ctx.run(&[], &["hostname"]).output()?;
        ensure!(outcome.status == 0, "hostname failed:\n{outcome}");
        let name = outcome.stdout.trim_end().to_owned();
        let hex = name.len() == 12
            && name
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ensure!(
            hex,
            "expected a 12-digit hex id as the hostname, got {name:?}"
        );
        Ok(name)
    };
    let (first, second) = (name(ctx)?, name(ctx)?);
    ensure!(first != second, "two containers got the same id {first}");
    ensure!(
        first != host::hostname().context("host name")?,
        "the container has the host's name"
    );
    Ok(())
}

/// A `kill -9` of the runtime ends the container too: otherwise it would run
/// on, adopted by the host's init, with nobody to wait for it.
fn dies_with_its_runtime(ctx: &Ctx) -> Result<()> {
    kill_runtime_mid_run(ctx).map(|_| ())
}

fn rejects_bad_hostname(ctx: &Ctx) -> Result<()> {
    // 65 bytes; one label of 64 characters (RFC 1123 allows 63).
    let (too_long, label_too_long) = ("x.".repeat(32) + "x", "x".repeat(64));
    for bad in ["", &too_long, &label_too_long, "has/slash", "dash-", "a..b"] {
        let outcome = leaves_mounts_alone(|| ctx.run(&["--hostname", bad], &["true"]).output())?;
        expect_error(&outcome, 125, "hostname")?;
    }
    Ok(())
}
