//! ExecuteCommand on real containers (issue 9): `berth ecs execute-command` runs a command in a
//! task's container (non-interactively: its output and exit code), drives an interactive shell
//! through a pseudo-terminal (window size, exit status), is refused for a task run without
//! enableExecuteCommand, and every session is in the controller's audit log.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn td() -> String {
    format!(
        r#"{{"family": "exec", "networkMode": "none",
        "containerDefinitions": [
          {{"name": "app", "image": "{IMAGE}", "memory": 64, "command": ["sleep", "1000"], "stopTimeout": 2}}
        ]}}"#
    )
}

/// Runs a task of `td()`, with enableExecuteCommand or not, and waits until it is RUNNING.
fn running_task(c: &Cluster, exec: bool) -> (String, Value) {
    let family = c.register(&td());
    let mut args = vec![
        "run-task",
        "--cluster",
        &c.name,
        "--task-definition",
        &family,
    ];
    if exec {
        args.push("--enable-execute-command");
    }
    let v = c.json(&args);
    let arn = v["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("run-task placed no task: {v}"))
        .to_string();
    let t = c.wait_status(&arn, "RUNNING", T);
    (arn, t)
}

fn exec_args<'a>(c: &'a Cluster, task: &'a str, command: &'a str, mode: &'a str) -> Vec<&'a str> {
    vec![
        "ecs",
        "execute-command",
        "--cluster",
        &c.name,
        "--task",
        task,
        "--container",
        "app",
        "--command",
        command,
        mode,
    ]
}

fn sessions<'a>(log: &'a [Value], task: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|l| l["action"] == "ExecuteCommand" && l["task"] == task)
        .collect()
}

#[test]
fn execute_command_runs_a_command_and_an_interactive_shell_and_is_audited() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("exec");
    let (arn, task) = running_task(&c, true);
    // DescribeTasks shows what ECS shows for an exec-enabled task.
    assert_eq!(task["enableExecuteCommand"], true, "{task}");
    let agents = &task["containers"][0]["managedAgents"];
    assert_eq!(agents[0]["name"], "ExecuteCommandAgent", "{task}");
    assert_eq!(agents[0]["lastStatus"], "RUNNING", "{task}");

    // Non-interactive: the output and the exit code.
    let out = c
        .berth_command()
        .args(exec_args(&c, &arn, "id", "--non-interactive"))
        .stdin(Stdio::null())
        .output()
        .expect("running berth");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("uid=0(root) gid=0(root)"), "{stdout}");
    assert!(
        stdout.contains("Starting session with SessionId: ecs-execute-command-"),
        "{stdout}"
    );
    assert!(stdout.contains("Exiting session with sessionId: ecs-execute-command-"));
    let out = c
        .berth_command()
        .args(exec_args(
            &c,
            &arn,
            "/bin/sh -c 'echo out; echo err >&2; exit 7'",
            "--non-interactive",
        ))
        .stdin(Stdio::null())
        .output()
        .expect("running berth");
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).contains("out\n"));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    // Interactive: a shell on a pseudo-terminal of the test's, resized once.
    let size = |rows: u16, cols: u16| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size(24, 80)), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut child = c
        .berth_command()
        .args(exec_args(&c, &arn, "/bin/sh", "--interactive"))
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("spawning berth");
    let mut master = std::fs::File::from(pty.master);
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let mut master = master.try_clone().unwrap();
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last holder of the slave (berth) has gone.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let saw = |needle: &str| {
        wait_for(&format!("'{needle}' on the terminal"), T, || {
            seen.lock().unwrap().contains(needle).then_some(())
        })
    };
    saw("Starting session with SessionId: ecs-execute-command-");
    master.write_all(b"stty size\n").unwrap();
    saw("24 80");
    // The terminal grows: the CLI hears SIGWINCH and resizes the remote one.
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    nix::ioctl_write_ptr_bad!(tiocswinsz, nix::libc::TIOCSWINSZ, nix::pty::Winsize);
    unsafe { tiocswinsz(master.as_raw_fd(), &size(40, 100)) }.expect("TIOCSWINSZ");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    // The resize and the next line travel apart: ask until the new size shows.
    wait_for("the remote terminal to be 40x100", T, || {
        master.write_all(b"stty size\n").ok()?;
        std::thread::sleep(Duration::from_millis(200));
        seen.lock().unwrap().contains("40 100").then_some(())
    });
    master.write_all(b"echo $((6*7)); exit 3\n").unwrap();
    let status = wait_for("berth to exit", T, || child.try_wait().ok().flatten());
    drop(master);
    let _ = reader.join();
    let text = seen.lock().unwrap().clone();
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(text.contains("42"), "{text}");
    assert!(text.contains("Exiting session with sessionId:"), "{text}");

    // No exec process is left in the container.
    let ps = c
        .berth_command()
        .args(exec_args(&c, &arn, "ps -o pid,args", "--non-interactive"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains("/bin/sh") && !ps.contains("stty"), "{ps}");

    // Every session is audited: who opened it, what it ran, how it ended.
    let key = berth_tests::read_credentials(&c.admin_credentials()).access_key_id;
    let log = c.audit_log();
    let lines = sessions(&log, &arn);
    let started: Vec<_> = lines
        .iter()
        .filter(|l| l["event"] == "SessionStarted")
        .collect();
    assert_eq!(started.len(), 4, "{lines:?}");
    for l in &started {
        assert_eq!(l["accessKeyId"], key.as_str(), "{l}");
        assert_eq!(l["container"], "app", "{l}");
        assert_eq!(l["outcome"], "OK", "{l}");
    }
    let ended = |command: &str| {
        lines
            .iter()
            .find(|l| l["event"] == "SessionEnded" && l["command"] == command)
            .unwrap_or_else(|| panic!("no end of {command} in {lines:?}"))
    };
    assert_eq!(ended("id")["exitCode"], 0);
    assert_eq!(ended("/bin/sh")["exitCode"], 3);
    assert_eq!(ended("/bin/sh")["interactive"], true);
}

#[test]
fn execute_command_is_refused_for_a_task_without_enable_execute_command() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("exec-refused");
    let (arn, task) = running_task(&c, false);
    assert_ne!(task["enableExecuteCommand"], true, "{task}");
    assert!(task["containers"][0]["managedAgents"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
    let out = c
        .berth_command()
        .args(exec_args(&c, &arn, "id", "--interactive"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert_eq!(
        err.trim_end(),
        "An error occurred (InvalidParameterException) when calling the ExecuteCommand operation: The execute command failed because execute command was not enabled when the task was run or the execute command agent isn\u{2019}t running. Wait and try again or run a new task with execute command enabled and try again."
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Starting session"));
    // An unknown task and an unsigned stream are refused too.
    let out = c
        .berth_command()
        .args(exec_args(&c, "0123456789abcdef", "id", "--interactive"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(254));
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidParameterException"));
    let out = c
        .berth_command()
        .arg("--no-sign-request")
        .args(exec_args(&c, &arn, "id", "--interactive"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(err.contains("MissingAuthenticationTokenException"), "{err}");
    // The refusals are audited.
    let log = c.audit_log();
    let refused = sessions(&log, &arn);
    assert!(
        refused
            .iter()
            .any(|l| l["event"] == "Refused" && l["outcome"] == "InvalidParameterException"),
        "{refused:?}"
    );
    assert!(
        log.iter().any(|l| l["action"] == "ExecuteCommand"
            && l["outcome"] == "MissingAuthenticationTokenException"),
        "{log:?}"
    );
}
