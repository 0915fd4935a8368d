//! The command and how it is executed: execve with a clean environment,
//! searching the container's PATH the way a shell does.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::unistd::execve;

use crate::exit::{Failure, NOT_EXECUTABLE, NOT_FOUND};

const DEFAULT_COMMAND: &str = "/bin/sh";

// ANCHOR: environment
/// The PATH inside the container: Docker's default.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's environment. The host's environment is not passed on: it
/// describes the host (its PATH, its HOME, its secrets), not the container.
/// An empty environment is no better: most programs need PATH and HOME, and
/// an interactive shell needs TERM.
fn environment() -> Vec<CString> {
    let mut env = vec![format!("PATH={PATH}"), "HOME=/root".to_owned()];
    if let Ok(term) = std::env::var("TERM") {
        env.push(format!("TERM={term}"));
    }
    env.into_iter()
        .map(|var| CString::new(var).expect("no NUL in environment"))
        .collect()
}
// ANCHOR_END: environment

pub struct Command {
    argv: Vec<CString>,
    env: Vec<CString>,
}

impl Command {
    pub fn new(args: Vec<OsString>) -> Result<Self> {
        let args = if args.is_empty() {
            vec![DEFAULT_COMMAND.into()]
        } else {
            args
        };
        let argv = args
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<_, _>>()
            .context("the command line holds a NUL byte")?;
        Ok(Self {
            argv,
            env: environment(),
        })
    }

    // ANCHOR: exec
    /// Replaces this process with the command. Returns only on failure, with
    /// status 127 if the command does not exist and 126 if it cannot run.
    pub fn exec(&self) -> Result<Infallible> {
        // ANCHOR: lab01-2-exec Become the command: execve(2) it with the clean environment, by path or searched in PATH; 127 if not found, 126 if it cannot run (exec_failure, not_found) [01-chroot.md#when-exec-fails]
        let name = self.argv[0].as_bytes();
        if name.contains(&b'/') {
            let errno = execve(&self.argv[0], &self.argv, &self.env).unwrap_err();
            return Err(exec_failure(&self.argv[0], errno));
        }
        // A bare name: try each PATH directory in turn. Like a shell, go on
        // past a file that exists but cannot run, and report it if nothing
        // better turns up. ENOENT means "not here", unless the file is here:
        // then it is its interpreter that is missing (see exec_failure).
        let mut denied = None;
        for dir in PATH.split(':').filter(|_| !name.is_empty()) {
            let candidate = CString::new([dir.as_bytes(), b"/", name].concat())?;
            match execve(&candidate, &self.argv, &self.env).unwrap_err() {
                Errno::ENOENT | Errno::ENOTDIR if !exists(&candidate) => continue,
                errno => denied = denied.or(Some((candidate, errno))),
            }
        }
        Err(match denied {
            Some((path, errno)) => exec_failure(&path, errno),
            None => not_found(&self.argv[0]),
        })
        // ANCHOR_END: lab01-2-exec
    }
    // ANCHOR_END: exec
}

fn exec_failure(path: &CString, errno: Errno) -> anyhow::Error {
    let shown = path.to_string_lossy();
    if errno != Errno::ENOENT {
        return Failure {
            status: NOT_EXECUTABLE,
            message: format!("cannot execute {shown}: {errno}"),
        }
        .into();
    }
    // ENOENT for a file that exists means the kernel could not find the
    // program's interpreter: the dynamic loader named in the ELF header, or
    // the #! line of a script. A classic trap with dynamically linked binaries
    // copied into a minimal root filesystem.
    if exists(path) {
        return Failure {
            status: NOT_EXECUTABLE,
            message: format!(
                "cannot execute {shown}: its interpreter (dynamic loader or #! line) \
                 is missing from the root filesystem"
            ),
        }
        .into();
    }
    not_found(path)
}

/// Whether a file is there (following links, as execve does).
fn exists(path: &CString) -> bool {
    Path::new(std::ffi::OsStr::from_bytes(path.as_bytes())).exists()
}

fn not_found(name: &CString) -> anyhow::Error {
    let shown = name.to_string_lossy();
    Failure {
        status: NOT_FOUND,
        message: format!("{shown}: command not found in the container"),
    }
    .into()
}
