//! ferry-lab: the workshop's chores, called by the justfile.

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferry_tests::{bench, book, rootfs, steps, transcript};

#[derive(Parser)]
#[command(about = "Builds the workshop rootfs and regenerates the book's generated parts")]
struct Cli {
    #[command(subcommand)]
    chore: Chore,
}

#[derive(Subcommand)]
enum Chore {
    /// Build the workshop root filesystem from the host's static busybox
    Rootfs {
        /// Where to build it [default: target/ferry/rootfs]
        dest: Option<PathBuf>,
        /// A static program to put into /bin (repeatable)
        #[arg(long = "program")]
        programs: Vec<PathBuf>,
    },
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
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn chore(chore: Chore) -> Result<()> {
    match chore {
        Chore::Rootfs { dest, programs } => {
            let dest = dest.unwrap_or_else(rootfs::default_path);
            rootfs::build(&dest, &programs)?;
            eprintln!("workshop rootfs ready at {}", dest.display());
        }
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
    Ok(())
}
