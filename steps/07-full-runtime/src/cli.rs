//! The command line: `ferry run [OPTIONS] <ROOTFS|IMAGE> [COMMAND [ARG...]]`,
//! and the rest of Docker's verbs, with Docker's names and flags:
//! `ps`, `logs`, `stop`, `kill`, `rm`, `inspect`, `pull`, `images`, `rmi`,
//! `version`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::image::Platform;
use crate::limits::Limits;
use crate::{exit, network, ports};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "ferry (workshop step 07): a small Docker, with no daemon"
)]
// With no arguments, say what is missing instead of printing the whole help.
#[command(arg_required_else_help = false)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Run COMMAND inside ROOTFS, or in an image (pulled first if it is not
    /// here), and exit with its status
    Run(Box<RunArgs>),
    /// Pull an image from its registry into the store
    Pull(PullArgs),
    /// List the images in the store
    Images(StoreArgs),
    /// Remove images, and the layers no other image uses
    Rmi(RmiArgs),
    /// List containers
    Ps(PsArgs),
    /// Show what a container wrote on stdout and stderr
    Logs(LogsArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Stop containers: SIGTERM, then SIGKILL after a grace period
    Stop(StopArgs),
    /// Send a signal to containers
    Kill(KillArgs),
    /// Remove containers that have ended (-f: and running ones)
    Rm(RmArgs),
    /// Show what ferry knows of containers or images, as JSON
    Inspect(InspectArgs),
    /// Show ferry's version
    Version,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Show every container (by default only running ones)
    #[arg(short, long)]
    pub all: bool,

    /// Show only the containers' ids
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Go on printing what the container writes, until it ends
    #[arg(short, long)]
    pub follow: bool,

    /// Show only this many lines from the end ("all": every line)
    #[arg(short = 'n', long, value_name = "N", value_parser = tail)]
    pub tail: Option<usize>,

    /// Show when each line was written
    #[arg(short, long)]
    pub timestamps: bool,

    pub container: String,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub process: ProcessArgs,

    pub container: String,

    /// The command, looked up in the container's PATH
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Seconds to wait after SIGTERM before SIGKILL
    #[arg(short, long, value_name = "SECONDS", default_value_t = 10)]
    pub time: u64,

    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// The signal to send: a name (KILL, SIGTERM) or a number
    #[arg(short, long, value_name = "SIGNAL", default_value = "KILL")]
    pub signal: String,

    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Kill a running container (SIGKILL) before removing it
    #[arg(short, long)]
    pub force: bool,

    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// Containers (name, id, or a prefix of the id) or images
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `--tail N`, or Docker's `--tail all`.
fn tail(text: &str) -> Result<usize, String> {
    if text == "all" {
        return Ok(usize::MAX);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a number of lines"))
}

/// Where the images are kept: the same --root as the containers'.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where containers keep their writable layers, and images their layers
    #[arg(
        long,
        value_name = "DIR",
        env = "FERRY_ROOT",
        default_value = "/var/lib/ferry"
    )]
    pub root: PathBuf,
}

// ANCHOR: registry_args
/// How to reach a registry.
#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// The platform to pull from an index of several [default: this machine's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = Platform::parse)]
    pub platform: Option<Platform>,

    /// A registry to speak plain HTTP to (those on loopback always are)
    /// (repeatable)
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,

    /// Log in with this user name, the password read from standard input
    /// (with --password-stdin); or set FERRY_AUTH=USER:PASSWORD
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,

    /// Read the password for --username from standard input
    #[arg(long, requires = "username")]
    pub password_stdin: bool,

    /// Refuse a layer that unpacks to more than this many bytes
    #[arg(long, value_name = "BYTES", env = "FERRY_MAX_LAYER_SIZE", default_value_t = 16 << 30, hide = true)]
    pub max_layer_size: u64,
}
// ANCHOR_END: registry_args

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// [REGISTRY/]NAME[:TAG][@DIGEST], as Docker reads it
    pub image: String,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    #[command(flatten)]
    pub store: StoreArgs,

    /// The images to remove
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// How the command runs, in `run` and in `exec` alike.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Keep stdin open: the caller's (with run -d, an open pipe that nobody
    /// writes to)
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the command a terminal of its own (with -i: the keyboard)
    #[arg(short, long)]
    pub tty: bool,

    /// Set an environment variable: KEY=VALUE, or KEY to pass this shell's
    /// on (repeatable)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// The command's working directory [default: the image's WorkingDir,
    /// or /; for exec, the container's]
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,

    /// Run as this user: NAME, UID, NAME:GROUP or UID:GID [default: the
    /// image's User, or root; for exec, the container's]
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
}

