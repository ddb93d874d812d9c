//! containerd exec (issue 9): a process started in a running container with the container's own
//! process settings, for health checks and ExecuteCommand. Its stdio goes through FIFOs the agent
//! makes in a per-exec directory (removed as soon as the shim has opened them) and reads and
//! writes as non-blocking tokio pipes, so output streams while the process runs.

use super::containerd::{rpc, Containerd};
use super::{ExecIo, ExecSpec, RuntimeError};
use containerd_client::services::v1::*;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio::net::unix::pipe;

/// The type of an exec process's spec: the `process` object of an OCI runtime spec.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Where the FIFOs of exec processes are made when the agent does not say otherwise.
pub const DEFAULT_EXEC_DIR: &str = "/run/berth/exec";

/// The exec process's `process` object: the container's own (user, environment, working
/// directory, capabilities, rlimits, AppArmor profile, noNewPrivileges) with the exec's command,
/// terminal and extra environment.
pub(super) fn exec_process(
    container_spec: &serde_json::Value,
    spec: &ExecSpec,
) -> serde_json::Value {
    let mut process = container_spec
        .get("process")
        .cloned()
        .filter(|p| p.is_object())
        .unwrap_or_else(|| serde_json::json!({"cwd": "/"}));
    let mut env: Vec<String> = process
        .get("env")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for entry in &spec.env {
        let name = entry.split('=').next().unwrap_or(entry);
        match env.iter_mut().find(|e| e.split('=').next() == Some(name)) {
            Some(existing) => *existing = entry.clone(),
            None => env.push(entry.clone()),
        }
    }
    if let Some(obj) = process.as_object_mut() {
        obj.insert("args".into(), serde_json::json!(spec.args));
        obj.insert("env".into(), serde_json::json!(env));
        obj.insert("terminal".into(), serde_json::json!(spec.terminal));
        // The container's terminal size means nothing to this process; resize sets its own.
        obj.remove("consoleSize");
        if !obj.contains_key("cwd") {
            obj.insert("cwd".into(), serde_json::json!("/"));
        }
    }
    process
}

/// The per-exec directory of FIFOs: made fresh, removed on drop (once the shim holds them open,
/// the names are no longer needed).
struct FifoDir(PathBuf);

impl FifoDir {
    fn make(base: &Path, id: &str, exec_id: &str) -> Result<Self, RuntimeError> {
        let dir = base.join(format!("{id}.{exec_id}"));
        let io = |source| RuntimeError::Io {
            path: dir.display().to_string(),
            source,
        };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(base).map_err(|source| RuntimeError::Io {
            path: base.display().to_string(),
            source,
        })?;
        std::fs::create_dir(&dir).map_err(io)?;
        let made = FifoDir(dir);
        // Only root (the agent, the shim) may open the FIFOs.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&made.0, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| RuntimeError::Io {
                path: made.0.display().to_string(),
                source,
            },
        )?;
        Ok(made)
    }

    fn fifo(&self, name: &str) -> Result<PathBuf, RuntimeError> {
        let path = self.0.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
            |e| RuntimeError::Io {
                path: path.display().to_string(),
                source: std::io::Error::from(e),
            },
        )?;
        Ok(path)
    }
}

impl Drop for FifoDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove an exec's FIFO directory");
            }
        }
    }
}

/// An exec process's stdin: writes go to its FIFO; dropping it closes the FIFO and asks the shim
/// to close the process's stdin (the shim keeps a writer of its own open until told).
struct Stdin {
    pipe: Option<pipe::Sender>,
    close: Option<Box<dyn FnOnce() + Send>>,
}

