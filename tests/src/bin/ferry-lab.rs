//! ferry-lab: the workshop's chores, called by the justfile.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};
use ferry_tests::lab::Lab;
use ferry_tests::{
    bench, book, doctor, grade, registry, registry_lab, rootfs, skeleton, steps, transcript,
};
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
    /// Write labs/NN-slug: step N with the code that teaches its idea cut
    /// out, for you to write
    Lab {
        step: u8,
        /// Replace a lab that is there already (your work in it is lost)
        #[arg(long)]
        force: bool,
        /// Where labs go [default: labs]
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Build labs/NN-slug and run the behaviour suite against it as step N;
    /// exits 1 if a behaviour fails
    Check {
        step: u8,
        /// Where labs are [default: labs]
        #[arg(long)]
        labs: Option<PathBuf>,
        /// Write the results as JSON to FILE too
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the results as JUnit XML to FILE too
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Serve the workshop images from a registry of our own until Ctrl-C
    ClassroomRegistry {
        /// Where it listens: 0.0.0.0:5000 for a room's network
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: String,
        /// Where it keeps its images and configuration [default:
        /// target/ferry/classroom]
        #[arg(long, env = "FERRY_CLASSROOM_DIR")]
        data: Option<PathBuf>,
        /// Ask for tokens, as Docker Hub does: a token service on the same
        /// address, two ports up, gives anyone pull rights on the demo images
        #[arg(long)]
        token: bool,
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
        Chore::ClassroomRegistry {
            listen,
            data,
            token,
        } => {
            classroom_registry(
                &listen,
                &data.unwrap_or_else(registry::classroom_dir),
                token,
            )?;
        }
        Chore::Lab { step, force, into } => {
            let step = steps::workspace_step(step)?;
            let labs = into.unwrap_or_else(|| ferry_tests::workspace().join("labs"));
            let dest = grade::lab_folder(&labs, &step);
            if dest.exists() {
                ensure!(
                    force,
                    "{} exists, and may hold your work: `just lab {} --force` replaces it",
                    dest.display(),
                    step.number
                );
                fs::remove_dir_all(&dest).with_context(|| format!("remove {}", dest.display()))?;
            }
            let cuts = skeleton::write(&step, &dest)?;
            eprintln!(
                "lab {:02} is in {}: {} TODOs, listed in order in its README.md; \
                 `just check {}` grades it",
                step.number,
                dest.display(),
                cuts.len(),
                step.number
            );
        }
        Chore::Check {
            step,
            labs,
            json,
            junit,
        } => return check(step, labs, json, junit),
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
                .with_context(|| format!("there is no step {step} in steps/"))?;
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

/// `just classroom-registry`: start the registry, push the images, and
/// serve until Ctrl-C, which reaches the registry too (same terminal).
fn classroom_registry(listen: &str, data: &std::path::Path, token: bool) -> Result<()> {
    let (server, issuer) = if token {
        let addr: std::net::SocketAddr = listen
            .parse()
            .with_context(|| format!("--listen {listen}: an IP address and a port"))?;
        ensure!(
            !addr.ip().is_unspecified(),
            "--token needs the address learners reach (the token service's realm names it), \
             not {listen}: give this machine's address on the room's network"
        );
        let issuer_addr = std::net::SocketAddr::new(addr.ip(), addr.port() + 2);
        let issuer = registry::TokenIssuer::start(
            &data.join("issuer"),
            &registry_lab::DEMO_REPOSITORIES,
            issuer_addr,
        )?;
        let server = registry::Registry::start_with_token_auth(listen, data, &issuer)?;
        (server, Some(issuer))
    } else {
        (registry::Registry::start(listen, data)?, None)
    };
    let creds = issuer.as_ref().map(|_| registry::PUSHER);
    let images = server.push_workshop_images(&rootfs::built()?, &data.join("build"), creds)?;
    // Ctrl-C is for the registry, which stops; this process stays to say so.
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
    unsafe { signal(Signal::SIGINT, SigHandler::SigIgn) }.context("ignore SIGINT")?;
    println!("serving the workshop images on {listen} until Ctrl-C:");
    if let Some(issuer) = &issuer {
        println!("(clients get a token from {} first)", issuer.realm());
    }
    for image in &images {
        println!("  {image}");
    }
    if listen.starts_with("0.0.0.0") {
        println!("learners pull them by this machine's address instead of 127.0.0.1");
    }
    server.wait()?;
    eprintln!("the registry stopped; its data stays in {}", data.display());
    // End as a program that Ctrl-C ended does, by the signal: a caller
    // (the shell, `just`) then knows it was interrupted, and says nothing.
    // SAFETY: SIG_DFL installs no handler.
    unsafe { signal(Signal::SIGINT, SigHandler::SigDfl) }.context("restore SIGINT")?;
    nix::sys::signal::raise(Signal::SIGINT).context("raise SIGINT")?;
    Ok(())
}

/// `just check N`: build the lab, grade it, report.
fn check(
    step: u8,
    labs: Option<PathBuf>,
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
) -> Result<ExitCode> {
    let step = steps::workspace_step(step)?;
    let labs = labs.unwrap_or_else(|| ferry_tests::workspace().join("labs"));
    let folder = grade::lab_folder(&labs, &step);
    ensure!(
        folder.join("Cargo.toml").exists(),
        "there is no lab for step {} in {} (or it has no Cargo.toml): `just lab {}` writes it",
        step.number,
        folder.display(),
        step.number
    );
    let binary = grade::build(&folder, &step, &ferry_tests::target_dir())?;
    let verdicts = grade::run_suite(&binary, &step)?;
    print!("{}", grade::summary(&verdicts));
    if let Some(path) = json {
        let report = grade::json_report(&step, &folder, &verdicts);
        fs::write(&path, format!("{report:#}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = junit {
        fs::write(&path, grade::junit_report(&step, &verdicts))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(if verdicts.iter().all(|v| v.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
