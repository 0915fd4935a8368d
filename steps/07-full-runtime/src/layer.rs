//! Unpacking a layer: a tar stream from a registry, written into a fresh
//! directory of its own that overlayfs will stack with the image's other
//! layers.
//!
//! A layer is hostile input. Its entry names are just bytes: `../../etc/x`,
//! `/etc/x`, or `link/x` after an entry that made `link` a symlink to `/`.
//! A tool that writes entries with ordinary path calls follows them out of
//! the layer and onto the host (CVE-2014-6407, containerd CVE-2021-32760,
//! umoci CVE-2021-29136, tar-rs RUSTSEC-2018-0002). So here no path is ever
//! handed to the kernel whole: each entry's parent directory is opened one
//! component at a time from the layer's own directory, with O_NOFOLLOW, and
//! only the last name is created, relative to that directory's descriptor
//! (openat, mkdirat, symlinkat…). A symlink anywhere on the way is an error,
//! not a path to follow; `..` and absolute names are refused outright.
//!
//! Whiteouts are how a layer deletes what the layers below it hold. In the
//! tar they are empty files: `.wh.NAME` hides NAME, and `.wh..wh..opq` in a
//! directory hides everything the lower layers have in that directory.
//! overlayfs has its own marks for the same two things, and those are what
//! get written: a character device 0/0 named NAME, and the xattr
//! `trusted.overlay.opaque=y` on the directory.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstatat, makedev, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Counts what was unpacked, for `images`.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub bytes: u64,
}

// ANCHOR: apply
/// Writes the layer's entries into `dest`, an empty directory.
pub fn apply(tar: impl Read, dest: &Path) -> Result<Unpacked> {
    let root = open_dir(dest)?;
    let mut archive = tar::Archive::new(tar);
    let mut unpacked = Unpacked::default();
    for entry in archive.entries().context("read the layer's tar")? {
        let mut entry = entry.context("read the layer's tar")?;
        let name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&name).into_owned();
        apply_entry(&root, &name, &mut entry, &mut unpacked)
            .with_context(|| format!("layer entry {shown:?}"))?;
    }
    Ok(unpacked)
}
// ANCHOR_END: apply

