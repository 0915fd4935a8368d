//! A pseudo-terminal of the test's own, to drive a runtime as a person at a
//! terminal would: the runtime's stdin, stdout and stderr are the slave,
//! which is also its controlling terminal, and the test types into the
//! master and reads what the screen would show.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{Winsize, openpty};
use nix::sys::termios::{Termios, tcgetattr};

pub struct Terminal {
    master: File,
    child: Child,
    /// Everything the screen has shown so far.
    pub screen: String,
    /// How far `expect` has read.
    seen: usize,
}

impl Terminal {
    /// Starts `program ARGS` on a new terminal of `rows` × `columns`.
    pub fn spawn<I, S>(program: &OsStr, args: I, rows: u16, columns: u16) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let size = Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).context("openpty")?;
        let slave: OwnedFd = pty.slave;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe, as the code
        // between fork and exec must be.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", program.to_string_lossy()))?;
        Ok(Self {
            master: File::from(pty.master),
            child,
            screen: String::new(),
            seen: 0,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The terminal's settings now (the master reads the pair's).
    pub fn settings(&self) -> Result<Termios> {
        tcgetattr(self.master.as_fd()).context("tcgetattr")
    }

    /// Changes the terminal's size, as a window that is resized does: the
    /// kernel then sends SIGWINCH to the terminal's foreground group.
    pub fn resize(&self, rows: u16, columns: u16) -> Result<()> {
        let size = Winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize, which `size` is.
        let done = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        nix::errno::Errno::result(done).context("resize the terminal")?;
        Ok(())
    }

    /// Types `keys`.
    pub fn send(&mut self, keys: &str) -> Result<()> {
        self.master
            .write_all(keys.as_bytes())
            .context("type into the terminal")
    }

    /// Waits until the screen shows `text` after what was expected before,
    /// and returns what came up to its end.
    pub fn expect(&mut self, text: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.screen[self.seen..].find(text) {
                let end = self.seen + at + text.len();
                let shown = self.screen[self.seen..end].to_owned();
                self.seen = end;
                return Ok(shown);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.read_for(left)? {
                bail!(
                    "the terminal did not show {text:?} within {limit:?}; it showed:\n{}",
                    self.screen
                );
            }
        }
    }

    /// Reads what comes within `limit`; false once the terminal is closed.
    fn read_for(&mut self, limit: Duration) -> Result<bool> {
        let millis = limit.as_millis().min(i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
        poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        )
        .context("poll the terminal")?;
        if fds[0].revents().is_none_or(|events| events.is_empty()) {
            return Ok(true);
        }
        let mut buffer = [0u8; 4096];
        match self.master.read(&mut buffer) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.screen.push_str(&String::from_utf8_lossy(&buffer[..n]));
                Ok(true)
            }
            // EIO: every slave is closed.
            Err(error) if error.raw_os_error() == Some(libc::EIO) => Ok(false),
            Err(error) => Err(error).context("read the terminal"),
        }
    }

    /// Waits for the program to end (reading the screen meanwhile, so that
    /// it never blocks on a full terminal) and returns its status.
    pub fn wait(&mut self, limit: Duration) -> Result<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                use std::os::unix::process::ExitStatusExt;
                return Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
            }
            if Instant::now() > deadline {
                bail!(
                    "still running after {limit:?}; the screen:\n{}",
                    self.screen
                );
            }
            self.read_for(Duration::from_millis(20))?;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // Our own child, by its pid, if the test failed before its end.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
