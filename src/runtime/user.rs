//! The container process's uid, gid and supplementary groups, resolved from the CRI
//! security context or the image's `USER`, through the rootfs's `/etc/passwd` and
//! `/etc/group`.
//!
//! Rules (CRI `LinuxContainerSecurityContext` comments; containerd's `WithUser`,
//! `WithUserID`, `WithUsername` and `WithAdditionalGIDs`):
//! - `run_as_username` must exist in `/etc/passwd`; uid and gid come from its entry.
//! - `run_as_user` is a uid; its gid comes from its `/etc/passwd` entry, or 0 without one.
//! - Otherwise the image `USER`: `uid`, `name`, `uid:gid`, `name:group` (either side
//!   numeric or a name); names must exist, a bare uid needs no entry.
//! - `run_as_group` overrides the gid; it is an error without a user.
//! - Supplementary groups: the primary gid first (so dropping it with `setgroups` cannot
//!   be used to escape a group-denied file, CVE-2023-25173), then under the `Merge` policy
//!   every `/etc/group` entry listing the user by name, then the requested
//!   `supplemental_groups`, without duplicates.
//!
//! Invariant: the files are read inside the rootfs only. Each path component is resolved
//! by hand: a symlink's target is interpreted as if the rootfs were `/` (an absolute
//! target restarts at the rootfs, `..` stops at it), so a hostile image cannot make
//! crius read the host's `/etc/passwd` or anything else outside its rootfs. The rootfs
//! is not yet in use by a running container, so nothing changes it between resolution
//! and the read.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::input::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use super::SpecError;

/// Linux's own limit on symlinks followed in one path lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// The identity the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Starts with `gid`.
    pub additional_gids: Vec<u32>,
}

/// Resolves the user of a container whose rootfs is `rootfs`.
pub(super) fn resolve_user(
    rootfs: &Path,
    security: &LinuxContainerSecurityContext,
    image_user: &str,
) -> Result<ResolvedUser, SpecError> {
    let has_username = !security.run_as_username.is_empty();
    if has_username && security.run_as_user.is_some() {
        return Err(SpecError::InvalidUser {
            field: "run_as_user",
            reason: "run_as_user and run_as_username are both set".into(),
        });
    }
    if security.run_as_group.is_some() && !has_username && security.run_as_user.is_none() {
        return Err(SpecError::InvalidUser {
            field: "run_as_group",
            reason: "run_as_group is set without run_as_user or run_as_username".into(),
        });
    }

    let passwd = UserDatabase::load(rootfs)?;
    let (uid, mut gid, name) = if has_username {
        passwd.user_by_name(&security.run_as_username)?
    } else if let Some(uid) = security.run_as_user {
        passwd.user_by_id(id_from_cri("run_as_user", uid)?)
    } else {
        resolve_image_user(&passwd, image_user)?
    };
    if let Some(group) = security.run_as_group {
        gid = id_from_cri("run_as_group", group)?;
    }

    let mut additional_gids = vec![gid];
    if security.supplemental_groups_policy == SupplementalGroupsPolicy::Merge {
        if let Some(name) = &name {
            additional_gids.extend(passwd.groups_listing(name));
        }
    }
    for &group in &security.supplemental_groups {
        additional_gids.push(id_from_cri("supplemental_groups", group)?);
    }
    let mut seen = HashSet::new();
    additional_gids.retain(|g| seen.insert(*g));

    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// The image's `USER` string: `user[:group]`, each side numeric or a name.
fn resolve_image_user(
    passwd: &UserDatabase,
    image_user: &str,
) -> Result<(u32, u32, Option<String>), SpecError> {
    let (user, group) = match image_user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (image_user, None),
    };
    let (uid, gid, name) = if user.is_empty() {
        passwd.user_by_id(0)
    } else if let Ok(uid) = user.parse::<u32>() {
        passwd.user_by_id(uid)
    } else {
        passwd.user_by_name(user)?
    };
    let gid = match group {
        None | Some("") => gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => passwd.group_by_name(group)?,
        },
    };
    Ok((uid, gid, name))
}

