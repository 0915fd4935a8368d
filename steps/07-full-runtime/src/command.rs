//! The command and how it is executed: execve with a clean environment,
//! searching the container's PATH the way a shell does.

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use std::fs;

use anyhow::{Context, Result, ensure};
use nix::errno::Errno;
use nix::unistd::{chdir, execve};

use crate::image::RunConfig;
use crate::user;

use crate::exit::{Failure, NOT_EXECUTABLE, NOT_FOUND};

/// What a directory ROOTFS runs when no COMMAND is given; an image says
/// for itself.
const DEFAULT_COMMAND: &str = "/bin/sh";

// ANCHOR: environment
/// The PATH inside the container, unless the image sets its own: Docker's default.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's environment: Docker's PATH, then the image's `Env`, then
/// each `-e` (`-e KEY` alone passes the host's KEY on, if it has one). The
/// host's environment is not passed on otherwise: it describes the host
/// (its PATH, its HOME, its secrets), not the container. An empty
/// environment is no better: most programs need PATH and HOME (added at
/// exec, from the user's entry in /etc/passwd), and an interactive shell
/// needs TERM.
///
/// From step 07 the container's terminal is its own, not the caller's: with
/// `-t` it is told `TERM=xterm`, as Docker does, and without a terminal it
/// is told nothing of one.
fn environment(image: &[String], options: &[String], tty: bool) -> Result<Vec<String>> {
    let mut env: Vec<String> = vec![format!("PATH={PATH}")];
    if tty {
        env.push("TERM=xterm".to_owned());
    }
    for var in image
        .iter()
        .cloned()
        .chain(options.iter().filter_map(|var| {
            if var.contains('=') {
                Some(var.clone())
            } else {
                std::env::var(var)
                    .ok()
                    .map(|value| format!("{var}={value}"))
            }
        }))
    {
        let key = var.split('=').next().unwrap_or_default();
        ensure!(
            !key.is_empty() && !var.contains('\0'),
            "invalid environment variable {var:?}"
        );
        env.retain(|old| old.split('=').next() != Some(key));
        env.push(var);
    }
    Ok(env)
}
// ANCHOR_END: environment

/// What `run`'s options say about the command; each overrides the image.
#[derive(Debug, Default)]
pub struct Overrides {
    pub env: Vec<String>,
    /// `-t`: the command has a terminal.
    pub tty: bool,
    pub entrypoint: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

pub struct Command {
    argv: Vec<CString>,
    env: Vec<String>,
    workdir: Option<String>,
    user: Option<String>,
}

impl Command {
    // ANCHOR: new
    /// The command line, by Docker's rules: the entrypoint (`--entrypoint`,
    /// or the image's), then the arguments: COMMAND if given, else the
    /// image's `Cmd`, which `--entrypoint` clears.
    pub fn new(args: Vec<OsString>, image: Option<&RunConfig>, options: Overrides) -> Result<Self> {
        let from_image = image.is_some();
        let image = image.cloned().unwrap_or_default();
        // ANCHOR: lab06-9-command Docker's rules for the command line: the entrypoint (--entrypoint, "" for none, or the image's), then COMMAND if given, else the image's Cmd unless --entrypoint was given (Command::new) [06-registry-pull.md#the-images-config]
        let entrypoint: Vec<OsString> = match &options.entrypoint {
            Some(entrypoint) if entrypoint.is_empty() => Vec::new(),
            Some(entrypoint) => vec![entrypoint.into()],
            None => image
                .entrypoint
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
        };
        let args: Vec<OsString> = if !args.is_empty() {
            args
        } else if options.entrypoint.is_some() {
            Vec::new()
        } else {
            image
                .cmd
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect()
        };
        let mut line: Vec<OsString> = entrypoint.into_iter().chain(args).collect();
        // ANCHOR_END: lab06-9-command instead: let mut line: Vec<OsString> = args;
        if line.is_empty() {
            ensure!(
                !from_image,
                "no command: {}, so give a COMMAND",
                if options.entrypoint.is_some() {
                    "--entrypoint \"\" leaves neither an entrypoint nor the image's Cmd"
                } else {
                    "the image names neither an Entrypoint nor a Cmd"
                }
            );
            line.push(DEFAULT_COMMAND.into());
        }
        let argv = line
            .iter()
            .map(|arg| CString::new(arg.as_bytes()))
            .collect::<Result<_, _>>()
            .context("the command line holds a NUL byte")?;
        let workdir = options
            .workdir
            .or(image.working_dir)
            .filter(|dir| !dir.is_empty());
        if let Some(dir) = &workdir {
            ensure!(
                dir.starts_with('/'),
                "the working directory {dir:?} is invalid: it needs to be an absolute path"
            );
        }
        Ok(Self {
            argv,
            env: environment(
                image.env.as_deref().unwrap_or_default(),
                &options.env,
                options.tty,
            )?,
            workdir,
            user: options.user.or(image.user).filter(|user| !user.is_empty()),
        })
    }
    // ANCHOR_END: new