impl AsyncWrite for Stdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.pipe.as_mut() {
            Some(p) => Pin::new(p).poll_write(cx, buf),
            None => Poll::Ready(Err(ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.pipe.as_mut() {
            Some(p) => Pin::new(p).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.pipe = None;
        if let Some(close) = self.close.take() {
            close();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        self.pipe = None;
        if let Some(close) = self.close.take() {
            close();
        }
    }
}

impl Containerd {
    /// The container's OCI spec as containerd holds it.
    async fn container_spec(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let container = rpc(
            "get container",
            id,
            self.client
                .containers()
                .get(self.req(GetContainerRequest { id: id.to_string() })),
        )
        .await?
        .into_inner()
        .container
        .unwrap_or_default();
        let any = container.spec.unwrap_or_default();
        serde_json::from_slice(&any.value).map_err(|source| RuntimeError::Spec {
            id: id.to_string(),
            source,
        })
    }

    /// [`super::Runtime::exec`] for containerd.
    pub(super) async fn exec_start(
        &self,
        id: &str,
        spec: &ExecSpec,
    ) -> Result<ExecIo, RuntimeError> {
        let container_spec = self.container_spec(id).await?;
        let process = exec_process(&container_spec, spec);
        let value = serde_json::to_vec(&process).map_err(|source| RuntimeError::Spec {
            id: id.to_string(),
            source,
        })?;
        let dir = FifoDir::make(&self.exec_dir, id, &spec.exec_id)?;
        let open_err = |path: &Path| {
            let path = path.display().to_string();
            move |source| RuntimeError::Io { path, source }
        };
        // Read ends are opened before the shim opens the write ends (its open blocks until a
        // reader exists); stdin is opened read-write so the open does not need the shim's reader.
        let stdout_path = dir.fifo("stdout")?;
        let stdout = pipe::OpenOptions::new()
            .open_receiver(&stdout_path)
            .map_err(open_err(&stdout_path))?;
        let (stderr_path, stderr) = if spec.terminal {
            (None, None)
        } else {
            let p = dir.fifo("stderr")?;
            let r = pipe::OpenOptions::new()
                .open_receiver(&p)
                .map_err(open_err(&p))?;
            (Some(p), Some(r))
        };
        let (stdin_path, stdin) = if spec.stdin {
            let p = dir.fifo("stdin")?;
            let s = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(&p)
                .map_err(open_err(&p))?;
            (Some(p), Some(s))
        } else {
            (None, None)
        };
        let path_str = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        rpc(
            "exec",
            id,
            self.client.tasks().exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: path_str(&stdin_path),
                stdout: stdout_path.display().to_string(),
                stderr: path_str(&stderr_path),
                terminal: spec.terminal,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE_URL.into(),
                    value,
                }),
                exec_id: spec.exec_id.clone(),
            })),
        )
        .await?;
        let started = rpc(
            "start exec",
            id,
            self.client.tasks().start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: spec.exec_id.clone(),
            })),
        )
        .await;
        if let Err(e) = started {
            if let Err(d) = self.exec_remove(id, &spec.exec_id).await {
                tracing::warn!(container = %id, exec = %spec.exec_id, error = %d, "cannot remove an exec that failed to start");
            }
            return Err(e);
        }
        // The shim holds every FIFO open now: the names can go.
        drop(dir);
        let stdin = stdin.map(|pipe| {
            let tasks = self.client.tasks();
            let req = self.req(CloseIoRequest {
                container_id: id.to_string(),
                exec_id: spec.exec_id.clone(),
                stdin: true,
            });
            let (id, exec_id) = (id.to_string(), spec.exec_id.clone());
            let close: Box<dyn FnOnce() + Send> = Box::new(move || {
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                handle.spawn(async move {
                    let mut tasks = tasks;
                    if let Err(e) = rpc("close exec stdin", &id, tasks.close_io(req)).await {
                        if !e.is_not_found() {
                            tracing::warn!(container = %id, exec = %exec_id, error = %e, "cannot close an exec's stdin");
                        }
                    }
                });
            });
            Box::pin(Stdin {
                pipe: Some(pipe),
                close: Some(close),
            }) as Pin<Box<dyn AsyncWrite + Send>>
        });
        Ok(ExecIo {
            stdin,
            stdout: Box::pin(stdout),
            stderr: stderr.map(|r| Box::pin(r) as Pin<Box<dyn tokio::io::AsyncRead + Send>>),
        })
    }

    /// [`super::Runtime::exec_wait`] for containerd: a long poll with no timeout.
    pub(super) async fn exec_wait_exit(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<u32, RuntimeError> {
        let r = self
            .client
            .tasks()
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|source| RuntimeError::Call {
                op: "wait exec",
                id: format!("{id}/{exec_id}"),
                source,
            })?;
        Ok(r.into_inner().exit_status)
    }

    /// [`super::Runtime::exec_kill`] for containerd.
    pub(super) async fn exec_signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), RuntimeError> {
        let killed = rpc(
            "kill exec",
            id,
            self.client.tasks().kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                signal,
                all: false,
            })),
        )
        .await;
        // NotFound: it has exited already, nothing to signal.
        match killed {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`super::Runtime::exec_resize`] for containerd.
    pub(super) async fn exec_resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), RuntimeError> {
        rpc(
            "resize exec",
            id,
            self.client.tasks().resize_pty(self.req(ResizePtyRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                width,
                height,
            })),
        )
        .await
        .map(|_| ())
    }

    /// [`super::Runtime::exec_delete`] for containerd: succeeds when already gone.
    pub(super) async fn exec_remove(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let deleted = rpc(
            "delete exec",
            id,
            self.client
                .tasks()
                .delete_process(self.req(DeleteProcessRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                })),
        )
        .await;
        // A FIFO directory left by a start that failed half-way.
        let dir = self.exec_dir.join(format!("{id}.{exec_id}"));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an exec's FIFO directory");
            }
        }
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// [`super::Runtime::pids`] for containerd (Tasks.ListPids).
    pub(super) async fn list_pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        Ok(rpc(
            "list pids",
            id,
            self.client.tasks().list_pids(self.req(ListPidsRequest {
                container_id: id.to_string(),
            })),
        )
        .await?
        .into_inner()
        .processes
        .into_iter()
        .map(|p| p.pid)
        .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exec_takes_the_containers_process_with_its_own_command_env_and_terminal() {
        let container = json!({"process": {
            "user": {"uid": 1000, "gid": 1000},
            "args": ["httpd", "-f"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/srv",
            "terminal": true,
            "consoleSize": {"height": 24, "width": 80},
            "capabilities": {"bounding": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "apparmorProfile": "p",
            "noNewPrivileges": true
        }});
        let spec = ExecSpec {
            exec_id: "e1".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["A=2".into(), "B=3".into()],
            terminal: false,
            stdin: false,
        };
        let p = exec_process(&container, &spec);
        assert_eq!(p["args"], json!(["sh", "-c", "true"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(p["terminal"], json!(false));
        assert_eq!(p["cwd"], json!("/srv"));
        assert_eq!(p["user"], json!({"uid": 1000, "gid": 1000}));
        assert_eq!(p["capabilities"], json!({"bounding": ["CAP_KILL"]}));
        assert_eq!(p["rlimits"][0]["type"], json!("RLIMIT_NOFILE"));
        assert_eq!(p["apparmorProfile"], json!("p"));
        assert_eq!(p["noNewPrivileges"], json!(true));
        assert!(p.get("consoleSize").is_none());
    }

    #[test]
    fn a_spec_without_process_gets_a_working_directory() {
        let p = exec_process(&json!({}), &ExecSpec::default());
        assert_eq!(p["cwd"], json!("/"));
    }
}
