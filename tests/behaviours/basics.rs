//! Step 01 behaviours: what every step does from the first one on.
//! Run a command in a root filesystem, relay its output and status exactly,
//! and fail clearly on bad input.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Result, ensure};
use ferry_tests::host;
use ferry_tests::run::Run;
use ferry_tests::scratch::Scratch;
use nix::sys::signal::Signal;

use crate::check::{
    Ctx, HostMarker, expect, expect_error, leaves_mounts_alone, listing, process_named,
};
use crate::{Behaviour, Kind::BadInput, Kind::Feature, Kind::Kept};

pub const BEHAVIOURS: &[Behaviour] = &[
    Behaviour {
        name: "relays_stdout_and_stderr_apart",
        hint: "the command's stdout and stderr reach the caller's, apart: the child inherits fds 1 and 2 through fork and exec (book: Step 01 › The code)",
        since: 1,
        kind: Feature,
        check: relays_stdout_and_stderr_apart,
    },
    Behaviour {
        name: "relays_exit_status",
        hint: "the runtime exits with the command's status, from waitpid(2) (book: Step 01 › The code)",
        since: 1,
        kind: Feature,
        check: relays_exit_status,
    },
    Behaviour {
        name: "relays_death_by_signal",
        hint: "a command killed by signal N makes the runtime exit 128+N (book: Step 01 › The code)",
        since: 1,
        kind: Feature,
        check: relays_death_by_signal,
    },
    Behaviour {
        name: "passes_arguments_exactly",
        hint: "every argument reaches execve(2) as given, spaces and quotes included (book: Step 01 › The code)",
        since: 1,
        kind: Feature,
        check: passes_arguments_exactly,
    },
    Behaviour {
        name: "passes_stdin",
        hint: "the command reads the caller's stdin (book: Step 01 › The code)",
        since: 1,
        kind: Feature,
        check: passes_stdin,
    },
    Behaviour {
        name: "runs_sh_by_default",
        hint: "with no COMMAND the container runs /bin/sh (book: Step 01 › The code)",
        since: 1,
        kind: Feature,
        check: runs_sh_by_default,
    },
    Behaviour {
        name: "sets_a_clean_environment",
        hint: "the command gets PATH, HOME and TERM, and none of the host's variables (book: Step 01 › When exec fails)",
        since: 1,
        kind: Feature,
        check: sets_a_clean_environment,
    },
    Behaviour {
        name: "starts_in_the_new_root",
        hint: "after chroot(2), chdir(\"/\"): the command starts in the rootfs's / (book: Step 01 › The idea)",
        since: 1,
        kind: Feature,
        check: starts_in_the_new_root,
    },
    Behaviour {
        name: "hides_host_files_outside_rootfs",
        hint: "a host file outside ROOTFS is not visible inside: chroot(2) into ROOTFS (book: Step 01 › The idea)",
        since: 1,
        kind: Feature,
        check: hides_host_files_outside_rootfs,
    },
    Behaviour {
        name: "restores_default_signal_actions",
        hint: "the command starts with default signal actions (SIGPIPE too) and nothing blocked (book: Step 01 › Signals)",
        since: 1,
        kind: Feature,
        check: restores_default_signal_actions,
    },
    Behaviour {
        name: "passes_only_stdio_descriptors",
        hint: "only fds 0, 1 and 2 reach the command: close_range(2) with CLOSE_RANGE_CLOEXEC (book: Step 01 › Only stdin, stdout and stderr)",
        since: 1,
        kind: Feature,
        check: passes_only_stdio_descriptors,
    },
    Behaviour {
        name: "a_held_directory_is_no_way_out",
        hint: "a directory fd the caller holds must not reach the command, or /proc/self/fd/N leads out (book: Step 01 › Only stdin, stdout and stderr)",
        since: 1,
        kind: Feature,
        check: a_held_directory_is_no_way_out,
    },
    Behaviour {
        name: "gives_the_terminal_back",
        hint: "after the container ends, the terminal's foreground group is the caller's again (book: The container's terminal)",
        since: 1,
        kind: Kept,
        check: gives_the_terminal_back,
    },
    Behaviour {
        name: "missing_command_is_127",
        hint: "a command that does not exist gives 127 and a one-line error (book: Step 01 › When exec fails)",
        since: 1,
        kind: Feature,
        check: missing_command_is_127,
    },
    Behaviour {
        name: "non_executable_command_is_126",
        hint: "a file that cannot be executed gives 126 and a one-line error (book: Step 01 › When exec fails)",
        since: 1,
        kind: Feature,
        check: non_executable_command_is_126,
    },
    Behaviour {
        name: "missing_interpreter_is_126",
        hint: "a program whose interpreter is missing gives 126, and the error says so (book: Step 01 › When exec fails)",
        since: 1,
        kind: Feature,
        check: missing_interpreter_is_126,
    },
    Behaviour {
        name: "rejects_missing_rootfs",
        hint: "a ROOTFS that does not exist: exit 125 and an error naming it (book: Step 01 › The code)",
        since: 1,
        kind: BadInput,
        check: rejects_missing_rootfs,
    },
    Behaviour {
        name: "rejects_rootfs_that_is_a_file",
        hint: "a ROOTFS that is a file: exit 125 and an error naming it (book: Step 01 › The code)",
        since: 1,
        kind: BadInput,
        check: rejects_rootfs_that_is_a_file,
    },
    Behaviour {
        name: "rejects_unknown_option",
        hint: "an unknown option: exit 125 and a one-line error (book: Step 01 › The code)",
        since: 1,
        kind: BadInput,
        check: rejects_unknown_option,
    },
    Behaviour {
        name: "rejects_missing_arguments",
        hint: "`run` without ROOTFS: exit 125 and a one-line error (book: Step 01 › The code)",
        since: 1,
        kind: BadInput,
        check: rejects_missing_arguments,
    },
];

