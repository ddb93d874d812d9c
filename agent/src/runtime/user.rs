//! The container definition's `user` resolved against the image's /etc/passwd and /etc/group,
//! by runc's and Docker's rules (`user.GetExecUser`): `name`, `uid`, `name:group`, `uid:gid`,
//! `name:gid`, `uid:group`. A name must be in the file; a number need not be (then the gid is
//! 0, and no supplementary groups). Without an explicit group the user's supplementary groups
//! are the /etc/group entries that list it as a member.

/// An image's /etc/passwd and /etc/group (`None`: the file is not in the image).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUsers {
    /// /etc/passwd.
    pub passwd: Option<String>,
    /// /etc/group.
    pub group: Option<String>,
}

/// The process identity a `user` resolves to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids (from /etc/group when no group was given).
    pub additional_gids: Vec<u32>,
    /// The home directory (passwd's, or `/`), for HOME.
    pub home: String,
}

/// Why a user cannot be resolved (Docker's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A user name that no passwd entry has.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// A group name that no group entry has.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A number out of range.
    #[error("user {0}: uids and gids must be in range 0-2147483647")]
    Range(String),
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(file: &str) -> Vec<Passwd<'_>> {
    file.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Passwd {
                name: f.first()?,
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).copied().unwrap_or(""),
            })
        })
        .collect()
}

fn group_entries(file: &str) -> Vec<Group<'_>> {
    file.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Group {
                name: f.first()?,
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Parses a numeric id as runc does (0 to 2^31-1).
fn id(spec: &str, s: &str) -> Result<Option<u32>, UserError> {
    match s.parse::<i64>() {
        Ok(n) if (0..=i32::MAX as i64).contains(&n) => Ok(Some(n as u32)),
        Ok(_) => Err(UserError::Range(spec.to_string())),
        Err(_) => Ok(None),
    }
}

/// Whether resolving `user` needs the image's files: anything but empty or root.
pub fn needs_files(user: &str) -> bool {
    !matches!(user, "" | "root" | "0" | "0:0" | "root:root")
}

/// Resolves `user` (empty: root) against the image's files.
pub fn resolve(user: &str, files: &ImageUsers) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = files
        .passwd
        .as_deref()
        .map(passwd_entries)
        .unwrap_or_default();
    let mut out = ExecUser {
        home: "/".into(),
        ..Default::default()
    };
    let mut name = "";
    if !user_arg.is_empty() {
        let uid_arg = id(user, user_arg)?;
        match passwd
            .iter()
            .find(|p| p.name == user_arg || Some(p.uid) == uid_arg)
        {
            Some(p) => {
                out.uid = p.uid;
                out.gid = p.gid;
                if !p.home.is_empty() {
                    out.home = p.home.to_string();
                }
                name = p.name;
            }
            None => match uid_arg {
                Some(uid) => out.uid = uid,
                None => return Err(UserError::NoUser(user_arg.to_string())),
            },
        }
    }
    let groups = files
        .group
        .as_deref()
        .map(group_entries)
        .unwrap_or_default();
    match group_arg.filter(|g| !g.is_empty()) {
        Some(g) => {
            let gid_arg = id(user, g)?;
            let found = groups.iter().find(|e| match gid_arg {
                Some(gid) => e.gid == gid,
                None => e.name == g,
            });
            out.gid = match (found, gid_arg) {
                (Some(e), _) => e.gid,
                (None, Some(gid)) => gid,
                (None, None) => return Err(UserError::NoGroup(g.to_string())),
            };
        }
        None if !name.is_empty() => {
            out.additional_gids = groups
                .iter()
                .filter(|g| g.members.contains(&name))
                .map(|g| g.gid)
                .collect();
        }
        None => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> ImageUsers {
        ImageUsers {
            passwd: Some(
                "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001:App:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
                    .into(),
            ),
            group: Some(
                "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:other\nnogroup:x:65534:\n"
                    .into(),
            ),
        }
    }

    fn r(user: &str) -> Result<ExecUser, UserError> {
        resolve(user, &files())
    }

    #[test]
    fn names_resolve_with_their_supplementary_groups() {
        let u = r("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, [50]);
        assert_eq!(u.home, "/home/app");
        assert_eq!(r("1000").unwrap(), u, "a uid in passwd is that user");
        let n = r("nobody").unwrap();
        assert_eq!((n.uid, n.gid, n.additional_gids.len()), (65534, 65534, 0));
    }

    #[test]
    fn an_explicit_group_replaces_the_primary_and_drops_supplementary_ones() {
        let u = r("app:staff").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 50));
        assert!(u.additional_gids.is_empty());
        let u = r("app:4242").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 4242));
        let u = r("1000:wheel").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 10));
        let u = r("0:0").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn unknown_numbers_pass_with_gid_0_and_unknown_names_fail_in_dockers_words() {
        let u = r("4000").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4000, 0, "/"));
        assert_eq!(
            r("ghost").unwrap_err().to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:ghosts").unwrap_err().to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert!(matches!(r("-1"), Err(UserError::Range(_))));
        // An image without the files: numbers only.
        let none = ImageUsers::default();
        assert_eq!(resolve("5:6", &none).unwrap().gid, 6);
        assert!(resolve("app", &none).is_err());
        assert_eq!(resolve("", &none).unwrap().uid, 0);
    }

    #[test]
    fn only_root_needs_no_files() {
        assert!(!needs_files(""));
        assert!(!needs_files("root"));
        assert!(!needs_files("0"));
        assert!(needs_files("1000"), "its gid comes from passwd");
        assert!(needs_files("app"));
    }
}
