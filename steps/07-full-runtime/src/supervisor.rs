//! The supervisor: the process that stays with the container while it runs.
//!
//! It is the container's parent, so it is the one process that can wait for
//! it and learn its exit status. It holds the other ends of the container's
//! output and copies what comes out into the log (and to the caller, when
//! attached), passes the keyboard in for `-it`, and afterwards records how
//! the container ended and frees what it held. Docker splits this work
//! between dockerd, containerd and a containerd-shim per container (Podman:
//! conmon); ferry has no daemon, so `ferry run` is the supervisor itself, in
//! the foreground, or with `-d` a process of its own (detach.rs).

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::{read, write};

use crate::logs::{self, Stream};
use crate::stdio::{self, Outside};

/// Set by SIGWINCH: the caller's terminal changed size.
static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_resize(_: i32) {
    RESIZED.store(true, Ordering::SeqCst);
}

// ANCHOR: copy
/// Copies the container's output until it ends: until every process that
/// could write to it is gone. That is soon after PID 1 exits, since the
/// kernel then kills the rest of its PID namespace.
pub fn copy_output(outside: Outside, log: &mut logs::Writer, attached: bool) -> Result<()> {
    match outside {
        Outside::Pipes { stdout, stderr, .. } => {
            let mut open = vec![(stdout, Stream::Stdout), (stderr, Stream::Stderr)];
            while !open.is_empty() {
                let ready = wait_readable(open.iter().map(|(fd, _)| fd.as_fd()))?;
                let mut ended = Vec::new();
                for (index, (fd, stream)) in open.iter().enumerate() {
                    if !ready[index] {
                        continue;
                    }
                    let mut buffer = [0u8; 64 * 1024];
                    match read(fd, &mut buffer) {
                        Ok(0) | Err(Errno::EIO) => ended.push(index),
                        Ok(n) => {
                            log.write(*stream, &buffer[..n])?;
                            if attached {
                                pass_on(*stream, &buffer[..n]);
                            }
                        }
                        Err(Errno::EINTR | Errno::EAGAIN) => {}
                        Err(errno) => return Err(errno).context("read the container's output"),
                    }
                }
                for index in ended.into_iter().rev() {
                    let (_, stream) = open.remove(index);
                    log.finish(stream)?;
                }
            }
            Ok(())
        }
        Outside::Terminal { master, input } => copy_terminal(master, input, Some(log), attached),
    }
}
// ANCHOR_END: copy

/// What the caller sees: the same bytes, on the same stream. A caller that
/// stopped reading does not stop the log.
fn pass_on(stream: Stream, bytes: &[u8]) {
    let _ = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Stream::Stderr => std::io::stderr().lock().write_all(bytes),
    };
}

// ANCHOR: terminal
/// `-t`: the terminal's output to the log and the caller; with `-i`, the
/// caller's keys into the terminal, with the caller's terminal in raw mode,
/// so that every key (Ctrl-C too) goes to the container's terminal, whose
/// own line discipline then does what a terminal does with it. `exec -t`
/// logs nothing.
pub fn copy_terminal(
    master: OwnedFd,
    input: bool,
    mut log: Option<&mut logs::Writer>,
    attached: bool,
) -> Result<()> {
    let _raw = if input { Some(Raw::enter()?) } else { None };
    if attached {
        watch_resizes()?;
    }
    let stdin = std::io::stdin();
    let mut reading_stdin = input;
    loop {
        if RESIZED.swap(false, Ordering::SeqCst) {
            stdio::resize(master.as_fd());
        }
        let mut fds = vec![master.as_fd()];
        if reading_stdin {
            fds.push(stdin.as_fd());
        }
        let ready = wait_readable(fds.into_iter())?;
        let mut buffer = [0u8; 64 * 1024];
        if ready[0] {
            match read(&master, &mut buffer) {
                // EIO: every slave is closed, the container has ended.
                Ok(0) | Err(Errno::EIO) => break,
                Ok(n) => {
                    if let Some(log) = log.as_deref_mut() {
                        log.write(Stream::Stdout, &buffer[..n])?;
                    }
                    if attached {
                        pass_on(Stream::Stdout, &buffer[..n]);
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(errno) => return Err(errno).context("read the container's terminal"),
            }
        }
        if reading_stdin && ready[1] {
            match read(&stdin, &mut buffer) {
                Ok(0) | Err(Errno::EIO) => reading_stdin = false,
                Ok(n) => write_all(master.as_fd(), &buffer[..n])?,
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(errno) => return Err(errno).context("read stdin"),
            }
        }
    }
    log.map_or(Ok(()), |log| log.finish(Stream::Stdout))
}
// ANCHOR_END: terminal

fn write_all(fd: BorrowedFd, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(errno).context("write to the container's terminal"),
        }
    }
    Ok(())
}

/// Waits until one of `fds` can be read (or has hung up), and says which.
/// A signal (a forwarded one, SIGWINCH) ends the wait with nothing ready.
fn wait_readable<'a>(fds: impl Iterator<Item = BorrowedFd<'a>>) -> Result<Vec<bool>> {
    let mut polled: Vec<PollFd> = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN)).collect();
    match poll(&mut polled, PollTimeout::NONE) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(vec![false; polled.len()]),
        Err(errno) => return Err(errno).context("poll the container's output"),
    }
    Ok(polled
        .iter()
        .map(|fd| !fd.revents().unwrap_or(PollFlags::empty()).is_empty())
        .collect())
}

fn watch_resizes() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(note_resize),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { sigaction(Signal::SIGWINCH, &action) }.context("watch for SIGWINCH")?;
    Ok(())
}

// ANCHOR: raw
/// The caller's terminal in raw mode: no echo, no line editing, no signals
/// from keys; restored when dropped, on every way out of the copy.
struct Raw {
    saved: Termios,
}

impl Raw {
    fn enter() -> Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).context("read the terminal's settings")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .context("put the terminal in raw mode")?;
        Ok(Self { saved })
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
// ANCHOR_END: raw