fn apply_entry(
    root: &OwnedFd,
    name: &[u8],
    entry: &mut tar::Entry<impl Read>,
    unpacked: &mut Unpacked,
) -> Result<()> {
    let kind = entry.header().entry_type();
    let path = components(name)?;
    let Some((last, parents)) = path.split_last() else {
        // The layer's own top directory, `./`. Anything but a directory
        // there would replace the layer's root (umoci CVE-2021-29136: a
        // `.` that is a symlink sent later layers onto the host).
        ensure!(kind.is_dir(), "the layer's root entry is not a directory");
        return Ok(());
    };
    let parent = open_parents(root, parents)?;
    // ANCHOR: whiteouts
    // ANCHOR: lab06-7-whiteouts Turn whiteouts into overlayfs's marks: .wh..wh..opq sets trusted.overlay.opaque=y on its directory; .wh.NAME becomes a 0/0 character device NAME [06-registry-pull.md#whiteouts]
    if *last == OPAQUE {
        return set_xattr(&parent, "trusted.overlay.opaque", b"y");
    }
    if let Some(hidden) = last.strip_prefix(WHITEOUT) {
        // `.wh..wh.*` names other than the opaque mark are aufs's
        // bookkeeping, with nothing to hide.
        if hidden.starts_with(WHITEOUT) {
            return Ok(());
        }
        ensure!(
            !hidden.is_empty() && hidden != b"." && hidden != b"..",
            "a whiteout that names no file"
        );
        remove_existing(&parent, hidden)?;
        return mknodat(
            &parent,
            hidden,
            SFlag::S_IFCHR,
            Mode::empty(),
            makedev(0, 0),
        )
        .context("make the whiteout (a 0/0 character device)");
    }
    // ANCHOR_END: lab06-7-whiteouts instead:
    // ANCHOR_END: whiteouts
    let header = entry.header().clone();
    let mode = Mode::from_bits_truncate(header.mode().context("its mode")? & 0o7777);
    let uid = Uid::from_raw(header.uid().context("its uid")? as u32);
    let gid = Gid::from_raw(header.gid().context("its gid")? as u32);
    let name = *last;
    // What an earlier entry put here gives way, except a directory to a
    // directory: tar's own rule, and how later entries update a directory.
    if kind.is_dir() && is_dir(&parent, name) {
        chown_and_chmod(&parent, name, uid, gid, mode)?;
        return Ok(());
    }
    remove_existing(&parent, name)?;
    match kind {
        EntryType::Directory => {
            mkdirat(&parent, name, Mode::from_bits_truncate(0o700)).context("mkdir")?;
            chown_and_chmod(&parent, name, uid, gid, mode)?;
        }
        EntryType::Regular | EntryType::Continuous => {
            let file = openat(
                &parent,
                name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .context("create")?;
            let mut file = std::fs::File::from(file);
            unpacked.bytes += io::copy(entry, &mut file).context("write")?;
            // chown before chmod: chown clears the setuid and setgid bits.
            fchown(&file, Some(uid), Some(gid)).context("chown")?;
            nix::sys::stat::fchmod(&file, mode).context("chmod")?;
            let mtime = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
            nix::sys::stat::futimens(&file, &mtime, &mtime).context("set its times")?;
        }
        EntryType::Symlink => {
            // The target is not resolved here: it means a path in the
            // container, and the kernel resolves it there, inside its root.
            let target = entry
                .link_name_bytes()
                .context("a symlink without a target")?;
            symlinkat(OsStr::from_bytes(&target), &parent, name).context("symlink")?;
            fchownat(
                &parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .context("chown")?;
        }
        EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .context("a hardlink without a target")?;
            let target_components = components(&target)
                .with_context(|| format!("its target {:?}", String::from_utf8_lossy(&target)))?;
            let Some((target_name, target_parents)) = target_components.split_last() else {
                bail!("a hardlink to the layer's root");
            };
            let target_dir = walk(root, target_parents, false).with_context(|| {
                format!(
                    "hardlink to {:?}, which this layer has not written",
                    String::from_utf8_lossy(&target)
                )
            })?;
            // No AT_SYMLINK_FOLLOW: a link to a symlink is a second name
            // for the symlink, never for what it points at.
            linkat(&target_dir, *target_name, &parent, name, AtFlags::empty()).with_context(
                || {
                    format!(
                        "hardlink to {:?}, which this layer has not written",
                        String::from_utf8_lossy(&target)
                    )
                },
            )?;
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            // Device nodes stay, as Docker keeps them when it runs as root:
            // they are made inside the layer, and the container's device
            // cgroup, not their absence, is what guards the devices.
            let kind = match kind {
                EntryType::Char => SFlag::S_IFCHR,
                EntryType::Block => SFlag::S_IFBLK,
                _ => SFlag::S_IFIFO,
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            mknodat(
                &parent,
                name,
                kind,
                Mode::from_bits_truncate(0o600),
                makedev(major.into(), minor.into()),
            )
            .context("mknod")?;
            chown_and_chmod(&parent, name, uid, gid, mode)?;
        }
        other => bail!("unsupported tar entry type {other:?}"),
    }
    Ok(())
}

// ANCHOR: components
/// The entry's name as components, checked: not absolute, no `..`.
/// `./a//b/` is `a`, `b`.
fn components(name: &[u8]) -> Result<Vec<&[u8]>> {
    // ANCHOR: lab06-5-names Check an entry's name before it is used: refuse an absolute name and any '..' component (components) [06-registry-pull.md#what-goes-wrong-hostile-layers]
    ensure!(!name.is_empty(), "an entry with an empty name");
    ensure!(!name.contains(&0), "a name with a NUL byte");
    ensure!(
        !name.starts_with(b"/"),
        "an absolute path: a layer's names are relative to the layer"
    );
    let mut components = Vec::new();
    for component in name.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => bail!("a path with '..', which would lead out of the layer"),
            _ => components.push(component),
        }
    }
    Ok(components)
    // ANCHOR_END: lab06-5-names instead: Ok(name.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".").collect())
}
// ANCHOR_END: components

