//! Container ids: 12 random hex digits, like Docker's short ids.

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};

pub fn generate() -> Result<String> {
    let mut bytes = [0u8; 6];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom for a container id")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}
