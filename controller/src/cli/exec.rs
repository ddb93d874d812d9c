//! `berth ecs execute-command`: runs a command in a task's running container over the
//! controller's ExecuteCommand stream (exec.proto), as `aws ecs execute-command` does through
//! the Session Manager plugin, with the same "Starting session" and "Exiting session" lines.
//!
//! `--interactive` runs the command on a terminal: the local terminal (when stdin is one) is
//! put in raw mode for the session and restored after it, also on errors; its size is sent at
//! the start and on every SIGWINCH. `--non-interactive` (Berth's addition: ECS accepts only
//! interactive sessions) keeps stdout and stderr apart. Either way stdin is forwarded and the
//! CLI exits with the remote command's exit status (the aws CLI exits 0 whatever the command
//! did).

use super::run::{service_error, Connection};
use super::CliError;
use berth_proto::v1::execute_command_client::ExecuteCommandClient;
use berth_proto::v1::execute_command_input::Input;
use berth_proto::v1::execute_command_output::Output;
use berth_proto::v1::{ExecuteCommandInput, ExecuteCommandStart, WindowSize};
use clap::{Arg, ArgAction, ArgGroup, ArgMatches, Command};
use prost::Message as _;
use std::io::{IsTerminal as _, Read as _, Write as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The subcommand's name under `ecs`.
pub const CLI_NAME: &str = "execute-command";
/// The gRPC path of the stream (what is signed).
pub const PATH: &str = "/berth.v1.ExecuteCommand/Session";

/// A checked `execute-command` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecArgs {
    /// `--cluster` (empty: the default cluster).
    pub cluster: String,
    /// `--task`.
    pub task: String,
    /// `--container`.
    pub container: Option<String>,
    /// `--command`.
    pub command: String,
    /// `--interactive` (else `--non-interactive`).
    pub interactive: bool,
}

/// The clap subcommand.
pub fn command() -> Command {
    let value = |name: &'static str, help: &'static str| {
        Arg::new(name).long(name).action(ArgAction::Set).help(help)
    };
    Command::new(CLI_NAME)
        .about("Run a command in a running container of a task run with enableExecuteCommand, as `aws ecs execute-command` (no Session Manager plugin needed)")
        .arg(value("cluster", "The cluster (name or ARN) of the task"))
        .arg(value("task", "The task (id or ARN)").required(true))
        .arg(value("container", "The container's name (may be left out for a task of one container)"))
        .arg(value("command", "The command to run (split into words as a shell would; no shell is implied)").required(true))
        .arg(
            Arg::new("interactive")
                .long("interactive")
                .action(ArgAction::SetTrue)
                .help("Run the command on a terminal (the local one is put in raw mode)"),
        )
        .arg(
            Arg::new("non-interactive")
                .long("non-interactive")
                .action(ArgAction::SetTrue)
                .help("Run the command without a terminal: stdout and stderr apart (Berth only; ECS accepts interactive sessions only)"),
        )
        .group(
            ArgGroup::new("mode")
                .args(["interactive", "non-interactive"])
                .required(true),
        )
}

/// The checked arguments of a parsed `execute-command`.
pub fn args(m: &ArgMatches) -> Result<ExecArgs, CliError> {
    let get = |k: &str| m.get_one::<String>(k).cloned();
    let task = get("task").unwrap_or_default();
    let command = get("command").unwrap_or_default();
    if command.trim().is_empty() {
        return Err(CliError::Usage(
            "Parameter validation failed: --command must not be empty".into(),
        ));
    }
    Ok(ExecArgs {
        cluster: get("cluster").unwrap_or_default(),
        task,
        container: get("container"),
        command,
        interactive: m.get_flag("interactive"),
    })
}

/// The local terminal in raw mode; restored when dropped (also on errors and panics' unwinding).
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enable() -> Result<RawMode, CliError> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)
            .map_err(|e| CliError::Other(format!("reading the terminal's settings: {e}")))?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .map_err(|e| CliError::Other(format!("putting the terminal in raw mode: {e}")))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The local terminal's size (stdout's, else stdin's), if either is a terminal.