fn relays_stdout_and_stderr_apart(ctx: &Ctx) -> Result<()> {
    let outcome = ctx.sh(
        &[],
        "echo to stdout; echo to stderr >&2; echo more to stdout",
    )?;
    expect(&outcome, 0, "to stdout\nmore to stdout\n", "to stderr\n")
}

fn relays_exit_status(ctx: &Ctx) -> Result<()> {
    for status in [0, 1, 42, 255] {
        expect(&ctx.sh(&[], &format!("exit {status}"))?, status, "", "")?;
    }
    Ok(())
}

/// Killed by SIGKILL from outside, the command's death is reported as 137.
/// The signal comes from the host because a PID 1 cannot be killed from
/// inside its own PID namespace (step 02).
fn relays_death_by_signal(ctx: &Ctx) -> Result<()> {
    let mut running = ctx
        .run(&[], &["/bin/sh", "-c", "echo ready; exec sleep 1000"])
        .spawn()?;
    running.wait_for_line("ready")?;
    host::signal(process_named(&running, "sleep")?, Signal::SIGKILL)?;
    expect(&running.finish()?, 137, "ready\n", "")
}

fn passes_arguments_exactly(ctx: &Ctx) -> Result<()> {
    let outcome = ctx
        .run(
            &[],
            &["printf", "[%s]", "two words", "", "-c", "--help", "$HOME"],
        )
        .output()?;
    expect(&outcome, 0, "[two words][][-c][--help][$HOME]", "")
}

fn passes_stdin(ctx: &Ctx) -> Result<()> {
    let outcome = ctx
        .run(&[], &["cat"])
        .stdin("line one\nline two\n")
        .output()?;
    expect(&outcome, 0, "line one\nline two\n", "")
}

fn runs_sh_by_default(ctx: &Ctx) -> Result<()> {
    let outcome = ctx
        .run(&[], &[])
        .stdin("echo hello from $0; exit 3\n")
        .output()?;
    expect(&outcome, 3, "hello from /bin/sh\n", "")
}

/// PATH and HOME are set for the container; the host's variables stay out.
fn sets_a_clean_environment(ctx: &Ctx) -> Result<()> {
    let outcome = ctx
        .run(
            &[],
            &[
                "/bin/sh",
                "-c",
                "echo \"$PATH\"; echo \"$HOME\"; echo \"[$FERRY_TEST_SECRET]\"",
            ],
        )
        .env("FERRY_TEST_SECRET", "from the host")
        .output()?;
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    expect(&outcome, 0, &format!("{path}\n/root\n[]\n"), "")
}

fn starts_in_the_new_root(ctx: &Ctx) -> Result<()> {
    expect(&ctx.sh(&[], "pwd")?, 0, "/\n", "")?;
    expect(
        &ctx.run(&[], &["ls", "-1", "/"]).output()?,
        0,
        &listing(&ctx.rootfs)?,
        "",
    )
}

fn hides_host_files_outside_rootfs(ctx: &Ctx) -> Result<()> {
    let marker = HostMarker::new()?;
    expect(
        &ctx.sh(&[], &marker.probe())?,
        0,
        "hidden
",
        "",
    )
}

/// A Rust program starts with SIGPIPE ignored, and an ignored signal stays
/// ignored across exec: unless the runtime resets it, `yes` in a pipe to
/// `head` is told "Broken pipe" instead of being ended by the signal.
fn restores_default_signal_actions(ctx: &Ctx) -> Result<()> {
    expect(&ctx.sh(&[], "yes | head -n 1")?, 0, "y\n", "")
}

