//! Who the command runs as: `User` from the image, or `-u`. A name means
//! the image's own /etc/passwd and /etc/group, read inside the container
//! after pivot_root: the host's files say nothing about the image's users.

use std::fs;

use anyhow::{Context, Result, bail};
use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};

pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

// ANCHOR: resolve
/// `name`, `uid`, `name:group`, `uid:gid`, in the container's files.
/// A uid that /etc/passwd lacks is still a uid (group 0, home /), as in
/// Docker; a name it lacks is an error.
pub fn resolve(spec: &str) -> Result<User> {
    // ANCHOR: lab06-10-user Find the user in the container's /etc/passwd and /etc/group: a name or a uid, then the group by name or gid, and the groups that list the user (resolve) [06-registry-pull.md#the-images-config]
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let groups = fs::read_to_string("/etc/group").unwrap_or_default();
    // name:password:uid:gid:gecos:home:shell
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 7)
        .find(|fields| {
            fields[0] == user
                || user
                    .parse::<u32>()
                    .is_ok_and(|uid| fields[2] == uid.to_string())
        });
    let (name, uid, mut gid, home) = match (entry, user.parse::<u32>()) {
        (Some(fields), _) => (
            fields[0].to_owned(),
            fields[2]
                .parse()
                .with_context(|| format!("/etc/passwd: bad uid for {}", fields[0]))?,
            fields[3]
                .parse()
                .with_context(|| format!("/etc/passwd: bad gid for {}", fields[0]))?,
            fields[5].to_owned(),
        ),
        (None, Ok(uid)) => (String::new(), uid, 0, "/".to_owned()),
        (None, Err(_)) => {
            bail!("unable to find user {user}: no matching entries in the container's /etc/passwd")
        }
    };
    // name:password:gid:member,member
    let group_entries: Vec<Vec<&str>> = groups
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 4)
        .collect();
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|fields| fields[0] == group)
                .with_context(|| format!("unable to find group {group}: no matching entries in the container's /etc/group"))?[2]
                .parse()
                .with_context(|| format!("/etc/group: bad gid for {group}"))?,
        };
    }
    // The user's other groups, as login(1) would give them.
    let mut supplementary: Vec<u32> = group_entries
        .iter()
        .filter(|fields| !name.is_empty() && fields[3].split(',').any(|member| member == name))
        .filter_map(|fields| fields[2].parse().ok())
        .collect();
    supplementary.retain(|&g| g != gid);
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home,
    })
    // ANCHOR_END: lab06-10-user instead: Ok(User { uid: 0, gid: 0, groups: Vec::new(), home: "/root".to_owned() })
}
// ANCHOR_END: resolve

// ANCHOR: become_user
/// Groups first, then the gid, then the uid: once the uid is not 0, the
/// process may no longer change the other two. The groups are set even
/// when there are none: root's own (the runtime's) must not be kept.
pub fn become_user(user: &User) -> Result<()> {
    let groups: Vec<Gid> = user.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&groups).context("setgroups")?;
    setgid(Gid::from_raw(user.gid)).with_context(|| format!("setgid {}", user.gid))?;
    setuid(Uid::from_raw(user.uid)).with_context(|| format!("setuid {}", user.uid))
}
// ANCHOR_END: become_user