fn window_size() -> Option<WindowSize> {
    use std::os::fd::AsRawFd as _;
    let fds = [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()];
    fds.into_iter().find_map(|fd| {
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which outlives the call.
        let ok = unsafe { tiocgwinsz(fd, &mut ws) }.is_ok();
        (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some(WindowSize {
            columns: ws.ws_col.into(),
            rows: ws.ws_row.into(),
        })
    })
}

fn input(i: Input) -> ExecuteCommandInput {
    ExecuteCommandInput { input: Some(i) }
}

/// Reads stdin on a thread of its own (a blocking read has no place on the runtime) and
/// forwards it; its end closes the remote stdin.
fn forward_stdin(tx: mpsc::Sender<ExecuteCommandInput>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; berth_proto::link::EXEC_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(input(Input::StdinClosed(true)));
                    return;
                }
                Ok(n) => {
                    if tx
                        .blocking_send(input(Input::Stdin(buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
}

/// Runs the session; returns the remote command's exit status.
pub async fn run(conn: Connection, a: ExecArgs) -> Result<i32, CliError> {
    let window = if a.interactive { window_size() } else { None };
    let start = ExecuteCommandStart {
        cluster: a.cluster.clone(),
        task: a.task.clone(),
        container: a.container.clone(),
        command: a.command.clone(),
        interactive: a.interactive,
        window,
    };
    let bytes = start.encode_to_vec();
    let (tx, rx) = mpsc::channel::<ExecuteCommandInput>(64);
    let _ = tx.try_send(input(Input::Start(bytes.clone())));
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some((authorization, date)) =
        conn.signing
            .sign(&conn.host, PATH, &bytes, std::time::SystemTime::now())
    {
        let md = request.metadata_mut();
        for (k, v) in [
            (berth_proto::sigv4::AUTHORIZATION, authorization),
            (berth_proto::sigv4::X_AMZ_DATE, date),
        ] {
            let v = v
                .parse()
                .map_err(|_| CliError::Other(format!("the {k} of the signature is not ASCII")))?;
            md.insert(k, v);
        }
    }
    if conn.debug {
        eprintln!(
            "DEBUG ExecuteCommand {}{PATH} cluster={} task={} container={:?} interactive={}",
            conn.endpoint, a.cluster, a.task, a.container, a.interactive
        );
    }
    let failed = |s: tonic::Status| service_error("ExecuteCommand", s, &conn.endpoint);
    let mut client = ExecuteCommandClient::new(conn.channel.clone())
        .max_decoding_message_size(berth_proto::link::MAX_MESSAGE_SIZE);
    let mut stream = client.session(request).await.map_err(failed)?.into_inner();
    let session = match stream.message().await.map_err(failed)? {
        Some(berth_proto::v1::ExecuteCommandOutput {
            output: Some(Output::Started(s)),
        }) => s,
        _ => {
            return Err(CliError::Other(
                "the controller ended the session before it started".into(),
            ))
        }
    };
    // Plain blocking writes: a terminal or a pipe the user reads; nothing else runs meanwhile.
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let banner = format!(
        "\nStarting session with SessionId: {}\n",
        session.session_id
    );
    let _ = stdout.write_all(banner.as_bytes());
    let _ = stdout.flush();
    // Restored when this returns, whichever way.
    let raw = if a.interactive && std::io::stdin().is_terminal() {
        Some(RawMode::enable()?)
    } else {
        None
    };
    forward_stdin(tx.clone());
    let resizes = if a.interactive {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let code = pump(&mut stream, tx, resizes, &mut stdout, &mut stderr)
        .await
        .map_err(failed);
    drop(raw);
    let code = code?;
    let goodbye = format!(
        "\n\nExiting session with sessionId: {}.\n\n",
        session.session_id
    );
    let _ = stdout.write_all(goodbye.as_bytes());
    let _ = stdout.flush();
    Ok(code)
}

/// Prints the output and sends resizes until the exit status arrives.
async fn pump(
    stream: &mut tonic::Streaming<berth_proto::v1::ExecuteCommandOutput>,
    tx: mpsc::Sender<ExecuteCommandInput>,
    mut resizes: Option<tokio::signal::unix::Signal>,
    stdout: &mut std::io::Stdout,
    stderr: &mut std::io::Stderr,
) -> Result<i32, tonic::Status> {
    loop {
        let winch = async {
            match resizes.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = stream.message() => match m?.and_then(|m| m.output) {
                Some(Output::Stdout(d)) => {
                    let _ = stdout.write_all(&d);
                    let _ = stdout.flush();
                }
                Some(Output::Stderr(d)) => {
                    let _ = stderr.write_all(&d);
                    let _ = stderr.flush();
                }
                Some(Output::ExitCode(c)) => return Ok(c),
                Some(Output::Started(_)) => {}
                None => return Err(tonic::Status::unavailable("the session ended without an exit status")),
            },
            Some(()) = winch => {
                if let Some(w) = window_size() {
                    let _ = tx.send(input(Input::Resize(w))).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ExecArgs, CliError> {
        let inv = super::super::decoding::parse(
            ["berth", "ecs", CLI_NAME]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .collect(),
        )?;
        match inv.action {
            super::super::decoding::Action::ExecuteCommand(a) => Ok(a),
            _ => panic!("not an execute-command"),
        }
    }

    #[test]
    fn the_command_line_is_aws_ecs_execute_commands() {
        let a = parse(&[
            "--cluster",
            "c",
            "--task",
            "t1",
            "--container",
            "web",
            "--command",
            "/bin/sh",
            "--interactive",
        ])
        .unwrap();
        assert_eq!(
            a,
            ExecArgs {
                cluster: "c".into(),
                task: "t1".into(),
                container: Some("web".into()),
                command: "/bin/sh".into(),
                interactive: true,
            }
        );
        let a = parse(&["--task", "t1", "--command", "id", "--non-interactive"]).unwrap();
        assert!(!a.interactive);
        assert_eq!(a.cluster, "");
        // One of the two modes, as aws requires --interactive.
        for bad in [
            &["--task", "t1", "--command", "id"][..],
            &[
                "--task",
                "t1",
                "--command",
                "id",
                "--interactive",
                "--non-interactive",
            ],
            &["--command", "id", "--interactive"],
            &["--task", "t1", "--interactive"],
            &["--task", "t1", "--command", " ", "--interactive"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 252, "{bad:?}: {e}");
        }
    }
}