/// A descriptor the caller holds open (a shell's `exec 7<file`) does not
/// reach the command.
fn passes_only_stdio_descriptors(ctx: &Ctx) -> Result<()> {
    let marker = HostMarker::new()?;
    let outcome = ctx
        .run(
            &[],
            &["/bin/sh", "-c", "read -r line <&7; echo \"[$line]\""],
        )
        .pass_fd(File::open(marker.path())?, 7)
        .output()?;
    ensure!(
        outcome.status == 0 && outcome.stdout == "[]\n",
        "the command could read the host file on descriptor 7:\n{outcome}"
    );
    Ok(())
}

/// A descriptor open on a host directory is that directory, whatever the
/// container's root: `/proc/self/fd/7/` would lead out (runc's
/// CVE-2024-21626). It must not reach the command.
fn a_held_directory_is_no_way_out(ctx: &Ctx) -> Result<()> {
    let marker = HostMarker::new()?;
    let dir = marker.path().parent().expect("in a folder");
    let probe = "if test -e /proc/self/fd/7/marker; then echo visible; else echo hidden; fi";
    let outcome = ctx
        .run(&[], &["/bin/sh", "-c", probe])
        .pass_fd(File::open(dir)?, 7)
        .output()?;
    expect(&outcome, 0, "hidden\n", "")
}

/// An interactive shell in the container takes the terminal for its own
/// process group. Afterwards the terminal must be the caller's again, or the
/// caller's next read from it is stopped (SIGTTIN). `script` gives the run a
/// terminal of its own; its shell then compares its own process group with
/// the terminal's foreground group (fields 5 and 8 of /proc/PID/stat).
fn gives_the_terminal_back(ctx: &Ctx) -> Result<()> {
    let container = ctx.run_line(&[], &["/bin/sh", "-i", "-c", "exit 0"]);
    let script = format!(
        "{container}; set -- $(cat /proc/$$/stat); \
         if [ \"$5\" = \"$8\" ]; then echo given back; else echo kept by group $8; fi"
    );
    let outcome = Run::new("script")
        .args(["-qec", &script, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .output()?;
    ensure!(
        outcome.status == 0
            && outcome
                .stdout
                .lines()
                .any(|line| line.trim_end() == "given back"),
        "the terminal was not given back after the container:\n{outcome}"
    );
    Ok(())
}

fn missing_command_is_127(ctx: &Ctx) -> Result<()> {
    for command in [&["/bin/no-such-command"][..], &["no-such-command", "arg"]] {
        expect_error(&ctx.run(&[], command).output()?, 127, command[0])?;
    }
    Ok(())
}

fn non_executable_command_is_126(ctx: &Ctx) -> Result<()> {
    for path in ["/etc/passwd", "/etc"] {
        expect_error(&ctx.run(&[], &[path]).output()?, 126, path)?;
    }
    Ok(())
}

/// A program whose interpreter is missing from the rootfs (a `#!` line here;
/// the dynamic loader of a program copied from the host alike) exists: it
/// cannot run (126), and the error says why, by path or found in PATH.
fn missing_interpreter_is_126(ctx: &Ctx) -> Result<()> {
    let program = ctx.rootfs.join("bin/needs-interpreter");
    std::fs::write(&program, "#!/no/such/interpreter\n")?;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))?;
    for command in ["/bin/needs-interpreter", "needs-interpreter"] {
        expect_error(&ctx.run(&[], &[command]).output()?, 126, "interpreter")?;
    }
    Ok(())
}

/// A bad ROOTFS gets 125 and an error that names it, and nothing is left
/// beside it.
fn rejects_rootfs(ctx: &Ctx, scratch: &Scratch, rootfs: &Path) -> Result<()> {
    let before = listing(scratch.path())?;
    let outcome = leaves_mounts_alone(|| ctx.run_with_rootfs(rootfs, &[], &["true"]).output())?;
    expect_error(&outcome, 125, &rootfs.display().to_string())?;
    ensure!(
        listing(scratch.path())? == before,
        "the runtime left files behind"
    );
    Ok(())
}

fn rejects_missing_rootfs(ctx: &Ctx) -> Result<()> {
    let scratch = Scratch::new("bad-rootfs")?;
    rejects_rootfs(ctx, &scratch, &scratch.join("no-such-rootfs"))
}

fn rejects_rootfs_that_is_a_file(ctx: &Ctx) -> Result<()> {
    let scratch = Scratch::new("bad-rootfs")?;
    let file = scratch.join("rootfs");
    std::fs::write(&file, "not a directory\n")?;
    rejects_rootfs(ctx, &scratch, &file)
}

fn rejects_unknown_option(ctx: &Ctx) -> Result<()> {
    let outcome = leaves_mounts_alone(|| ctx.run(&["--no-such-option"], &["true"]).output())?;
    expect_error(&outcome, 125, "--no-such-option")
}

fn rejects_missing_arguments(ctx: &Ctx) -> Result<()> {
    expect_error(&ctx.runtime().args(["run"]).output()?, 125, "ROOTFS")?;
    expect_error(&ctx.runtime().output()?, 125, "subcommand")
}
