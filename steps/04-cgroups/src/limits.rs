//! Resource limits as `docker run` spells them: `--memory 64m`,
//! `--cpus 0.5`, `--pids-limit 100`.

use clap::Args;

// `allow_hyphen_values`: "-1" is a bad value for the option, not an
// unknown flag, and the error should say which option it was given to.
// ANCHOR: limits
#[derive(Debug, Clone, Default, Args)]
pub struct Limits {
    /// Memory limit: bytes, or a number with b, k, m or g (64m, 1g)
    #[arg(long, value_name = "SIZE", value_parser = parse_memory, allow_hyphen_values = true)]
    pub memory: Option<u64>,

    /// CPU limit, in CPUs: 0.5 is half of one CPU's time
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus, allow_hyphen_values = true)]
    pub cpus: Option<f64>,

    /// The most processes (and threads) the container may have at once
    #[arg(long, value_name = "N", value_parser = parse_pids, allow_hyphen_values = true)]
    pub pids_limit: Option<u64>,
}
// ANCHOR_END: limits

/// Docker's minimum: below it a container hardly starts.
const MIN_MEMORY: u64 = 6 << 20;

fn parse_memory(text: &str) -> Result<u64, String> {
    let bad =
        || format!("expected bytes, or a number with b, k, m or g (such as 64m), not {text:?}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return Err(bad()),
    };
    let bytes = number
        .parse::<u64>()
        .map_err(|_| bad())?
        .checked_mul(1 << shift)
        .ok_or_else(bad)?;
    if bytes < MIN_MEMORY {
        return Err(format!("{text} is below the minimum of 6m"));
    }
    Ok(bytes)
}

fn parse_cpus(text: &str) -> Result<f64, String> {
    let cpus: f64 = text
        .parse()
        .map_err(|_| format!("expected a number of CPUs (such as 0.5), not {text:?}"))?;
    let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .unwrap_or(1) as f64;
    // The kernel's smallest CPU quota is 1 ms per 100 ms period.
    if !(0.01..=online).contains(&cpus) {
        return Err(format!(
            "{text} is outside 0.01 to {online}, the CPUs this machine has"
        ));
    }
    Ok(cpus)
}

fn parse_pids(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of processes, at least 1, not {text:?}"
        )),
    }
}

/// A memory size as a person reads it: "64 MiB", or bytes.
pub fn show_bytes(bytes: u64) -> String {
    match bytes {
        b if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}
