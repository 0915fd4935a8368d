//! The container's log: `ROOT/ID/container.log`, one JSON object per line,
//! in the shape of Docker's json-file driver:
//!
//! ```text
//! {"log":"hello\n","stream":"stdout","time":"2026-12-01T13:05:27.123456789Z"}
//! ```
//!
//! The supervisor writes it, the only process that reads the container's
//! output; `ferry logs` reads it, while the container runs or long after.
//! JSON, not the bytes as they came, so that each line keeps which stream it
//! came from and when: `logs` sends stdout lines to stdout and stderr lines
//! to stderr, and `-t` shows the times.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::clock;

pub const FILE: &str = "container.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    log: String,
    stream: Stream,
    time: String,
}

// ANCHOR: writer
/// The supervisor's end: whole lines, each stamped when it was read. A line
/// that has not ended yet waits in `pending` for the rest of it (or for the
/// end of the stream).
pub struct Writer {
    file: File,
    pending: [Vec<u8>; 2],
}

/// A line longer than this is logged in pieces, as Docker does at 16 KiB,
/// so that a program that never writes a newline cannot fill our memory.
const MAX_LINE: usize = 16 * 1024;

impl Writer {
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        Ok(Self {
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Logs what the container just wrote on `stream`.
    pub fn write(&mut self, stream: Stream, bytes: &[u8]) -> Result<()> {
        let pending = &mut self.pending[stream as usize];
        pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            lines.push(pending.drain(..=end).collect::<Vec<u8>>());
        }
        while pending.len() >= MAX_LINE {
            lines.push(pending.drain(..MAX_LINE).collect());
        }
        for line in lines {
            self.append(stream, &line)?;
        }
        Ok(())
    }

    /// The stream has ended: log what is left of its last line.
    pub fn finish(&mut self, stream: Stream) -> Result<()> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if rest.is_empty() {
            return Ok(());
        }
        self.append(stream, &rest)
    }

    fn append(&mut self, stream: Stream, line: &[u8]) -> Result<()> {
        let entry = Entry {
            // Output that is not UTF-8 is kept with U+FFFD where bytes were
            // invalid, as Docker's json-file does: JSON strings are Unicode.
            log: String::from_utf8_lossy(line).into_owned(),
            stream,
            time: clock::rfc3339(clock::now()),
        };
        let mut json = serde_json::to_vec(&entry).context("encode a log line")?;
        json.push(b'\n');
        // One write(2) per line, in append mode: a reader never sees half
        // a line, only whole ones or none.
        self.file
            .write_all(&json)
            .context("write the container's log")
    }
}
// ANCHOR_END: writer

/// What `ferry logs` was asked for.
pub struct Options {
    pub follow: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
}

// ANCHOR: show
/// Prints the log of the container in `dir`: every line, or the last
/// `tail`; with `follow`, then what comes, until `running` says false.
pub fn show(dir: &Path, options: &Options, running: impl Fn() -> bool) -> Result<()> {
    let path: PathBuf = dir.join(FILE);
    // A container that has not written anything yet has no log yet.
    let file = match File::open(&path) {
        Ok(file) => Some(file),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).with_context(|| format!("open {}", path.display())),
    };
    let mut offset = 0;
    if let Some(file) = file {
        let lines = read_lines(&file, 0)?;
        let skip = options
            .tail
            .map_or(0, |tail| lines.0.len().saturating_sub(tail));
        for line in &lines.0[skip..] {
            print(line, options.timestamps)?;
        }
        offset = lines.1;
    }
    if !options.follow {
        return Ok(());
    }
    loop {
        // Alive before reading, so that what it wrote just before it ended
        // is read after: nothing is lost between the last read and the end.
        let alive = running();
        if let Ok(file) = File::open(&path) {
            let (lines, end) = read_lines(&file, offset)?;
            for line in &lines {
                print(line, options.timestamps)?;
            }
            offset = end;
        }
        if !alive {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
// ANCHOR_END: show

/// The whole lines from `offset` on, and where the last one ended.
fn read_lines(file: &File, offset: u64) -> Result<(Vec<Entry>, u64)> {
    let mut reader = BufReader::new(file);
    reader.seek(SeekFrom::Start(offset))?;
    let mut entries = Vec::new();
    let mut end = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader.read_line(&mut line).context("read the log")?;
        // Nothing more, or a line still being written.
        if read == 0 || !line.ends_with('\n') {
            break;
        }
        end += read as u64;
        entries.push(serde_json::from_str(&line).context("parse a line of the log")?);
    }
    Ok((entries, end))
}

fn print(entry: &Entry, timestamps: bool) -> Result<()> {
    let stamp = if timestamps {
        format!("{} ", entry.time)
    } else {
        String::new()
    };
    let bytes = format!("{stamp}{}", entry.log);
    match entry.stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes.as_bytes())?;
            out.flush()?;
        }
        Stream::Stderr => std::io::stderr().lock().write_all(bytes.as_bytes())?,
    }
    Ok(())
}
