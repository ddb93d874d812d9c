//! The issue-9 registration rules, one scenario per rule: what ECS accepts registers, what it
//! refuses is refused naming the field.

use super::super::validate;
use super::*;

/// Registers `{"family":"f"<task>,"containerDefinitions":[<containers>]}`.
fn td(task: &str, containers: &str) -> Result<(), String> {
    let json = format!(r#"{{"family":"f"{task},"containerDefinitions":[{containers}]}}"#);
    let req: RegisterTaskDefinitionRequest =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    validate(&req).map(|_| ()).map_err(|e| {
        assert_eq!(e.exception_name(), "ClientException", "{e}");
        e.to_string()
    })
}

/// One container "a" with `extra` members.
fn one(extra: &str) -> Result<(), String> {
    td(
        "",
        &format!(r#"{{"name":"a","image":"i","memory":16{extra}}}"#),
    )
}

const FARGATE: &str =
    r#","requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"256","memory":"512""#;

fn fargate(extra: &str) -> Result<(), String> {
    td(FARGATE, &format!(r#"{{"name":"a","image":"i"{extra}}}"#))
}

#[track_caller]
fn refused(r: Result<(), String>, needles: &[&str]) {
    let e = r.expect_err("refused");
    for n in needles {
        assert!(e.contains(n), "'{n}' not in: {e}");
    }
}

#[test]
fn health_checks_follow_ecs_forms_and_ranges() {
    assert!(one(r#","healthCheck":{"command":["CMD","/bin/true"]}"#).is_ok());
    assert!(one(r#","healthCheck":{"command":["CMD","/bin/test","-f","/x"],"interval":5,"timeout":60,"retries":10,"startPeriod":300}"#).is_ok());
    assert!(one(r#","healthCheck":{"command":["CMD-SHELL","wget -q localhost || exit 1"],"interval":300,"timeout":2,"retries":1,"startPeriod":0}"#).is_ok());
    refused(
        one(r#","healthCheck":{"command":["CMD"]}"#),
        &[
            "containerDefinitions[0].healthCheck.command",
            "\"CMD\" must be followed",
        ],
    );
    // Docker joins the elements after CMD-SHELL into one line.
    assert!(
        one(r#","healthCheck":{"command":["CMD-SHELL","curl","-f","http://localhost/"]}"#).is_ok()
    );
    refused(
        one(r#","healthCheck":{"command":["CMD-SHELL"," "]}"#),
        &[
            "healthCheck.command",
            "must be followed by the shell command line",
        ],
    );
    refused(
        one(r#","healthCheck":{"command":["/bin/true"]}"#),
        &[
            "healthCheck.command",
            "'/bin/true'",
            "\"CMD\" or \"CMD-SHELL\"",
        ],
    );
    refused(
        one(r#","healthCheck":{"command":[]}"#),
        &["healthCheck.command: is required"],
    );
    for (member, bad) in [
        ("interval", 4),
        ("interval", 301),
        ("timeout", 1),
        ("timeout", 61),
        ("retries", 0),
        ("retries", 11),
        ("startPeriod", -1),
        ("startPeriod", 301),
    ] {
        refused(
            one(&format!(
                r#","healthCheck":{{"command":["CMD","x"],"{member}":{bad}}}"#
            )),
            &[&format!("healthCheck.{member}: {bad} is outside")],
        );
    }
}

#[test]
fn health_check_defaults_are_filled_as_ecs_shows_them() {
    let mut c: ContainerDefinition = serde_json::from_str(
        r#"{"name":"a","image":"i","healthCheck":{"command":["CMD","x"],"retries":7}}"#,
    )
    .unwrap();
    fill_defaults(&mut c);
    let h = c.health_check.unwrap();
    assert_eq!(
        (h.interval, h.timeout, h.retries, h.start_period),
        (Some(30), Some(5), Some(7), None)
    );
}

fn pair(a_extra: &str, b_extra: &str) -> Result<(), String> {
    td(
        "",
        &format!(
            r#"{{"name":"a","image":"i","memory":16{a_extra}}},{{"name":"b","image":"i","memory":16{b_extra}}}"#
        ),
    )
}

#[test]
fn depends_on_names_conditions_and_targets_follow_ecs() {
    assert!(pair(
        r#","dependsOn":[{"containerName":"b","condition":"START"}]"#,
        ""
    )
    .is_ok());
    assert!(pair(
        r#","dependsOn":[{"containerName":"b","condition":"SUCCESS"}]"#,
        r#","essential":false"#
    )
    .is_ok());
    assert!(pair(
        r#","dependsOn":[{"containerName":"b","condition":"HEALTHY"}]"#,
        r#","healthCheck":{"command":["CMD","x"]}"#
    )
    .is_ok());
    refused(
        pair(
            r#","dependsOn":[{"containerName":"c","condition":"START"}]"#,
            "",
        ),
        &["containerDefinitions[0].dependsOn[0].containerName: 'c' is not another container"],
    );
    refused(
        pair(
            r#","dependsOn":[{"containerName":"a","condition":"START"}]"#,
            "",
        ),
        &["dependsOn[0].containerName: 'a'"],
    );
    refused(
        pair(
            r#","dependsOn":[{"containerName":"b","condition":"RUNNING"}]"#,
            "",
        ),
        &["dependsOn[0].condition: 'RUNNING' is not one of"],
    );
    refused(
        pair(
            r#","dependsOn":[{"containerName":"b","condition":"HEALTHY"}]"#,
            "",
        ),
        &[
            "dependsOn[0].condition",
            "HEALTHY needs container 'b' to have a healthCheck",
        ],
    );
    for cond in ["COMPLETE", "SUCCESS"] {
        refused(
            pair(
                &format!(r#","dependsOn":[{{"containerName":"b","condition":"{cond}"}}]"#),
                "",
            ),
            &[
                "containerDefinitions[0].dependsOn[0].condition",
                &format!("{cond} cannot be set on an essential container"),
            ],
        );
    }
}

#[test]
fn cycles_through_depends_on_links_and_volumes_from_are_refused_naming_them() {
    let e = td(
        "",
        r#"{"name":"a","image":"i","memory":16,"dependsOn":[{"containerName":"b","condition":"START"}]},
           {"name":"b","image":"i","memory":16,"links":["c:db"]},
           {"name":"c","image":"i","memory":16,"volumesFrom":[{"sourceContainer":"a"}]}"#,
    )
    .unwrap_err();
    assert!(
        e.contains("containerDefinitions[0]: the containers wait for each other in a cycle")
            && e.contains("'a' (dependsOn →) 'b' (links →) 'c' (volumesFrom →) 'a'"),
        "{e}"
    );
    // Found from wherever the search starts, named from its lowest container.
    let e = td(
        "",
        r#"{"name":"x","image":"i","memory":16,"dependsOn":[{"containerName":"b","condition":"START"}]},
           {"name":"a","image":"i","memory":16,"dependsOn":[{"containerName":"b","condition":"START"}]},
           {"name":"b","image":"i","memory":16,"dependsOn":[{"containerName":"a","condition":"START"}]}"#,
    )
    .unwrap_err();
    assert!(
        e.starts_with("containerDefinitions[1]:")
            && e.contains("'a' (dependsOn →) 'b' (dependsOn →) 'a'"),
        "{e}"
    );
    // A diamond is no cycle.
    assert!(td(
        "",
        r#"{"name":"a","image":"i","memory":16,"dependsOn":[{"containerName":"b","condition":"START"},{"containerName":"c","condition":"START"}]},
           {"name":"b","image":"i","memory":16,"dependsOn":[{"containerName":"c","condition":"START"}]},
           {"name":"c","image":"i","memory":16}"#,
    )
    .is_ok());
}

#[test]
fn links_only_in_bridge_mode_and_to_containers_of_the_task() {
    assert!(pair(r#","links":["b","b:db"]"#, "").is_ok());
    refused(
        pair(r#","links":["c"]"#, ""),
        &["containerDefinitions[0].links[0]: 'c' is not another container"],
    );
    refused(
        pair(r#","links":["b:d b"]"#, ""),
        &["links[0]: alias 'd b'"],
    );
    for mode in ["awsvpc", "host", "none"] {
        refused(
            td(
                &format!(r#","networkMode":"{mode}""#),
                r#"{"name":"a","image":"i","memory":16,"links":["b"]},{"name":"b","image":"i","memory":16}"#,
            ),
            &["containerDefinitions[0].links: links are supported only in the bridge network mode", mode],
        );
    }
    refused(
        pair(r#","volumesFrom":[{"sourceContainer":"z"}]"#, ""),
        &["containerDefinitions[0].volumesFrom[0].sourceContainer: 'z'"],
    );
}

#[test]
fn timeouts_follow_ecs_and_fargate_caps_them_at_120() {
    assert!(one(r#","startTimeout":600,"stopTimeout":600"#).is_ok());
    assert!(one(r#","stopTimeout":0"#).is_ok());
    refused(
        one(r#","startTimeout":-1"#),
        &["containerDefinitions[0].startTimeout: -1"],
    );
    assert!(fargate(r#","startTimeout":2,"stopTimeout":120"#).is_ok());
    refused(
        fargate(r#","stopTimeout":121"#),
        &[
            "containerDefinitions[0].stopTimeout: 121",
            "2-120",
            "FARGATE",
        ],
    );
    refused(
        fargate(r#","startTimeout":1"#),
        &["startTimeout: 1", "FARGATE"],
    );
}

#[test]
fn restart_policy_bounds_follow_ecs() {
    let codes: Vec<String> = (0..50).map(|c| c.to_string()).collect();
    assert!(one(&format!(
        r#","restartPolicy":{{"enabled":true,"ignoredExitCodes":[{}],"restartAttemptPeriod":60}}"#,
        codes.join(",")
    ))
    .is_ok());
    assert!(one(r#","restartPolicy":{"enabled":true,"restartAttemptPeriod":1800}"#).is_ok());
    refused(
        one(&format!(
            r#","restartPolicy":{{"enabled":true,"ignoredExitCodes":[{},50]}}"#,
            codes.join(",")
        )),
        &[
            "restartPolicy.ignoredExitCodes: 51 exit codes",
            "at most 50",
        ],
    );
    for p in [59, 1801] {
        refused(
            one(&format!(
                r#","restartPolicy":{{"enabled":true,"restartAttemptPeriod":{p}}}"#
            )),
            &[&format!(
                "restartPolicy.restartAttemptPeriod: {p} for container 'a' is outside 60-1800"
            )],
        );
    }
}

fn with_volumes(volumes: &str, extra: &str) -> Result<(), String> {
    td(
        &format!(r#","volumes":[{volumes}]"#),
        &format!(r#"{{"name":"a","image":"i","memory":16{extra}}}"#),
    )
}

#[test]
fn volumes_and_mount_points_follow_ecs() {
    assert!(with_volumes(
        r#"{"name":"scratch"},{"name":"data","host":{"sourcePath":"/srv/data"}},{"name":"tmp","host":{}},
           {"name":"dv","dockerVolumeConfiguration":{"scope":"shared","autoprovision":true,"driver":"local"}},
           {"name":"efs","efsVolumeConfiguration":{"fileSystemId":"fs-1","rootDirectory":"/app","transitEncryption":"DISABLED","authorizationConfig":{"iam":"DISABLED"}}}"#,
        r#","mountPoints":[{"sourceVolume":"scratch","containerPath":"/s"},{"sourceVolume":"data","containerPath":"/d","readOnly":true}]"#,
    )
    .is_ok());
    let cases = [
        (r#"{"name":"a b"}"#, "", "volumes[0].name: 'a b' is not valid"),
        (r#"{"name":""}"#, "", "volumes[0].name"),
        (r#"{"name":"v"},{"name":"v"}"#, "", "volumes[1].name: 'v' is used by another volume"),
        (
            r#"{"name":"v","host":{"sourcePath":"/x"},"efsVolumeConfiguration":{"fileSystemId":"fs-1"}}"#,
            "",
            "volumes[0]: volume 'v' sets host and efsVolumeConfiguration",
        ),
        (r#"{"name":"v","host":{"sourcePath":"data"}}"#, "", "volumes[0].host.sourcePath: 'data' must be an absolute path"),
        (r#"{"name":"v","host":{"sourcePath":"/srv/../etc"}}"#, "", "'..'"),
        (
            r#"{"name":"v","dockerVolumeConfiguration":{"scope":"global"}}"#,
            "",
            "volumes[0].dockerVolumeConfiguration.scope: 'global'",
        ),
        (
            r#"{"name":"v","dockerVolumeConfiguration":{"scope":"task","autoprovision":true}}"#,
            "",
            "volumes[0].dockerVolumeConfiguration.autoprovision: applies only to volumes with scope shared",
        ),
        (
            r#"{"name":"v","efsVolumeConfiguration":{"fileSystemId":""}}"#,
            "",
            "volumes[0].efsVolumeConfiguration.fileSystemId: is required",
        ),
        (
            r#"{"name":"v","efsVolumeConfiguration":{"fileSystemId":"fs-1","authorizationConfig":{"iam":"ENABLED"}}}"#,
            "",
            "authorizationConfig.iam: ENABLED needs transitEncryption ENABLED",
        ),
        (
            r#"{"name":"v","efsVolumeConfiguration":{"fileSystemId":"fs-1","authorizationConfig":{"accessPointId":"fsap-1"}}}"#,
            "",
            "authorizationConfig.accessPointId: an access point needs transitEncryption ENABLED",
        ),
        (
            r#"{"name":"v"}"#,
            r#","mountPoints":[{"sourceVolume":"w","containerPath":"/w"}]"#,
            "containerDefinitions[0].mountPoints[0].sourceVolume: 'w' is not a volume",
        ),
        (
            r#"{"name":"v"}"#,
            r#","mountPoints":[{"sourceVolume":"v","containerPath":"w"}]"#,
            "containerDefinitions[0].mountPoints[0].containerPath: 'w' must be an absolute path",
        ),
        (
            r#"{"name":"v"},{"name":"w"}"#,
            r#","mountPoints":[{"sourceVolume":"v","containerPath":"/m"},{"sourceVolume":"w","containerPath":"/m/"}]"#,
            "mountPoints[1].containerPath: '/m/' is mounted twice",
        ),
    ];
    for (volumes, extra, needle) in cases {
        refused(with_volumes(volumes, extra), &[needle]);
    }
    // Fargate has no host paths and no Docker volumes; task-scoped and EFS volumes are fine.
    let on_fargate = |volumes: &str| {
        td(
            &format!(r#"{FARGATE},"volumes":[{volumes}]"#),
            r#"{"name":"a","image":"i"}"#,
        )
    };
    assert!(on_fargate(
        r#"{"name":"v"},{"name":"e","efsVolumeConfiguration":{"fileSystemId":"fs-1"}}"#
    )
    .is_ok());
    refused(
        on_fargate(r#"{"name":"v","host":{"sourcePath":"/x"}}"#),
        &["volumes[0].host.sourcePath: is not supported", "FARGATE"],
    );
    refused(
        on_fargate(r#"{"name":"v","dockerVolumeConfiguration":{"scope":"task"}}"#),
        &["volumes[0].dockerVolumeConfiguration", "FARGATE"],
    );
}

#[test]
fn linux_parameters_follow_ecs() {
    assert!(one(r#","linuxParameters":{"capabilities":{"add":["NET_ADMIN","SYS_PTRACE"],"drop":["ALL"]},"initProcessEnabled":true,
        "devices":[{"hostPath":"/dev/fuse","containerPath":"/dev/fuse","permissions":["read","write","mknod"]}],
        "sharedMemorySize":64,"tmpfs":[{"containerPath":"/run","size":16,"mountOptions":["noexec","mode=1777","uid=1000"]}],
        "maxSwap":0,"swappiness":60}"#)
    .is_ok());
    let cases = [
        (r#"{"capabilities":{"add":["CAP_NET_ADMIN"]}}"#, "linuxParameters.capabilities.add[0]: 'CAP_NET_ADMIN' is not a Linux capability ECS names; ECS names capabilities without the CAP_ prefix: 'NET_ADMIN'"),
        (r#"{"capabilities":{"drop":["FLY"]}}"#, "linuxParameters.capabilities.drop[0]: 'FLY'"),
        (r#"{"devices":[{"hostPath":"dev/fuse"}]}"#, "linuxParameters.devices[0].hostPath: 'dev/fuse' must be an absolute path"),
        (r#"{"devices":[{"containerPath":"/dev/x"}]}"#, "linuxParameters.devices[0].hostPath: is required"),
        (r#"{"devices":[{"hostPath":"/dev/x","containerPath":"x"}]}"#, "linuxParameters.devices[0].containerPath"),
        (r#"{"devices":[{"hostPath":"/dev/x","permissions":["rw"]}]}"#, "linuxParameters.devices[0].permissions: 'rw'"),
        (r#"{"tmpfs":[{"containerPath":"/t","size":0}]}"#, "linuxParameters.tmpfs[0].size: 0"),
        (r#"{"tmpfs":[{"containerPath":"t","size":1}]}"#, "linuxParameters.tmpfs[0].containerPath: 't' must be an absolute path"),
        (r#"{"tmpfs":[{"containerPath":"/t","size":1,"mountOptions":["huge"]}]}"#, "linuxParameters.tmpfs[0].mountOptions: 'huge'"),
        (r#"{"tmpfs":[{"containerPath":"/t","size":1},{"containerPath":"/t","size":1}]}"#, "linuxParameters.tmpfs[1].containerPath: '/t' is given twice"),
        (r#"{"sharedMemorySize":0}"#, "linuxParameters.sharedMemorySize: 0"),
        (r#"{"maxSwap":-1}"#, "linuxParameters.maxSwap: -1"),
        (r#"{"swappiness":101}"#, "linuxParameters.swappiness: 101 is outside 0-100"),
    ];
    for (lp, needle) in cases {
        refused(one(&format!(r#","linuxParameters":{lp}"#)), &[needle]);
    }
    // Fargate: SYS_PTRACE may be added, init and drops are fine; the rest is refused.
    assert!(fargate(r#","linuxParameters":{"capabilities":{"add":["SYS_PTRACE"],"drop":["NET_RAW"]},"initProcessEnabled":true}"#).is_ok());
    for (lp, member) in [
        (
            r#"{"capabilities":{"add":["NET_ADMIN"]}}"#,
            "capabilities.add[0]",
        ),
        (r#"{"devices":[{"hostPath":"/dev/fuse"}]}"#, "devices"),
        (r#"{"sharedMemorySize":64}"#, "sharedMemorySize"),
        (r#"{"tmpfs":[{"containerPath":"/t","size":1}]}"#, "tmpfs"),
        (r#"{"maxSwap":0}"#, "maxSwap"),
        (r#"{"swappiness":10}"#, "swappiness"),
    ] {
        refused(
            fargate(&format!(r#","linuxParameters":{lp}"#)),
            &[
                &format!("containerDefinitions[0].linuxParameters.{member}"),
                "FARGATE",
            ],
        );
    }
}

#[test]
fn pid_and_ipc_modes_follow_fargate_rules() {
    assert!(td(
        &format!(r#"{FARGATE},"pidMode":"task""#),
        r#"{"name":"a","image":"i"}"#
    )
    .is_ok());
    refused(
        td(
            &format!(r#"{FARGATE},"pidMode":"host""#),
            r#"{"name":"a","image":"i"}"#,
        ),
        &["pidMode: 'host' is not supported", "FARGATE"],
    );
    refused(
        td(
            &format!(r#"{FARGATE},"ipcMode":"task""#),
            r#"{"name":"a","image":"i"}"#,
        ),
        &["ipcMode", "FARGATE"],
    );
    assert!(td(
        r#","pidMode":"host","ipcMode":"host""#,
        r#"{"name":"a","image":"i","memory":16}"#
    )
    .is_ok());
}

#[test]
fn system_controls_follow_the_namespaces_ecs_allows() {
    let sysctl = |task: &str, ns: &str, value: &str| {
        td(
            task,
            &format!(
                r#"{{"name":"a","image":"i","memory":16,"systemControls":[{{"namespace":"{ns}","value":"{value}"}}]}}"#
            ),
        )
    };
    for ns in [
        "net.ipv4.tcp_keepalive_time",
        "kernel.shmmax",
        "kernel.sem",
        "fs.mqueue.msg_max",
    ] {
        assert!(sysctl("", ns, "1").is_ok(), "{ns}");
        assert!(
            sysctl(r#","networkMode":"awsvpc""#, ns, "1").is_ok(),
            "{ns}"
        );
    }
    refused(
        sysctl("", "vm.swappiness", "1"),
        &["containerDefinitions[0].systemControls[0].namespace: 'vm.swappiness' is not a namespaced kernel parameter"],
    );
    refused(sysctl("", "kernel.pid_max", "1"), &["'kernel.pid_max'"]);
    refused(
        sysctl("", "", "1"),
        &["systemControls[0].namespace: is required"],
    );
    refused(
        sysctl("", "net.core.somaxconn", ""),
        &["systemControls[0].value: is required"],
    );
    refused(
        sysctl(r#","networkMode":"host""#, "net.core.somaxconn", "1024"),
        &[
            "systemControls[0].namespace",
            "not supported in the host network mode",
        ],
    );
    assert!(sysctl(r#","networkMode":"host""#, "kernel.shmmax", "1").is_ok());
    refused(
        sysctl(r#","ipcMode":"host""#, "kernel.shmmax", "1"),
        &["systemControls[0].namespace", "ipcMode host"],
    );
    assert!(sysctl(r#","ipcMode":"host""#, "net.core.somaxconn", "1").is_ok());
}

#[test]
fn environment_files_are_berth_files_and_s3_is_refused_by_name() {
    assert!(one(r#","environmentFiles":[{"value":"/etc/app/app.env","type":"file"}]"#).is_ok());
    refused(
        one(r#","environmentFiles":[{"value":"arn:aws:s3:::b/f.env","type":"s3"}]"#),
        &[
            "containerDefinitions[0].environmentFiles[0].type: s3 is not supported by Berth",
            "type \"file\"",
        ],
    );
    refused(
        one(r#","environmentFiles":[{"value":"app.env","type":"file"}]"#),
        &["containerDefinitions[0].environmentFiles[0].value: 'app.env' must be an absolute path"],
    );
    refused(
        one(r#","environmentFiles":[{"value":"/a.env","type":"http"}]"#),
        &["environmentFiles[0].type: 'http' is not a type Berth reads"],
    );
    let eleven: Vec<&str> = vec![r#"{"value":"/a.env","type":"file"}"#; 11];
    refused(
        one(&format!(r#","environmentFiles":[{}]"#, eleven.join(","))),
        &["containerDefinitions[0].environmentFiles: 11 environment files given; at most 10"],
    );
}

#[test]
fn interactive_terminal_networking_and_labels_register() {
    assert!(one(r#","interactive":true,"pseudoTerminal":true,"disableNetworking":true,"dockerLabels":{"k":"v"}"#).is_ok());
}