fn open_dir(path: &Path) -> Result<OwnedFd> {
    openat(
        nix::fcntl::AT_FDCWD,
        path,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("open {}", path.display()))
}

/// The entry's parent directory, created where missing (a tar need not
/// list every directory before what is in it).
fn open_parents(root: &OwnedFd, parents: &[&[u8]]) -> Result<OwnedFd> {
    walk(root, parents, true)
}

// ANCHOR: walk
/// Opens `components` one by one from `root`. O_NOFOLLOW makes a symlink on
/// the way an error (ELOOP, or ENOTDIR with O_DIRECTORY) instead of a
/// direction: a path in a layer never leaves the layer.
fn walk(root: &OwnedFd, components: &[&[u8]], create: bool) -> Result<OwnedFd> {
    // ANCHOR: lab06-6-nofollow Open each parent directory without following a symlink: O_NOFOLLOW, so that a symlink on the way is an error (walk) [06-registry-pull.md#what-goes-wrong-hostile-layers]
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // ANCHOR_END: lab06-6-nofollow instead: let flags = OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = root.try_clone().context("dup the layer's directory")?;
    for (i, component) in components.iter().enumerate() {
        let open = || openat(&dir, *component, flags, Mode::empty());
        let next = match open() {
            Err(Errno::ENOENT) if create => {
                mkdirat(&dir, *component, Mode::from_bits_truncate(0o755))
                    .context("create a parent directory")?;
                open()
            }
            other => other,
        };
        dir = next.map_err(|errno| {
            let path = components[..=i].join(&b'/');
            let path = String::from_utf8_lossy(&path);
            match errno {
                Errno::ELOOP | Errno::ENOTDIR => anyhow::anyhow!(
                    "{path} is a symlink or a file, not a directory: nothing is written through it"
                ),
                errno => anyhow::Error::new(errno).context(format!("open {path}")),
            }
        })?;
    }
    Ok(dir)
}
// ANCHOR_END: walk

fn is_dir(dir: &OwnedFd, name: &[u8]) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// Removes what is at `name` in `dir`, a whole tree if it is a directory.
fn remove_existing(dir: &OwnedFd, name: &[u8]) -> Result<()> {
    let stat = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(()),
        other => other.context("stat what is there already")?,
    };
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).context("remove what was there");
    }
    let child = walk(dir, &[name], false)?;
    let mut listing = nix::dir::Dir::from_fd(child.try_clone()?).context("list a directory")?;
    let names: Vec<Vec<u8>> = listing
        .iter()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for inner in &names {
        remove_existing(&child, inner)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir).context("remove what was there")
}

fn chown_and_chmod(dir: &OwnedFd, name: &[u8], uid: Uid, gid: Gid, mode: Mode) -> Result<()> {
    fchownat(
        dir,
        name,
        Some(uid),
        Some(gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .context("chown")?;
    // `name` was just made by us, in a directory only we write: not a
    // symlink, so following it changes nothing.
    fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink).context("chmod")
}

fn set_xattr(dir: &OwnedFd, key: &str, value: &[u8]) -> Result<()> {
    let key = CString::new(key).expect("no NUL");
    // SAFETY: fsetxattr reads `key` (NUL-terminated) and `value.len()`
    // bytes of `value`, both alive for the call, on a descriptor we own.
    let result = unsafe {
        libc::fsetxattr(
            dir.as_fd().as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(result).map(drop).with_context(|| {
        format!(
            "set {} on the directory (the filesystem under --root must keep trusted xattrs)",
            key.to_string_lossy()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_split() {
        assert_eq!(components(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert!(components(b"").is_err());
    }
}
