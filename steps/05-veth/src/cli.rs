//! The command line: `step05-veth run [OPTIONS] <ROOTFS> [COMMAND [ARG...]]`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::limits::Limits;
use crate::{exit, network, ports};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "ferry step 05: run a command with a network of its own"
)]
// With no arguments, say what is missing instead of printing the whole help.
#[command(arg_required_else_help = false)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Verb,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Run COMMAND inside ROOTFS and exit with its status
    Run(RunArgs),
}

// ANCHOR: run_args
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The container's hostname [default: the container's generated id]
    #[arg(long, value_name = "NAME", value_parser = hostname)]
    pub hostname: Option<String>,

    /// Where containers keep their writable layers while they run
    #[arg(
        long,
        value_name = "DIR",
        env = "FERRY_ROOT",
        default_value = "/var/lib/ferry"
    )]
    pub root: PathBuf,

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

    /// Directory holding the container's root filesystem
    pub rootfs: PathBuf,

    /// Command to run in the container, looked up in the container's PATH
    /// [default: /bin/sh]
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
