//! Resource limits as `docker run` spells them: `--memory 64m`,
//! `--cpus 0.5`, `--pids-limit 100`, each read the way Docker reads it.
//! `0` means no limit for all three, and so does a negative --pids-limit.

use clap::Args;

// Each field is `None` when there is no limit: given as 0, or left out.
// The type is spelled `std::option::Option` because clap takes a plain
// `Option<T>` to mean "may be left out" and wants a T from the parser;
// spelled out, the field is whatever the parser returns, and a left-out
// option is parsed from its default, "0".
// `allow_hyphen_values`: "-1" is a value for the option, not an unknown flag.
// ANCHOR: limits
#[derive(Debug, Clone, Default, Args)]
pub struct Limits {
    /// Memory limit: bytes, or a number with k, m, g, t or p (64m, 1.5g); 0 is none
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = parse_memory, allow_hyphen_values = true)]
    pub memory: std::option::Option<u64>,

    /// CPU limit, in CPUs: 0.5 is half of one CPU's time; 0 is none
    #[arg(long, value_name = "CPUS", default_value = "0", value_parser = parse_cpus, allow_hyphen_values = true)]
    pub cpus: std::option::Option<NanoCpus>,

    /// The most processes (and threads) the container may have at once; 0 or less is none
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_pids, allow_hyphen_values = true)]
    pub pids_limit: std::option::Option<u64>,
}
// ANCHOR_END: limits

// ANCHOR: cpus
/// A CPU limit in billionths of a CPU, as Docker keeps it (its NanoCPUs):
/// `--cpus 0.5` is 500 000 000, exactly, with no floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NanoCpus(pub u64);

const NANOS_PER_CPU: u64 = 1_000_000_000;
/// The CPU period, in microseconds: `--cpus 0.5` is 50 ms of every 100 ms.
pub const CPU_PERIOD: u64 = 100_000;

impl NanoCpus {
    /// The CPU time allowed per CPU_PERIOD, in microseconds, rounded down
    /// as Docker derives it from NanoCPUs.
    pub fn quota(self) -> u64 {
        self.0 * CPU_PERIOD / NANOS_PER_CPU
    }
}
// ANCHOR_END: cpus

/// Docker's minimum: below it a container hardly starts.
const MIN_MEMORY: u64 = 6 << 20;
/// The kernel's smallest CPU quota is 1 ms per period: 0.01 CPU here.
/// (Docker passes smaller values on, and the kernel refuses them at start.)
const MIN_NANOCPUS: u64 = NANOS_PER_CPU / 100;
/// The largest pids.max the kernel takes: PID_MAX_LIMIT, 4 Mi on 64-bit.
const MAX_PIDS: i64 = 4 << 20;

/// go-units' RAMInBytes, which Docker uses: a decimal number, then at most
/// one space, then a unit in any case: none or b for bytes; k, m, g, t or p,
/// alone or followed by b or ib, for powers of 1024. Rounded down to a byte.
fn parse_memory(text: &str) -> Result<Option<u64>, String> {
    let bad = || {
        format!(
            "expected bytes, or a number with k, m, g, t or p (such as 64m or 1.5g), not {text:?}"
        )
    };
    let end = text
        .rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(end + 1);
    let number = number.strip_suffix(' ').unwrap_or(number);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(bad()),
    };
    let (bytes, _) = scaled(number, 1 << shift).ok_or_else(bad)?;
    match bytes {
        0 => Ok(None),
        // Docker's words.
        b if b < MIN_MEMORY => Err("Minimum memory limit allowed is 6MB".to_owned()),
        b if b > i64::MAX as u64 => Err(format!("{text} is more than the kernel can count")),
        b => Ok(Some(b)),
    }
}

/// Docker's NanoCPUs: the decimal exactly, in billionths; a tenth decimal
/// that is not 0 is refused, not rounded. At most the CPUs that are online.
fn parse_cpus(text: &str) -> Result<Option<NanoCpus>, String> {
    let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1) as u64;
    let range = || {
        format!(
            "range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available"
        )
    };
    // Docker reads "-1" as a number, then finds it out of range.
    let (negative, number) = match text.strip_prefix('-') {
        Some(number) => (true, number),
        None => (false, text),
    };
    let (nanos, inexact) = scaled(number, NANOS_PER_CPU)
        .ok_or_else(|| format!("expected a number of CPUs (such as 0.5), not {text:?}"))?;
    if inexact {
        return Err("value is too precise: a billionth of a CPU is the smallest step".to_owned());
    }
    match nanos {
        0 => Ok(None),
        n if negative || n < MIN_NANOCPUS || n > online * NANOS_PER_CPU => Err(range()),
        n => Ok(Some(NanoCpus(n))),
    }
}

fn parse_pids(text: &str) -> Result<Option<u64>, String> {
    match text.parse::<i64>() {
        Ok(n) if n <= 0 => Ok(None),
        Ok(n) if n <= MAX_PIDS => Ok(Some(n as u64)),
        Ok(_) => Err(format!(
            "{text} is above {MAX_PIDS}, the most the kernel's pids controller takes"
        )),
        Err(_) => Err(format!(
            "expected a whole number of processes, not {text:?}"
        )),
    }
}

/// A decimal number as people write it ("64", "1.5", ".5", "5.") times
/// `scale`, computed exactly: the whole part of the product, and whether a
/// fraction was left over. Too large a number gives u64::MAX.
fn scaled(number: &str, scale: u64) -> Option<(u64, bool)> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return None;
    }
    let whole = whole.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    });
    // Trailing zeros change nothing. Digits past the 20th are dropped: they
    // are worth less than 10^-5 of a byte, and more than a nanoCPU's
    // precision anyway.
    let fraction = fraction.trim_end_matches('0');
    let kept = &fraction[..fraction.len().min(20)];
    let numerator = kept.parse::<u128>().unwrap_or(0) * u128::from(scale);
    let denominator = 10u128.pow(kept.len() as u32);
    let product = u128::from(whole) * u128::from(scale) + numerator / denominator;
    let inexact = numerator % denominator != 0 || kept.len() < fraction.len();
    Some((u64::try_from(product).unwrap_or(u64::MAX), inexact))
}

/// A memory size as a person reads it: "64 MiB", or bytes.
pub fn show_bytes(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}
