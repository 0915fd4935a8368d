//! The workshop root filesystem: Debian's static busybox, a link for each of
//! its applets, a few files in /etc, and the lab programs. Built from what is
//! installed on this machine: no internet, no Docker.

use std::fs::{self, File};
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, Flock, FlockArg, RenameFlags, renameat2};

use crate::target_dir;

/// Where `just rootfs` builds it, and where tests and `just run-step` find it.
pub fn default_path() -> PathBuf {
    target_dir().join("ferry").join("rootfs")
}

/// The workshop rootfs, which must have been built (`just rootfs`).
pub fn built() -> Result<PathBuf> {
    built_at(&default_path())
}

fn built_at(path: &Path) -> Result<PathBuf> {
    ensure!(
        path.join("bin/busybox").exists() && path.join("bin/breakout").exists(),
        "no workshop rootfs at {}: build it with `just rootfs`",
        path.display()
    );
    Ok(path.to_path_buf())
}

pub(crate) const BUSYBOX: &str = "/bin/busybox";

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

/// What became of the rootfs at `dest` in `build_if_stale`.
#[derive(Debug, PartialEq, Eq)]
pub enum Build {
    /// It was built from the same inputs already.
    Fresh,
    /// It was built; `replaced` is where the tree it replaced now is.
    Done { replaced: Option<PathBuf> },
}

/// Builds the rootfs at `dest` unless the one there was built from the same
/// inputs: /bin/busybox, the `programs`, and this file (the builder's code).
pub fn build_if_stale(dest: &Path, programs: &[PathBuf]) -> Result<Build> {
    let folder = dest.parent().context("the rootfs has a parent folder")?;
    fs::create_dir_all(folder).with_context(|| format!("create {}", folder.display()))?;
    // Two terminals that start `just run-step` at once build it once: the
    // second waits here, then finds it fresh.
    let _lock = lock(&dest.with_extension("lock"))?;
    let stamp_path = dest.with_extension("stamp");
    let stamp = stamp(programs)?;
    let built = built_at(dest).is_ok();
    if built && fs::read_to_string(&stamp_path).is_ok_and(|old| old == stamp) {
        return Ok(Build::Fresh);
    }
    let replaced = build(dest, programs)?;
    // The stamp is written after the tree is in place: a crash in between
    // leaves an old stamp, which only costs a rebuild next time.
    let staged = stamp_path.with_extension("stamp.new");
    fs::write(&staged, stamp).with_context(|| format!("write {}", staged.display()))?;
    fs::rename(&staged, &stamp_path).with_context(|| format!("write {}", stamp_path.display()))?;
    Ok(Build::Done { replaced })
}

/// An exclusive lock on `path`, held until the value is dropped.
fn lock(path: &Path) -> Result<Flock<File>> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("lock {}", path.display()))
}

/// A summary of everything the rootfs is made from, one input a line, so
/// that a changed input means a changed stamp. (DefaultHasher may hash
/// differently after a Rust upgrade: that costs one rebuild, no more.)
fn stamp(programs: &[PathBuf]) -> Result<String> {
    let hash = |bytes: &[u8]| {
        let mut hasher = DefaultHasher::new();
        hasher.write(bytes);
        format!("{:016x}", hasher.finish())
    };
    let mut stamp = format!("builder {}\n", hash(include_str!("rootfs.rs").as_bytes()));
    for input in std::iter::once(Path::new(BUSYBOX)).chain(programs.iter().map(PathBuf::as_path)) {
        let bytes = fs::read(input).with_context(|| format!("read {}", input.display()))?;
        stamp.push_str(&format!("{} {}\n", input.display(), hash(&bytes)));
    }
    Ok(stamp)
}

/// Builds the rootfs beside `dest` and swaps it in; returns where the tree
/// it replaced is now. `programs` are static binaries to copy into /bin
/// (the chroot breakout, for one).
///
/// The old tree is renamed, never deleted: containers started by
/// `just run-step` may run on it, and a running container whose files
/// vanish loses its /bin under the learner's hands. A renamed tree is still
/// theirs: the kernel holds a chroot, or an overlay's lower layer, by the
/// directory, not by its name. Whether any container still uses an old
/// tree cannot be told reliably from outside (an overlay names its lower
/// layer by the path it was given, which is the new tree's now), so it is
/// left for the learner, or `cargo clean`, to remove: a few megabytes, once
/// per change of busybox, the breakout or this builder.
fn build(dest: &Path, programs: &[PathBuf]) -> Result<Option<PathBuf>> {
    let staging = dest.with_extension(format!("new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    if let Err(error) = fill(&staging, programs) {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    swap_in(&staging, dest)
}

/// Moves `staging` to `dest` in one step, so that a container starting
/// meanwhile finds either the old tree or the new one, never none.
fn swap_in(staging: &Path, dest: &Path) -> Result<Option<PathBuf>> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let old = dest.with_extension(format!("old-{nanos}"));
    let exchanged = renameat2(
        AT_FDCWD,
        staging,
        AT_FDCWD,
        dest,
        RenameFlags::RENAME_EXCHANGE,
    );
    let moved = match exchanged {
        // `staging` now names the old tree.
        Ok(()) => fs::rename(staging, &old).map(|()| Some(old.clone())),
        Err(Errno::ENOENT) => fs::rename(staging, dest).map(|()| None),
        // A filesystem that cannot exchange (some network and shared
        // folders): two renames, and a moment without a rootfs.
        Err(Errno::EINVAL) => fs::rename(dest, &old)
            .and_then(|()| fs::rename(staging, dest))
            .map(|()| Some(old.clone())),
        Err(errno) => Err(errno.into()),
    };
    moved.with_context(|| {
        format!(
            "move the new rootfs {} into {} and the old one to {}",
            staging.display(),
            dest.display(),
            old.display()
        )
    })
}

/// Writes the rootfs's files into `staging`, a folder that does not exist yet.
fn fill(staging: &Path, programs: &[PathBuf]) -> Result<()> {
    let busybox = fs::read(BUSYBOX).with_context(|| {
        format!("read {BUSYBOX}: install it with `apt-get install busybox-static`")
    })?;
    ensure!(
        is_static(&busybox),
        "{BUSYBOX} is linked dynamically and would not run inside a bare rootfs: \
         `apt-get install busybox-static` replaces it with the static build"
    );
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
        link_applet(staging, &applet)?;
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
    Ok(())
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
pub(crate) fn is_static(elf: &[u8]) -> bool {
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
