//! The workshop root filesystem: Debian's static busybox, a link for each of
//! its applets, a few files in /etc, and the lab programs. Built from what is
//! installed on this machine: no internet, no Docker.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::target_dir;

/// Where `just rootfs` builds it, and where tests and `just run-step` find it.
pub fn default_path() -> PathBuf {
    target_dir().join("ferry").join("rootfs")
}

/// The workshop rootfs, which must have been built (`just rootfs`).
pub fn built() -> Result<PathBuf> {
    let path = default_path();
    ensure!(
        path.join("bin/busybox").exists() && path.join("bin/breakout").exists(),
        "no workshop rootfs at {}: build it with `just rootfs`",
        path.display()
    );
    Ok(path)
}

const BUSYBOX: &str = "/bin/busybox";

const DIRECTORIES: [&str; 13] = [
    "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "proc", "sys", "dev", "tmp",
    "var", "run",
];

const FILES: [(&str, &str); 4] = [
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    (
        "etc/os-release",
        "NAME=\"ferry workshop rootfs\"\nPRETTY_NAME=\"ferry workshop rootfs (busybox)\"\nID=ferry\n",
    ),
    ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
];

/// Builds the rootfs at `dest`, replacing what was there. `programs` are
/// static binaries to copy into /bin (the chroot breakout, for one).
pub fn build(dest: &Path, programs: &[PathBuf]) -> Result<()> {
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("read {BUSYBOX}: install it with `apt-get install busybox-static`")
    })?;
    ensure!(
        is_static(&busybox),
        "{BUSYBOX} is linked dynamically and would not run inside a bare rootfs: \
         `apt-get install busybox-static` replaces it with the static build"
    );
    let staging = dest.with_extension(format!("new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    for dir in DIRECTORIES {
        fs::create_dir_all(staging.join(dir)).with_context(|| format!("create {dir}"))?;
    }
    fs::set_permissions(staging.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(staging.join("bin/busybox"), &busybox)?;
    fs::set_permissions(
        staging.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )?;
    for applet in applets()? {
        link_applet(&staging, &applet)?;
    }
    for (path, text) in FILES {
        fs::write(staging.join(path), text).with_context(|| format!("write {path}"))?;
    }
    for program in programs {
        let bytes = fs::read(program).with_context(|| format!("read {}", program.display()))?;
        ensure!(
            is_static(&bytes),
            "{} must be linked statically to run in the rootfs",
            program.display()
        );
        let name = program.file_name().context("program has a file name")?;
        let inside = staging.join("bin").join(name);
        fs::write(&inside, bytes)?;
        fs::set_permissions(&inside, fs::Permissions::from_mode(0o755))?;
    }
    if dest.exists() {
        fs::remove_dir_all(dest).with_context(|| format!("remove the old {}", dest.display()))?;
    }
    fs::rename(&staging, dest).with_context(|| format!("move the rootfs into {}", dest.display()))
}

/// Copies a rootfs with everything kept (links, modes, owners): `cp -a`.
pub fn copy(from: &Path, to: &Path) -> Result<()> {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .context("run cp")?;
    ensure!(
        out.status.success(),
        "copy the rootfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every applet's full path, as busybox lists them: `bin/sh`, `usr/bin/env`…
fn applets() -> Result<Vec<String>> {
    let out = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .context("run busybox --list-full")?;
    if !out.status.success() {
        bail!(
            "busybox --list-full failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect())
}

/// A relative link, so the rootfs reads the same from the host as from inside.
fn link_applet(root: &Path, applet: &str) -> Result<()> {
    // linuxrc is the applet for booting from an initrd; at the top of the
    // tree it would only puzzle a reader of `ls /`.
    if applet == "bin/busybox" || applet == "linuxrc" {
        return Ok(());
    }
    let depth = applet.matches('/').count();
    let target = format!("{}bin/busybox", "../".repeat(depth));
    let path = root.join(applet);
    fs::create_dir_all(path.parent().expect("applet has a folder"))?;
    symlink(&target, &path).with_context(|| format!("link {applet}"))
}

/// Whether an x86-64/aarch64 ELF file has no program interpreter (PT_INTERP),
/// that is, whether the kernel can run it without a dynamic loader.
fn is_static(elf: &[u8]) -> bool {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    const PT_INTERP: u32 = 3;
    if !elf.starts_with(b"\x7fELF\x02\x01") {
        return false; // only 64-bit little-endian ELF is expected here
    }
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..count).all(|i| u32_at(phoff + i * size).is_some_and(|kind| kind != PT_INTERP))
}