/// A CRI int64 ID as a Linux uid/gid.
fn id_from_cri(field: &'static str, value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| SpecError::InvalidUser {
        field,
        reason: format!("{value} is not a valid Linux ID"),
    })
}

/// One `/etc/passwd` line: `name:password:uid:gid:gecos:home:shell`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One `/etc/group` line: `name:password:gid:member,member`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The rootfs's users and groups. Missing files count as empty, as in runc and
/// containerd (minimal images often have neither).
struct UserDatabase {
    rootfs: PathBuf,
    users: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

impl UserDatabase {
    fn load(rootfs: &Path) -> Result<Self, SpecError> {
        let passwd = read_rootfs_file(rootfs, "/etc/passwd")?;
        let group = read_rootfs_file(rootfs, "/etc/group")?;
        Ok(Self {
            rootfs: rootfs.to_path_buf(),
            users: passwd.lines().filter_map(parse_passwd_line).collect(),
            groups: group.lines().filter_map(parse_group_line).collect(),
        })
    }

    fn user_by_name(&self, name: &str) -> Result<(u32, u32, Option<String>), SpecError> {
        self.users
            .iter()
            .find(|u| u.name == name)
            .map(|u| (u.uid, u.gid, Some(u.name.clone())))
            .ok_or_else(|| SpecError::UserNotFound {
                user: name.to_string(),
                rootfs: self.rootfs.clone(),
            })
    }

    /// A uid needs no entry; without one the gid is 0 and there is no name to look up
    /// groups by.
    fn user_by_id(&self, uid: u32) -> (u32, u32, Option<String>) {
        match self.users.iter().find(|u| u.uid == uid) {
            Some(u) => (u.uid, u.gid, Some(u.name.clone())),
            None => (uid, 0, None),
        }
    }

    fn group_by_name(&self, name: &str) -> Result<u32, SpecError> {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.gid)
            .ok_or_else(|| SpecError::GroupNotFound {
                group: name.to_string(),
                rootfs: self.rootfs.clone(),
            })
    }

    fn groups_listing<'s>(&'s self, user: &'s str) -> impl Iterator<Item = u32> + 's {
        self.groups
            .iter()
            .filter(move |g| g.members.iter().any(|m| m == user))
            .map(|g| g.gid)
    }
}

fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let mut fields = line.split(':');
    let name = fields.next().filter(|n| !n.is_empty())?;
    let _password = fields.next()?;
    let uid = fields.next()?.trim().parse().ok()?;
    let gid = fields.next()?.trim().parse().ok()?;
    Some(PasswdEntry {
        name: name.to_string(),
        uid,
        gid,
    })
}

fn parse_group_line(line: &str) -> Option<GroupEntry> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let mut fields = line.split(':');
    let name = fields.next().filter(|n| !n.is_empty())?;
    let _password = fields.next()?;
    let gid = fields.next()?.trim().parse().ok()?;
    let members = fields
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    Some(GroupEntry {
        name: name.to_string(),
        gid,
        members,
    })
}

/// Reads `path_in_container` from the rootfs; a missing file reads as empty.
fn read_rootfs_file(rootfs: &Path, path_in_container: &str) -> Result<String, SpecError> {
    let read = resolve_in_rootfs(rootfs, Path::new(path_in_container))
        .and_then(|host_path| std::fs::read(&host_path));
    match read {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SpecError::RootfsFile {
            path: rootfs.join(path_in_container.trim_start_matches('/')),
            source,
        }),
    }
}

