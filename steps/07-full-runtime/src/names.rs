//! Container ids and names.
//!
//! An id is 64 random hex digits, as Docker's; the first 12 are enough to
//! tell containers apart on one machine, and they name the container's
//! folder, cgroup and veth (an interface name has room for 15 bytes). A
//! name is for people: `--name web`, or one made up from two words as
//! Docker does (`brave_hopper`). Either names the container in `stop`,
//! `logs`, `rm` and the rest, as does any prefix of the id that only one
//! container has.

use std::fs::File;
use std::io::Read;

use anyhow::{Context, Result};

pub fn generate_id() -> Result<String> {
    Ok(random_bytes::<32>()?
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes)
}

/// Docker's grammar for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check(name: &str) -> Result<String, String> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if first_ok && rest_ok && name.len() >= 2 {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, \
             at least two characters"
        ))
    }
}

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "sharp", "tender", "witty",
];

/// People whose work a container stands on.
const SURNAMES: [&str; 16] = [
    "babbage",
    "cerf",
    "dijkstra",
    "hamilton",
    "hopper",
    "kernighan",
    "knuth",
    "lamport",
    "liskov",
    "lovelace",
    "mccarthy",
    "perlman",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
];

/// A name like `brave_hopper`, that `taken` says no container has yet.
pub fn invent(taken: impl Fn(&str) -> bool) -> Result<String> {
    for _ in 0..64 {
        let [a, b] = random_bytes::<2>()?;
        let name = format!(
            "{}_{}",
            ADJECTIVES[usize::from(a) % ADJECTIVES.len()],
            SURNAMES[usize::from(b) % SURNAMES.len()]
        );
        if !taken(&name) {
            return Ok(name);
        }
    }
    // 256 names taken: add digits, as Docker does when its names run out.
    let [a, b] = random_bytes::<2>()?;
    Ok(format!(
        "{}_{}{}",
        ADJECTIVES[usize::from(a) % ADJECTIVES.len()],
        SURNAMES[usize::from(b) % SURNAMES.len()],
        u16::from_be_bytes(random_bytes::<2>()?)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_grammar() {
        for good in ["web", "a1", "my_app.v2-blue"] {
            assert!(check(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-web", "_web", "we b", "web/1", "wéb"] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
