//! Path checks, NFS mappings, volume kinds, mount building and environment files, without root.

use super::*;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("berth-vol-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(std::fs::canonicalize(&p).unwrap())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(allowed: &[&Path], nfs: &[&str]) -> VolumeConfig {
    let allowed: Vec<String> = allowed.iter().map(|p| p.display().to_string()).collect();
    let nfs: Vec<String> = nfs.iter().map(|s| s.to_string()).collect();
    VolumeConfig::from_flags(&allowed, &nfs).unwrap()
}

fn td(json: &str) -> TaskDefinition {
    serde_json::from_str(json).unwrap()
}

#[test]
fn normalize_removes_dots_and_never_climbs_above_the_root() {
    assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    assert_eq!(normalize(Path::new("/../../etc")), PathBuf::from("/etc"));
    assert_eq!(normalize(Path::new("/a/b/..")), PathBuf::from("/a"));
}

#[test]
fn host_paths_must_lie_under_an_allowed_directory() {
    let s = Scratch::new();
    let allowed = s.0.join("data");
    std::fs::create_dir_all(allowed.join("app")).unwrap();
    std::fs::create_dir_all(s.0.join("data2")).unwrap();
    std::fs::create_dir_all(s.0.join("secret")).unwrap();
    let c = config(&[&allowed], &[]);
    // Under it, existing or not.
    assert_eq!(c.allowed(&allowed.join("app")), Some(allowed.join("app")));
    assert_eq!(
        c.allowed(&allowed.join("new/dir")),
        Some(allowed.join("new/dir"))
    );
    assert_eq!(c.allowed(&allowed), Some(allowed.clone()));
    // `..` escapes, a sibling sharing the prefix, a relative path.
    assert_eq!(c.allowed(&allowed.join("../secret")), None);
    assert_eq!(c.allowed(&allowed.join("app/../../secret")), None);
    assert_eq!(c.allowed(&s.0.join("data2")), None);
    assert_eq!(c.allowed(Path::new("data/app")), None);
    // `..` that stays inside is fine.
    assert_eq!(
        c.allowed(&allowed.join("app/../app")),
        Some(allowed.join("app"))
    );
    // A symlink inside pointing outside is resolved, and refused.
    std::os::unix::fs::symlink(s.0.join("secret"), allowed.join("link")).unwrap();
    assert_eq!(c.allowed(&allowed.join("link")), None);
    assert_eq!(c.allowed(&allowed.join("link/below")), None);
    // Nothing allowed by default.
    assert_eq!(VolumeConfig::default().allowed(&allowed.join("app")), None);
}

#[test]
fn a_symlinked_allowed_directory_allows_its_target() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.0.join("real")).unwrap();
    std::os::unix::fs::symlink(s.0.join("real"), s.0.join("alias")).unwrap();
    let c = config(&[&s.0.join("alias")], &[]);
    assert_eq!(
        c.allowed(&s.0.join("alias/x")),
        Some(s.0.join("real/x")),
        "checked and mounted as the canonical path"
    );
    assert_eq!(c.allowed(&s.0.join("real/x")), Some(s.0.join("real/x")));
}

#[test]
fn flags_are_checked() {
    assert!(VolumeConfig::from_flags(&["relative/dir".into()], &[])
        .unwrap_err()
        .contains("--allowed-host-paths"));
    let c = VolumeConfig::from_flags(&["".into(), " ".into()], &[]).unwrap();
    assert!(
        c.allowed_host_paths.is_empty(),
        "empty entries are no entries"
    );
    let dup = VolumeConfig::from_flags(&[], &["k=s:/a".into(), "k=t:/b".into()]).unwrap_err();
    assert!(dup.contains("mapped twice"), "{dup}");
}