// ANCHOR: run_args
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background: print the container's id and return
    #[arg(short, long)]
    pub detach: bool,

    /// Remove the container when it ends
    #[arg(long)]
    pub rm: bool,

    /// The container's name [default: made up, like brave_hopper]
    #[arg(long, value_name = "NAME", value_parser = crate::names::check)]
    pub name: Option<String>,

    /// Run a small init as PID 1, which passes signals on to the command
    /// and reaps orphaned processes
    #[arg(long)]
    pub init: bool,

    /// Bind-mount a host directory: HOST_DIR:CONTAINER_DIR[:ro] (repeatable)
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = crate::volumes::parse)]
    pub volumes: Vec<crate::volumes::Volume>,

    /// The container's hostname [default: the container's generated id]
    #[arg(long, value_name = "NAME", value_parser = hostname)]
    pub hostname: Option<String>,

    #[command(flatten)]
    pub store: StoreArgs,

    /// The cgroup that holds the containers' cgroups
    #[arg(long, value_name = "NAME", env = "FERRY_CGROUP_PARENT", default_value = "ferry", value_parser = cgroup_name)]
    pub cgroup_parent: String,

    #[command(flatten)]
    pub limits: Limits,

    /// The container's network: bridge (its own, on the ferry0 bridge,
    /// whose subnet is $FERRY_SUBNET or 10.77.0.0/16), none (its own,
    /// with only lo) or host (the host's)
    #[arg(long, value_name = "MODE", default_value = "bridge", value_parser = network::Mode::parse)]
    pub network: network::Mode,

    /// Publish a container's port on the host's addresses:
    /// [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp] (repeatable)
    #[arg(short = 'p', long = "publish", value_name = "PORTS", value_parser = ports::parse)]
    pub publish: Vec<ports::Publish>,

    #[command(flatten)]
    pub process: ProcessArgs,

    /// Run this program instead of the image's Entrypoint ("" for none);
    /// the image's Cmd is then not used either
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// A directory holding the container's root filesystem, or an image:
    /// [REGISTRY/]NAME[:TAG][@DIGEST] (a directory that exists wins)
    #[arg(value_name = "ROOTFS|IMAGE")]
    pub rootfs: PathBuf,

    /// Command to run in the container, looked up in the container's PATH
    /// [default: the image's Cmd, or /bin/sh in a directory]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}
// ANCHOR_END: run_args

/// A hostname as RFC 1123 allows it: labels of 1 to 63 characters, within
/// the kernel's limit of 64 bytes for the whole name (sethostname(2) says
/// EINVAL beyond it).
fn hostname(name: &str) -> Result<String, String> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() <= 64 && name.split('.').all(label_ok) {
        Ok(name.to_owned())
    } else {
        Err(
            "a hostname is at most 64 bytes: labels of 1 to 63 letters, digits and '-', \
             separated by '.'"
                .to_owned(),
        )
    }
}

/// One directory name: the parent cgroup sits at the top of each hierarchy.
fn cgroup_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err("a cgroup name is letters, digits, '-', '_' and '.'".to_owned())
    }
}

/// Parses the command line. `--help` and `--version` print to stdout and end
/// with status 0. A usage error ends like every other runtime failure: one
/// line on stderr and status 125, so that callers can tell it apart from the
/// command's own status (clap alone would print several lines and exit 2).
pub fn parse() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|error| {
        if !error.use_stderr() {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        // clap's message is a paragraph ("…not provided:\n  <ROOTFS>"),
        // then tips and usage: keep the paragraph, folded onto one line.
        let rendered = error.render().to_string();
        let message: Vec<&str> = rendered
            .lines()
            .take_while(|line| !line.is_empty())
            .map(str::trim)
            .collect();
        eprintln!("{} (see --help)", message.join(" "));
        ExitCode::from(exit::RUNTIME_FAILURE)
    })
}
