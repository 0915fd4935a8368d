//! ferry-lab: the workshop's chores, called by the justfile.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};
use ferry_tests::lab::Lab;
use ferry_tests::{bench, book, doctor, rootfs, steps, transcript};
use nix::sys::signal::{SigHandler, Signal, signal};

#[derive(Parser)]
#[command(
    about = "Builds the workshop rootfs, opens lab shells and regenerates the book's generated parts"
)]
struct Cli {
    #[command(subcommand)]
    chore: Chore,
}

#[derive(Subcommand)]
enum Chore {
    /// Build the workshop root filesystem from the host's static busybox,
    /// unless it was built from the same inputs already
    Rootfs {
        /// Where to build it [default: target/ferry/rootfs]
        dest: Option<PathBuf>,
        /// A static program to put into /bin (repeatable)
        #[arg(long = "program")]
        programs: Vec<PathBuf>,
    },
    /// Open a root shell in a new lab, as the book's console sessions
    /// expect; the lab is removed when the shell exits
    Shell,
    /// Write the diff between each pair of consecutive steps into book/src/diffs,
    /// and render the book's pictures
    Diffs,
    /// Render each book/src/diagrams/NAME.bob to NAME.svg
    Diagrams,
    /// Print the diff that leads to step N
    Diff { step: u8 },
    /// Run every transcript in the book and write its actual output back,
    /// and render the book's pictures
    Bless,
    /// Check this machine for what the workshop needs, and say what to do
    /// about each problem; exits 1 if there is one (as root: the kernel
    /// probes need it)
    Doctor,
    /// One of the doctor's kernel probes, in a process of its own
    #[command(hide = true)]
    Probe {
        #[command(subcommand)]
        probe: doctor::Probe,
    },
    /// Time every step's start against runc and the bare-namespace floor
    Bench {
        /// Measured runs of each case
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Unmeasured rounds first
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Where the step binaries are [default: target/release]
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Write the markdown report here too
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match chore(Cli::parse().chore) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn chore(chore: Chore) -> Result<ExitCode> {
    match chore {
        Chore::Rootfs { dest, programs } => {
            let dest = dest.unwrap_or_else(rootfs::default_path);
            // Quiet when there is nothing to do: `just run-step` depends on
            // this, and its stderr is the container's.
            if let rootfs::Build::Done { replaced } = rootfs::build_if_stale(&dest, &programs)? {
                eprintln!("workshop rootfs ready at {}", dest.display());
                if let Some(old) = replaced {
                    eprintln!(
                        "the one it replaces is kept at {} for containers still running on it; \
                         remove it when none is",
                        old.display()
                    );
                }
            }
        }
        Chore::Shell => return shell(),
        Chore::Doctor => return doctor::run(),
        Chore::Probe { probe } => probe.run()?,
        Chore::Diffs => {
            let all = steps::workspace_steps()?;
            for pair in all.windows(2) {
                let path = book::diff_path(&pair[1]);
                fs::create_dir_all(path.parent().expect("diffs folder"))?;
                fs::write(&path, book::step_diff(&pair[0], &pair[1])?)
                    .with_context(|| format!("write {}", path.display()))?;
            }
            book::write_diagrams()?;
        }
        Chore::Diagrams => book::write_diagrams()?,
        Chore::Diff { step } => {
            let all = steps::workspace_steps()?;
            let at = all
                .iter()
                .position(|s| s.number == step)
                .context("no such step")?;
            let before = at
                .checked_sub(1)
                .context("step 01 is where it starts: there is no diff")?;
            print!("{}", book::step_diff(&all[before], &all[at])?);
        }
        Chore::Bench {
            runs,
            warmup,
            bin_dir,
            out,
        } => {
            bench::check_tools()?;
            let bin_dir = bin_dir.unwrap_or_else(|| ferry_tests::target_dir().join("release"));
            let report = bench::run(&bench::Options {
                runs,
                warmup,
                bin_dir,
                rootfs: rootfs::built()?,
            })?;
            print!("{report}");
            if let Some(out) = out {
                fs::write(&out, &report).with_context(|| format!("write {}", out.display()))?;
            }
        }
        Chore::Bless => {
            book::write_diagrams()?;
            for path in book::files_below(&book::src(), ".console")? {
                transcript::check(&path, true)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a lab shell to its end and removes the lab; exits with the shell's
/// status.
fn shell() -> Result<ExitCode> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the lab shell runs containers, which only root may: run it with sudo"
    );
    let lab = Lab::new()?;
    eprintln!(
        "ferry lab in {}: the step binaries are on PATH, `rootfs` is a copy of \
         the workshop rootfs; `exit` removes the lab",
        lab.path().display()
    );
    let mut shell = lab.shell().spawn().context("start the lab shell")?;
    // Ctrl-C at the prompt, or a closed terminal, is for the shell and its
    // commands: this process stays to remove the lab when the shell is gone.
    // (Ignored only now, after the spawn: an ignored signal stays ignored
    // across exec, and the shell must get the default actions.)
    for ignored in [Signal::SIGINT, Signal::SIGQUIT, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
        unsafe { signal(ignored, SigHandler::SigIgn) }
            .with_context(|| format!("ignore {ignored}"))?;
    }
    let status = shell.wait().context("wait for the lab shell")?;
    drop(lab);
    let code = status
        .code()
        .or(status.signal().map(|n| 128 + n))
        .unwrap_or(125);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(125)))
}
