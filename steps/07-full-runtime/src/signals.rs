//! While the container runs, the runtime stays out of the way of signals.
//!
//! Ctrl-C at a terminal sends SIGINT to the whole foreground process group:
//! the container and the runtime alike. If the runtime died of it, the
//! container would be left running on the terminal with nobody waiting for
//! it. So the runtime ignores SIGINT and SIGQUIT, as system(3) does, and the
//! container decides for itself. Signals aimed at the runtime alone (SIGTERM
//! from `kill`, SIGHUP when the terminal goes away) are passed on to the
//! container, which is what `docker run` does too.

use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::Pid;

const INTERRUPTS: [Signal; 2] = [Signal::SIGINT, Signal::SIGQUIT];
const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The container's pid, for the signal handler (which can take no arguments).
static CONTAINER: AtomicI32 = AtomicI32::new(0);

pub fn ignore_terminal_interrupts() -> Result<()> {
    set_all(&INTERRUPTS, SigHandler::SigIgn)
}

// ANCHOR: restore_defaults
/// In the child, before exec: give the command the signal state a program
/// expects to start with. execve resets caught signals to their defaults,
/// but an *ignored* signal stays ignored and a *blocked* one stays blocked.
/// Our own SIGINT and SIGQUIT are ignored (above), and Rust's runtime
/// ignores SIGPIPE in every Rust program at start-up: left as they are,
/// Ctrl-C could never stop the command, and `yes | head -n 1` would end
/// with "Broken pipe" instead of quietly.
pub fn restore_defaults() -> Result<()> {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // Every signal nix knows by name: the standard ones. SIGKILL and SIGSTOP
    // cannot be caught or ignored, so they are never anything but default.
    for signal in Signal::iterator().filter(|s| ![Signal::SIGKILL, Signal::SIGSTOP].contains(s)) {
        // SAFETY: SigDfl runs no code of ours.
        unsafe { sigaction(signal, &default) }
            .with_context(|| format!("reset the action for {signal}"))?;
    }
    SigSet::empty()
        .thread_set_mask()
        .context("unblock every signal")
}
// ANCHOR_END: restore_defaults

// ANCHOR: die_with_runtime
/// In the child, first: be killed when the runtime dies. Otherwise a
/// `kill -9` of the runtime would leave the container running, adopted by
/// the host's init, with nobody to wait for it or clean up after it. The
/// kernel sends the signal when the thread that cloned us exits. PID 1 of a
/// namespace ignores signals it has no handler for, but not a SIGKILL that
/// comes from outside its namespace, as this one does.
pub fn die_with_runtime() -> Result<()> {
    // ANCHOR: lab02-4-die-with-runtime Die with the runtime: prctl(PR_SET_PDEATHSIG) with SIGKILL [02-pid-ns.md#the-container-dies-with-its-runtime]
    set_pdeathsig(Signal::SIGKILL).context("set the parent-death signal")
    // ANCHOR_END: lab02-4-die-with-runtime instead: Ok(())
}
// ANCHOR_END: die_with_runtime

pub fn forward_to(container: Pid) -> Result<()> {
    CONTAINER.store(container.as_raw(), Ordering::SeqCst);
    set_all(&FORWARDED, SigHandler::Handler(forward))
}

extern "C" fn forward(signal: i32) {
    // Only async-signal-safe calls here: an atomic load and kill(2).
    let container = CONTAINER.load(Ordering::SeqCst);
    if let (true, Ok(signal)) = (container > 0, Signal::try_from(signal)) {
        let _ = kill(Pid::from_raw(container), signal);
    }
}

/// `--init`'s PID 1: every signal that another process may send to ask
/// something of the command, passed on to it. Not those the kernel sends
/// for a fault of PID 1's own (SIGSEGV, SIGBUS…), nor SIGCHLD, which tells
/// PID 1 of its children, nor the terminal's job-control stops.
pub fn forward_all_to(command: Pid) -> Result<()> {
    const NOT_FORWARDED: [Signal; 12] = [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGCHLD,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGFPE,
        Signal::SIGILL,
        Signal::SIGABRT,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ];
    let all: Vec<Signal> = Signal::iterator()
        .filter(|signal| !NOT_FORWARDED.contains(signal))
        .collect();
    CONTAINER.store(command.as_raw(), Ordering::SeqCst);
    set_all(&all, SigHandler::Handler(forward))
}

fn set_all(signals: &[Signal], handler: SigHandler) -> Result<()> {
    // SA_RESTART: a forwarded signal must not make our waitpid fail with EINTR.
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    for &signal in signals {
        // SAFETY: the handler, if any, is `forward`, which makes only
        // async-signal-safe calls; SigIgn and SigDfl run no code of ours.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("set the action for {signal}"))?;
    }
    Ok(())
}
