//! The lab: the folder and the shell in which the book's console sessions
//! are typed. `just shell` opens one for a learner (`ferry-lab shell`), and
//! the book's tests replay every transcript in one, both through `Lab`, so
//! that what the book shows is what `just shell` gives.
//!
//! A lab is a fresh folder holding `rootfs`, a copy of the workshop rootfs
//! (steps 01 and 02 write straight into the rootfs they are given, so a
//! learner's experiments must not land in the shared one), a shell with the
//! step binaries on PATH, and FERRY_ROOT and FERRY_CGROUP_PARENT pointing
//! at a folder and a cgroup of the lab's own. Dropping the lab removes them.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cgroup;
use crate::scratch::Scratch;
use crate::{rootfs, target_dir};

/// bash, started without the learner's rc files: those may change PATH or
/// alias commands, and the sessions would then differ from the book's.
const SHELL: [&str; 3] = ["/bin/bash", "--norc", "--noprofile"];

/// What an interactive lab shell shows before each command: the book's
/// `# `, and a reminder of where one is.
const PROMPT: &str = "(ferry lab) # ";

pub struct Lab {
    // Dropped first: it ends what containers are left in the lab's cgroups
    // before the folder they run in goes.
    cgroups: cgroup::Parent,
    folder: Scratch,
}

impl Lab {
    /// A new lab, with its own copy of the workshop rootfs (`just rootfs`).
    pub fn new() -> Result<Self> {
        let folder = Scratch::new("lab")?;
        rootfs::copy(&rootfs::built()?, &folder.join("rootfs"))?;
        Ok(Self {
            cgroups: cgroup::Parent::new(),
            folder,
        })
    }

    /// The lab folder, the shell's working directory.
    pub fn path(&self) -> &Path {
        self.folder.path()
    }

    /// The lab's shell: in the lab folder, with the lab's environment and
    /// nothing else of the caller's. Add `-c SCRIPT` to run a script.
    pub fn shell(&self) -> Command {
        let mut shell = Command::new(SHELL[0]);
        shell
            .args(&SHELL[1..])
            .env_clear()
            .envs(self.environment())
            .current_dir(self.path());
        shell
    }

    /// The same shell, started through `prefix` (`nsenter --net=… --`).
    pub fn shell_through(&self, prefix: &[OsString]) -> Command {
        let mut shell = Command::new(&prefix[0]);
        shell
            .args(&prefix[1..])
            .args(SHELL)
            .env_clear()
            .envs(self.environment())
            .current_dir(self.path());
        shell
    }

    fn environment(&self) -> Vec<(&'static str, OsString)> {
        let path = format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            target_dir().join("debug").display()
        );
        let mut environment = vec![
            ("PATH", path.into()),
            ("HOME", "/root".into()),
            // The book's outputs are the C locale's: ASCII quotes in error
            // messages, byte order in listings.
            ("LANG", "C".into()),
            // From step 03 the runtime keeps container state under
            // $FERRY_ROOT: the lab's own folder, never /var/lib/ferry.
            ("FERRY_ROOT", self.folder.join("state").into()),
            // From step 04, the cgroup parent: the lab's own, removed with it.
            ("FERRY_CGROUP_PARENT", self.cgroups.name.clone().into()),
            ("PS1", PROMPT.into()),
        ];
        // The terminal's kind belongs to the terminal, not to the lab: keep it
        // so that editors and `top` in a container can draw.
        if let Some(term) = std::env::var_os("TERM") {
            environment.push(("TERM", term));
        }
        environment
    }
}