/// The host path of `path_in_container`, following symlinks as the container would see
/// them: absolute targets restart at `rootfs`, and `..` never climbs above it. Components
/// that do not exist are appended as they are (reading the result then fails with
/// `NotFound`).
fn resolve_in_rootfs(rootfs: &Path, path_in_container: &Path) -> io::Result<PathBuf> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = components(path_in_container).collect();
    let mut symlinks_followed = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = rootfs
            .join(resolved.iter().collect::<PathBuf>())
            .join(&name);
        let is_symlink = match std::fs::symlink_metadata(&candidate) {
            Ok(meta) => meta.file_type().is_symlink(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !is_symlink {
            resolved.push(name);
            continue;
        }
        symlinks_followed += 1;
        if symlinks_followed > MAX_SYMLINKS {
            return Err(io::Error::other(format!(
                "more than {MAX_SYMLINKS} symlinks while resolving {}",
                path_in_container.display()
            )));
        }
        let target = std::fs::read_link(&candidate)?;
        if target.is_absolute() {
            resolved.clear();
        }
        for (i, part) in components(&target).enumerate() {
            pending.insert(i, part);
        }
    }
    Ok(rootfs.join(resolved.iter().collect::<PathBuf>()))
}

/// The names and `..` of a path; `/` and `.` are dropped (the walk is always relative to
/// the rootfs).
fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1::/:/usr/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
broken line without colons
";
    const GROUP: &str = "\
root:x:0:
appgrp:x:1001:
video:x:44:app,other
audio:x:29:other
staff:x:50: app
";

    fn rootfs_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
        fs::write(dir.path().join("etc/group"), group).unwrap();
        dir
    }

    fn resolve(
        rootfs: &Path,
        security: LinuxContainerSecurityContext,
        image_user: &str,
    ) -> Result<ResolvedUser, SpecError> {
        resolve_user(rootfs, &security, image_user)
    }

    #[test]
    fn empty_image_user_is_root_with_root_group() {
        let root = rootfs_with(PASSWD, GROUP);
        let user = resolve(root.path(), Default::default(), "").unwrap();
        assert_eq!(
            user,
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![0]
            }
        );
    }

    #[test]
    fn image_user_name_resolves_uid_gid_and_member_groups() {
        let root = rootfs_with(PASSWD, GROUP);
        let user = resolve(root.path(), Default::default(), "app").unwrap();
        assert_eq!(user.uid, 1000);
        assert_eq!(user.gid, 1001);
        assert_eq!(user.additional_gids, vec![1001, 44, 50]);
    }

    #[test]
    fn image_user_uid_alone_takes_gid_from_passwd() {
        let root = rootfs_with(PASSWD, GROUP);
        let user = resolve(root.path(), Default::default(), "1000").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
    }

    #[test]
    fn image_user_uid_without_entry_gets_gid_zero() {
        let root = rootfs_with(PASSWD, GROUP);
        let user = resolve(root.path(), Default::default(), "4242").unwrap();
        assert_eq!(
            user,
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
    }

    #[test]
    fn image_user_with_numeric_and_named_group() {
        let root = rootfs_with(PASSWD, GROUP);
        let user = resolve(root.path(), Default::default(), "1000:44").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 44));
        let user = resolve(root.path(), Default::default(), "app:audio").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 29));
        assert_eq!(user.additional_gids, vec![29, 44, 50]);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let root = rootfs_with(PASSWD, GROUP);
        let err = resolve(root.path(), Default::default(), "nobody-here").unwrap_err();
        assert!(matches!(&err, SpecError::UserNotFound { user, .. } if user == "nobody-here"));
        assert!(err.to_string().contains("nobody-here"), "{err}");
        let err = resolve(root.path(), Default::default(), "app:nogroup").unwrap_err();
        assert!(matches!(&err, SpecError::GroupNotFound { group, .. } if group == "nogroup"));
    }

    #[test]
    fn run_as_username_overrides_image_user() {
        let root = rootfs_with(PASSWD, GROUP);
        let security = LinuxContainerSecurityContext {
            run_as_username: "daemon".into(),
            ..Default::default()
        };
        let user = resolve(root.path(), security, "app").unwrap();
        assert_eq!((user.uid, user.gid), (1, 1));
        let security = LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..Default::default()
        };
        let err = resolve(root.path(), security, "").unwrap_err();
        assert!(matches!(&err, SpecError::UserNotFound { user, .. } if user == "ghost"));
    }

    #[test]
    fn run_as_user_group_and_supplemental_groups() {
        let root = rootfs_with(PASSWD, GROUP);
        let security = LinuxContainerSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            supplemental_groups: vec![4000, 44],
            ..Default::default()
        };
        let user = resolve(root.path(), security, "daemon").unwrap();
        assert_eq!(user.uid, 1000);
        assert_eq!(user.gid, 3000);
        assert_eq!(user.additional_gids, vec![3000, 44, 50, 4000]);
    }

    #[test]
    fn strict_policy_ignores_etc_group() {
        let root = rootfs_with(PASSWD, GROUP);
        let security = LinuxContainerSecurityContext {
            run_as_user: Some(1000),
            supplemental_groups: vec![4000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict,
            ..Default::default()
        };
        let user = resolve(root.path(), security, "").unwrap();
        assert_eq!(user.additional_gids, vec![1001, 4000]);
    }

    #[test]
    fn invalid_combinations_name_the_field() {
        let root = rootfs_with(PASSWD, GROUP);
        let group_only = LinuxContainerSecurityContext {
            run_as_group: Some(5),
            ..Default::default()
        };
        let err = resolve(root.path(), group_only, "").unwrap_err();
        assert!(err.to_string().contains("run_as_group"), "{err}");
        let both = LinuxContainerSecurityContext {
            run_as_user: Some(5),
            run_as_username: "app".into(),
            ..Default::default()
        };
        assert!(resolve(root.path(), both, "").is_err());
        let negative = LinuxContainerSecurityContext {
            run_as_user: Some(-1),
            ..Default::default()
        };
        let err = resolve(root.path(), negative, "").unwrap_err();
        assert!(err.to_string().contains("run_as_user"), "{err}");
    }

    #[test]
    fn missing_files_mean_no_entries() {
        let root = tempfile::tempdir().unwrap();
        let user = resolve(root.path(), Default::default(), "123:456").unwrap();
        assert_eq!((user.uid, user.gid), (123, 456));
        assert!(resolve(root.path(), Default::default(), "app").is_err());
    }

    #[test]
    fn absolute_symlink_resolves_inside_the_rootfs() {
        let root = rootfs_with("", GROUP);
        // Inside the rootfs /etc/passwd -> /real/passwd; on the host, /real does not
        // exist, so reading via the host's view would fail or read the wrong file.
        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        fs::create_dir_all(root.path().join("real")).unwrap();
        fs::write(root.path().join("real/passwd"), PASSWD).unwrap();
        symlink("/real/passwd", root.path().join("etc/passwd")).unwrap();
        let user = resolve(root.path(), Default::default(), "app").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
    }

    #[test]
    fn symlinks_never_escape_the_rootfs() {
        // A passwd file outside the rootfs, reachable from the host's point of view both
        // by its absolute path and by climbing out of rootfs/etc with "..".
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("passwd"), "escapee:x:7:7::/:/bin/sh\n").unwrap();
        let rootfs = base.path().join("rootfs");
        fs::create_dir_all(rootfs.join("etc")).unwrap();

        for target in [
            outside.join("passwd"),
            PathBuf::from("../../outside/passwd"),
        ] {
            let link = rootfs.join("etc/passwd");
            let _ = fs::remove_file(&link);
            symlink(&target, &link).unwrap();
            assert!(fs::read_to_string(&link).is_ok(), "the host view escapes");
            let err = resolve(&rootfs, Default::default(), "escapee").unwrap_err();
            assert!(
                matches!(err, SpecError::UserNotFound { .. }),
                "{}: {err}",
                target.display()
            );
        }
    }

    #[test]
    fn symlinked_directory_and_relative_links_resolve_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/etc")).unwrap();
        fs::write(root.path().join("usr/etc/passwd.real"), PASSWD).unwrap();
        symlink("passwd.real", root.path().join("usr/etc/passwd")).unwrap();
        symlink("/usr/etc", root.path().join("etc")).unwrap();
        let user = resolve(root.path(), Default::default(), "daemon").unwrap();
        assert_eq!(user.uid, 1);
    }

    #[test]
    fn symlink_loops_are_errors() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        let err = resolve(root.path(), Default::default(), "").unwrap_err();
        assert!(matches!(err, SpecError::RootfsFile { .. }), "{err}");
    }
}