#[test]
fn nfs_mappings_parse() {
    let (k, e) = NfsExport::parse("fs-0123abcd=10.0.0.5:/exports/efs,vers=4.1,soft").unwrap();
    assert_eq!(k, "fs-0123abcd");
    assert_eq!(
        e,
        NfsExport {
            server: "10.0.0.5".into(),
            export: "/exports/efs".into(),
            options: Some("vers=4.1,soft".into()),
        }
    );
    let (_, e) = NfsExport::parse("data=nas.lan:/").unwrap();
    assert_eq!(
        (e.server.as_str(), e.export.as_str(), e.options),
        ("nas.lan", "/", None)
    );
    let (_, e) = NfsExport::parse("v=[fd00::1]:/x").unwrap();
    assert_eq!(e.server, "[fd00::1]");
    for bad in [
        "nokey",
        "=s:/x",
        "k=/x",
        "k=server",
        "k=s:/a/../b",
        "k y=s:/x",
    ] {
        assert!(NfsExport::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn nfs_sources_append_the_root_directory() {
    let (_, e) = NfsExport::parse("fs=s:/exp/").unwrap();
    assert_eq!(e.source(None), "s:/exp/");
    assert_eq!(e.source(Some("/")), "s:/exp/");
    assert_eq!(e.source(Some("/app/data")), "s:/exp/app/data");
    let (_, e) = NfsExport::parse("fs=s:/exp,ro,vers=4").unwrap();
    assert_eq!(
        nfs_mount_args(&e, Some("sub"), Path::new("/v/t/x")),
        ["-t", "nfs", "-o", "ro,vers=4", "s:/exp/sub", "/v/t/x"]
    );
    let (_, e) = NfsExport::parse("fs=s:/exp").unwrap();
    assert_eq!(
        nfs_mount_args(&e, None, Path::new("/m")),
        ["-t", "nfs", "s:/exp", "/m"]
    );
}

#[test]
fn mapped_keys_are_advertised_as_attributes() {
    let c = config(&[], &["fs-1=s:/a", "shared-data=t:/b,ro"]);
    assert_eq!(
        c.attributes(),
        vec![
            ("berth.nfs.fs-1".to_string(), "s:/a".to_string()),
            ("berth.nfs.shared-data".to_string(), "t:/b".to_string()),
        ]
    );
}

fn volume(json: &str) -> Volume {
    serde_json::from_str(json).unwrap()
}

#[test]
fn volumes_are_classified_as_ecs_defines_them() {
    let c = config(&[], &["fs-1=s:/efs", "nas=s:/nas"]);
    let k = |j: &str| classify(&volume(j), &c);
    assert_eq!(k(r#"{"name":"a"}"#).unwrap(), Kind::Task);
    assert_eq!(k(r#"{"name":"a","host":{}}"#).unwrap(), Kind::Task);
    assert_eq!(
        k(r#"{"name":"a","host":{"sourcePath":"/srv"}}"#).unwrap(),
        Kind::Host("/srv".into())
    );
    assert_eq!(
        k(r#"{"name":"a","dockerVolumeConfiguration":{"scope":"task","driver":"local"}}"#).unwrap(),
        Kind::Task
    );
    assert_eq!(
        k(r#"{"name":"a","dockerVolumeConfiguration":{}}"#).unwrap(),
        Kind::Task
    );
    assert_eq!(
        k(r#"{"name":"a","dockerVolumeConfiguration":{"scope":"shared","autoprovision":true}}"#)
            .unwrap(),
        Kind::Shared(true)
    );
    assert_eq!(
        k(r#"{"name":"a","efsVolumeConfiguration":{"fileSystemId":"fs-1","rootDirectory":"/app"}}"#)
            .unwrap(),
        Kind::Nfs {
            key: "fs-1".into(),
            sub: Some("/app".into())
        }
    );
    assert_eq!(
        k(r#"{"name":"nas","dockerVolumeConfiguration":{"driver":"rexray/efs"}}"#).unwrap(),
        Kind::Nfs {
            key: "nas".into(),
            sub: None
        }
    );
}

#[test]
fn unmapped_and_unsupported_volumes_are_refused_by_name() {
    let c = config(&[], &["fs-1=s:/efs"]);
    let e = |j: &str| classify(&volume(j), &c).unwrap_err().to_string();
    assert_eq!(
        e(r#"{"name":"data","efsVolumeConfiguration":{"fileSystemId":"fs-9"}}"#),
        "volume data: efsVolumeConfiguration fileSystemId fs-9 is not mapped to NFS on this agent (--nfs-volume)"
    );
    assert_eq!(
        e(r#"{"name":"data","dockerVolumeConfiguration":{"driver":"rexray/ebs"}}"#),
        "volume data: dockerVolumeConfiguration driver rexray/ebs is not mapped to NFS on this agent (--nfs-volume data=server:/export)"
    );
    assert!(e(r#"{"name":"d","efsVolumeConfiguration":{"fileSystemId":"fs-1","transitEncryption":"ENABLED"}}"#)
        .contains("transitEncryption ENABLED is not supported"));
    assert!(e(r#"{"name":"d","efsVolumeConfiguration":{"fileSystemId":"fs-1","authorizationConfig":{"accessPointId":"fsap-1"}}}"#)
        .contains("accessPointId"));
    assert!(e(r#"{"name":"d","efsVolumeConfiguration":{"fileSystemId":"fs-1","rootDirectory":"/a/../.."}}"#)
        .contains("'..'"));
    assert!(
        e(r#"{"name":"d","dockerVolumeConfiguration":{"driverOpts":{"type":"nfs"}}}"#)
            .contains("driverOpts")
    );
    assert!(
        e(r#"{"name":"d","dockerVolumeConfiguration":{"scope":"global"}}"#)
            .contains("scope \"global\"")
    );
    assert!(e(r#"{"name":"../x"}"#).contains("letters, digits"));
    assert!(e(r#"{"name":"d","configuredAtLaunch":true}"#).contains("configuredAtLaunch"));
}

const TWO: &str = r#"{"family":"f","containerDefinitions":[
  {"name":"writer","image":"i","mountPoints":[{"sourceVolume":"shared","containerPath":"/data"},
                                              {"sourceVolume":"conf","containerPath":"/conf","readOnly":true}]},
  {"name":"reader","image":"i","volumesFrom":[{"sourceContainer":"writer","readOnly":true}],
   "mountPoints":[{"sourceVolume":"scratch","containerPath":"/scratch"}]},
  {"name":"chained","image":"i","volumesFrom":[{"sourceContainer":"reader"}]}
 ],
 "volumes":[{"name":"shared"},{"name":"conf"},{"name":"scratch"}]}"#;

fn sources() -> HashMap<String, PathBuf> {
    ["shared", "conf", "scratch"]
        .iter()
        .map(|n| (n.to_string(), PathBuf::from(format!("/v/{n}"))))
        .collect()
}

fn bind(source: &str, destination: &str, read_only: bool) -> BindMount {
    BindMount {
        source: PathBuf::from(source),
        destination: destination.into(),
        read_only,
    }
}

#[test]
fn mount_points_and_volumes_from_become_bind_mounts() {
    let m = container_mounts(&td(TWO), &sources()).unwrap();
    assert_eq!(
        m["writer"],
        [
            bind("/v/shared", "/data", false),
            bind("/v/conf", "/conf", true)
        ]
    );
    // Its own first; readOnly on volumesFrom forces every mount it brings read-only.
    assert_eq!(
        m["reader"],
        [
            bind("/v/scratch", "/scratch", false),
            bind("/v/shared", "/data", true),
            bind("/v/conf", "/conf", true),
        ]
    );
    // Without readOnly the source's modes are kept; what the source got by volumesFrom too.
    assert_eq!(
        m["chained"],
        [
            bind("/v/scratch", "/scratch", false),
            bind("/v/shared", "/data", true),
            bind("/v/conf", "/conf", true),
        ]
    );
}

#[test]
fn volumes_from_cycles_end() {
    let def = td(r#"{"family":"f","containerDefinitions":[
      {"name":"a","image":"i","volumesFrom":[{"sourceContainer":"b"}],"mountPoints":[{"sourceVolume":"v","containerPath":"/a"}]},
      {"name":"b","image":"i","volumesFrom":[{"sourceContainer":"a"}],"mountPoints":[{"sourceVolume":"v","containerPath":"/b"}]}],
      "volumes":[{"name":"v"}]}"#);
    let s: HashMap<_, _> = [("v".to_string(), PathBuf::from("/v"))].into();
    let m = container_mounts(&def, &s).unwrap();
    assert_eq!(m["a"], [bind("/v", "/a", false), bind("/v", "/b", false)]);
}

#[test]
fn bad_mount_points_are_refused_by_name() {
    let e = |j: &str| {
        container_mounts(&td(j), &sources())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        e(
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","mountPoints":[{"sourceVolume":"nope","containerPath":"/x"}]}]}"#
        ),
        "container a: mountPoints[0].sourceVolume \"nope\" is not a volume of the task"
    );
    assert!(e(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","mountPoints":[{"sourceVolume":"conf","containerPath":"x"}]}]}"#)
        .contains("not an absolute path"));
    assert!(e(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","volumesFrom":[{"sourceContainer":"ghost"}]}]}"#)
        .contains("volumesFrom[0].sourceContainer \"ghost\""));
}

#[test]
fn bind_mounts_go_into_the_spec_after_its_own_mounts() {
    let m = oci_mount(&bind("/v/a", "/data", true)).unwrap();
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(v["type"], "bind");
    assert_eq!(v["source"], "/v/a");
    assert_eq!(v["destination"], "/data");
    assert_eq!(v["options"], serde_json::json!(["rbind", "rprivate", "ro"]));
    let rw = serde_json::to_value(oci_mount(&bind("/v/a", "/d", false)).unwrap()).unwrap();
    assert_eq!(rw["options"][2], "rw");

    let vols = TaskVolumes {
        mounts: container_mounts(&td(TWO), &sources()).unwrap(),
    };
    let mut spec = Spec::default();
    let before = spec.mounts().clone().unwrap_or_default().len();
    spec = vols.with_mounts(spec, "writer").unwrap();
    let after = spec.mounts().clone().unwrap_or_default();
    assert_eq!(after.len(), before + 2);
    assert_eq!(after[before].destination(), Path::new("/data"));
    // A container without mounts keeps its spec as it is.
    let untouched = vols.with_mounts(Spec::default(), "nobody").unwrap();
    assert_eq!(untouched.mounts(), Spec::default().mounts());
}

#[test]
fn env_files_follow_ecs_agent_rules() {
    let (vars, skipped) = parse_env_file(
        "# comment\n\nA=1\nB = spaced \" q\"\r\nEMPTY=\nC=x=y\nnoequals\n=novalue\n #not a comment=1\nA=2\n",
    );
    assert_eq!(
        vars,
        [
            ("A".to_string(), "2".to_string()),
            ("B ".to_string(), " spaced \" q\"".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("C".to_string(), "x=y".to_string()),
            (" #not a comment".to_string(), "1".to_string()),
        ]
    );
    assert_eq!(skipped, [7, 8]);
}

fn envdef(files: &[(&str, &str)], environment: &[(&str, &str)]) -> ContainerDefinition {
    ContainerDefinition {
        name: "app".into(),
        environment_files: files
            .iter()
            .map(|(v, t)| berth_proto::v1::EnvironmentFile {
                value: v.to_string(),
                r#type: t.to_string(),
            })
            .collect(),
        environment: environment
            .iter()
            .map(|(n, v)| KeyValuePair {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

fn env_of(d: &ContainerDefinition) -> Vec<(String, String)> {
    d.environment
        .iter()
        .map(|kv| (kv.name.clone(), kv.value.clone()))
        .collect()
}

#[tokio::test]
async fn environment_wins_over_files_and_the_first_file_over_later_ones() {
    let s = Scratch::new();
    std::fs::write(s.0.join("one.env"), "A=file1\nB=file1\nC=file1\n").unwrap();
    std::fs::write(s.0.join("two.env"), "B=file2\nD=file2\n").unwrap();
    let c = config(&[&s.0], &[]);
    let one = s.0.join("one.env").display().to_string();
    let two = s.0.join("two.env").display().to_string();
    let d = envdef(&[(&one, "file"), (&two, "file")], &[("C", "env")]);
    let got = with_env_files(&c, &d).await.unwrap().unwrap();
    let env = env_of(&got);
    assert_eq!(
        env,
        [
            ("A".to_string(), "file1".to_string()),
            ("B".to_string(), "file1".to_string()),
            ("D".to_string(), "file2".to_string()),
            ("C".to_string(), "env".to_string()),
        ]
    );
    // In the spec, too: the definition's value for C.
    let spec_env = crate::runtime::spec::env(&got, &Default::default(), "h");
    assert!(spec_env.contains(&"C=env".to_string()), "{spec_env:?}");
    assert!(spec_env.contains(&"B=file1".to_string()), "{spec_env:?}");
    // No files: nothing to do.
    assert!(with_env_files(&c, &envdef(&[], &[]))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn env_files_are_refused_with_a_reason() {
    let s = Scratch::new();
    let inside = s.0.join("in");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(s.0.join("out.env"), "A=1\n").unwrap();
    std::fs::write(
        inside.join("big.env"),
        vec![b'x'; MAX_ENV_FILE as usize + 1],
    )
    .unwrap();
    std::fs::write(inside.join("bin.env"), [0xff, 0xfe, b'\n']).unwrap();
    std::fs::write(inside.join("vars.txt"), "A=1\n").unwrap();
    let c = config(&[&inside], &[]);
    let err = |v: &str, t: &str| {
        let (d, c) = (envdef(&[(v, t)], &[]), c.clone());
        async move { with_env_files(&c, &d).await.unwrap_err().to_string() }
    };
    let out = s.0.join("out.env").display().to_string();
    assert_eq!(
        err(&out, "file").await,
        format!(
            "environment file {out}: not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)"
        )
    );
    let escape = inside.join("../out.env").display().to_string();
    assert!(err(&escape, "file")
        .await
        .contains("not under --allowed-host-paths"));
    assert!(err("arn:aws:s3:::bucket/a.env", "s3")
        .await
        .contains("type \"s3\" is not supported"));
    let missing = inside.join("missing.env").display().to_string();
    assert!(err(&missing, "file").await.contains("No such file"));
    assert!(err(&inside.join("big.env").display().to_string(), "file")
        .await
        .contains("larger than"));
    assert!(err(&inside.join("bin.env").display().to_string(), "file")
        .await
        .contains("not UTF-8"));
    assert!(err(&inside.join("vars.txt").display().to_string(), "file")
        .await
        .contains(".env file extension"));
    assert!(err(&inside.display().to_string(), "file")
        .await
        .contains(".env"));
}

#[tokio::test]
async fn prepare_makes_task_shared_and_host_volumes_and_cleanup_removes_only_the_tasks() {
    // Host volumes are pinned with a bind mount: root only (CI runs as root).
    if !nix::unistd::Uid::effective().is_root() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "needs root");
        return;
    }
    let s = Scratch::new();
    let data = s.0.join("data");
    let allowed = s.0.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let c = config(&[&allowed], &[]);
    let host = allowed.join("made/by/agent");
    let def = td(&format!(
        r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"i","mountPoints":[
            {{"sourceVolume":"t","containerPath":"/t"}},{{"sourceVolume":"s","containerPath":"/s"}},
            {{"sourceVolume":"h","containerPath":"/h","readOnly":true}}]}}],
          "volumes":[{{"name":"t"}},
                     {{"name":"s","dockerVolumeConfiguration":{{"scope":"shared","autoprovision":true}}}},
                     {{"name":"h","host":{{"sourcePath":"{}"}}}}]}}"#,
        host.display()
    ));
    let v = prepare(&c, &data, "task1", &def).await.unwrap();
    let t = data.join("volumes/task1/t");
    let sh = data.join("volumes/shared/s");
    let pin = data.join("volumes/task1/host-h");
    assert!(t.is_dir() && sh.is_dir() && host.is_dir());
    assert_eq!(
        v.of("a"),
        [
            BindMount {
                source: t.clone(),
                destination: "/t".into(),
                read_only: false
            },
            BindMount {
                source: sh.clone(),
                destination: "/s".into(),
                read_only: false
            },
            BindMount {
                source: pin.clone(),
                destination: "/h".into(),
                read_only: true
            },
        ]
    );
    // The host path is pinned: the containers bind the task's own mount of the very directory
    // checked, not the path (a symlink swapped in later would not redirect them).
    assert_eq!(mounts_under(&pin), std::slice::from_ref(&pin));
    std::fs::write(pin.join("through-the-pin"), "x").unwrap();
    assert!(host.join("through-the-pin").is_file());
    std::fs::rename(&host, allowed.join("moved")).unwrap();
    std::os::unix::fs::symlink("/etc", &host).unwrap();
    assert!(
        pin.join("through-the-pin").is_file() && !pin.join("passwd").exists(),
        "a symlink swapped in after the check does not redirect the pin"
    );
    std::fs::remove_file(&host).unwrap();
    std::fs::rename(allowed.join("moved"), &host).unwrap();
    std::fs::write(t.join("f"), "x").unwrap();
    cleanup(&data, "task1").await.unwrap();
    assert!(mounts_under(&pin).is_empty(), "the pin is unmounted");
    assert!(
        host.join("through-the-pin").is_file(),
        "never deleted through the pin"
    );
    assert!(
        !data.join("volumes/task1").exists(),
        "the task's volumes go"
    );
    assert!(sh.is_dir() && host.is_dir(), "shared and host volumes stay");
    // Cleaning up twice (or a task without volumes) is fine.
    cleanup(&data, "task1").await.unwrap();
}

#[tokio::test]
async fn prepare_refuses_before_making_anything() {
    let s = Scratch::new();
    let data = s.0.join("data");
    let allowed = s.0.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let c = config(&[&allowed], &[]);
    let outside = s.0.join("elsewhere");
    let def = td(&format!(
        r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"i"}}],
          "volumes":[{{"name":"t"}},{{"name":"h","host":{{"sourcePath":"{}"}}}}]}}"#,
        outside.display()
    ));
    let e = prepare(&c, &data, "task1", &def).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "volume h: host path {} is not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)",
            outside.display()
        )
    );
    assert!(!outside.exists(), "a refused path is not created");
    let missing = td(
        r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i"}],
        "volumes":[{"name":"t"},{"name":"s","dockerVolumeConfiguration":{"scope":"shared"}}]}"#,
    );
    let e = prepare(&c, &data, "task2", &missing).await.unwrap_err();
    assert!(
        e.to_string().starts_with("volume s: shared volume")
            && e.to_string()
                .ends_with("does not exist and autoprovision is false"),
        "{e}"
    );
    let unmapped = td(
        r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i"}],
        "volumes":[{"name":"t"},{"name":"e","efsVolumeConfiguration":{"fileSystemId":"fs-1"}}]}"#,
    );
    prepare(&c, &data, "task3", &unmapped).await.unwrap_err();
    assert!(
        !data.join("volumes/task3").exists(),
        "nothing made when a volume is refused"
    );
}

#[test]
fn mountinfo_escapes_are_read() {
    assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    assert_eq!(unescape_mountinfo("/plain"), "/plain");
    assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
}
