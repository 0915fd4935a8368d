//! Content digests: `sha256:` and 64 lowercase hex digits, the SHA-256 of
//! a blob's bytes. A digest names content, so content fetched by its digest
//! can be checked: hash what arrived and compare.
//!
//! A digest from a registry is input like any other. containers/image
//! (CVE-2024-3727) built file paths from digests it had not checked, and a
//! manifest naming `sha256:../../x` wrote outside its store. Here a digest
//! exists only once its form is checked, so every path made from one is
//! safe.

use std::fmt;
use std::io::{self, Read};

use anyhow::{Result, bail, ensure};
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    // ANCHOR: parse
    pub fn parse(text: &str) -> Result<Self> {
        let Some(hex) = text.strip_prefix("sha256:") else {
            match text.split_once(':') {
                Some((algorithm, _)) if !algorithm.is_empty() => {
                    bail!("digest {text:?}: only sha256 digests are supported")
                }
                _ => bail!("invalid digest {text:?}: expected sha256:<64 hex digits>"),
            }
        };
        ensure!(
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "invalid digest {text:?}: expected sha256:<64 lowercase hex digits>"
        );
        Ok(Self(text.to_owned()))
    }
    // ANCHOR_END: parse

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(format!("sha256:{}", hex(&Sha256::digest(bytes))))
    }

    /// The 64 hex digits: safe as a file name.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The first 12 hex digits, as Docker shows ids.
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ANCHOR: verifier
/// A reader that hashes what passes through it and refuses to pass more
/// than `limit` bytes: a registry that sends more than the descriptor's
/// size is sending something else.
pub struct Verifier<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    limit: u64,
    what: &'static str,
}

impl<R: Read> Verifier<R> {
    pub fn new(inner: R, limit: u64, what: &'static str) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            read: 0,
            limit,
            what,
        }
    }

    /// Reads to the end (what a consumer left unread still counts), then
    /// checks the digest.
    pub fn finish(mut self, expected: &Digest) -> Result<u64> {
        io::copy(&mut self, &mut io::sink())?;
        // ANCHOR: lab06-4-verify Check what arrived: the SHA-256 of every byte read must be the digest that named it, or the blob is refused (Verifier::finish) [06-registry-pull.md#digests-name-content]
        let got = Digest(format!("sha256:{}", hex(&self.hasher.finalize())));
        ensure!(
            got == *expected,
            "{} {expected}: the content's digest is {got}: corrupted or tampered with",
            self.what
        );
        // ANCHOR_END: lab06-4-verify instead:
        Ok(self.read)
    }
}

impl<R: Read> Read for Verifier<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is enough to know it is too much.
        let room = self
            .limit
            .saturating_sub(self.read)
            .saturating_add(1)
            .min(buf.len() as u64);
        let n = self.inner.read(&mut buf[..room as usize])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(format!(
                "{} is larger than {} bytes",
                self.what, self.limit
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
// ANCHOR_END: verifier

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_sha256_digests_exist() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good).is_ok());
        for bad in [
            "sha256:../../x".to_owned(),
            "sha256:short".to_owned(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha512:{}", "a".repeat(128)),
            format!("sha256:{}/", "a".repeat(63)),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_verifier_checks_digest_and_size() {
        let digest = Digest::of(b"hello");
        let verifier = Verifier::new(&b"hello"[..], 5, "blob");
        assert_eq!(verifier.finish(&digest).unwrap(), 5);
        let verifier = Verifier::new(&b"hellO"[..], 5, "blob");
        assert!(verifier.finish(&digest).is_err());
        let verifier = Verifier::new(&b"hello!"[..], 5, "blob");
        assert!(verifier.finish(&digest).is_err());
    }
}