    /// The command line, for the record and `ps`.
    pub fn line(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    /// The environment, working directory and user: what `exec` starts with.
    pub fn context(&self) -> (Vec<String>, Option<String>, Option<String>) {
        (self.env.clone(), self.workdir.clone(), self.user.clone())
    }

    // ANCHOR: become
    /// Inside the container, just before exec: the user, with their HOME
    /// unless the environment has one, and the working directory (made if
    /// the image lacks it, as Docker does).
    fn prepare(&self) -> Result<Vec<CString>> {
        let user = match &self.user {
            Some(spec) => user::resolve(spec)?,
            None => user::resolve("0")?,
        };
        if let Some(dir) = &self.workdir {
            fs::create_dir_all(dir)
                .with_context(|| format!("create the working directory {dir}"))?;
        }
        user::become_user(&user)?;
        if let Some(dir) = &self.workdir {
            chdir(dir.as_str()).with_context(|| format!("chdir to the working directory {dir}"))?;
        }
        let mut env = self.env.clone();
        if !env.iter().any(|var| var.starts_with("HOME=")) {
            let home = if user.uid == 0 && user.home == "/" {
                "/root".to_owned()
            } else {
                user.home
            };
            env.push(format!("HOME={home}"));
        }
        env.into_iter()
            .map(|var| CString::new(var).context("an environment variable holds a NUL byte"))
            .collect()
    }
    // ANCHOR_END: become

    // ANCHOR: exec
    /// Replaces this process with the command. Returns only on failure, with
    /// status 127 if the command does not exist and 126 if it cannot run.
    pub fn exec(&self) -> Result<Infallible> {
        // ANCHOR: lab01-2-exec Become the command: execve(2) it with the clean environment, by path or searched in PATH; 127 if not found, 126 if it cannot run (exec_failure, not_found) [01-chroot.md#when-exec-fails]
        let env = self.prepare()?;
        let name = self.argv[0].as_bytes();
        if name.contains(&b'/') {
            let errno = execve(&self.argv[0], &self.argv, &env).unwrap_err();
            return Err(exec_failure(&self.argv[0], errno));
        }
        // A bare name: try each PATH directory in turn. Like a shell, go on
        // past a file that exists but cannot run, and report it if nothing
        // better turns up. ENOENT means "not here", unless the file is here:
        // then it is its interpreter that is missing (see exec_failure).
        let mut denied = None;
        let path = env
            .iter()
            .find_map(|var| var.to_bytes().strip_prefix(b"PATH="))
            .unwrap_or(PATH.as_bytes());
        for dir in path.split(|&b| b == b':').filter(|_| !name.is_empty()) {
            let candidate = CString::new([dir, b"/", name].concat())?;
            match execve(&candidate, &self.argv, &env).unwrap_err() {
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
