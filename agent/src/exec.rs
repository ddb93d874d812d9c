//! ExecuteCommand sessions on this agent (issue 9): the controller starts a process in a task's
//! container over the link (ExecStart), feeds its stdin, resizes its terminal and cancels it;
//! the agent streams its output back and reports its exit status (exec.proto).
//!
//! Flow control: a session sends at most `EXEC_OUTPUT_WINDOW` output messages beyond what the
//! controller granted back (`ExecInput.credit`), so a slow client holds back its own session's
//! output and never the link: what sessions send waits in a small outbox of its own, which the
//! link's writer drains only when no task report is waiting (`session::exchange`). Nothing the
//! controller sends for a session blocks the link's reader: stdin waits in a bounded queue per
//! session (a session whose process does not read that much stdin is ended), resizes keep the
//! latest, credits are counted.
//!
//! A session ends when its process exits (its container stopping kills it), on ExecCancel, or
//! when the link session ends (the controller has forgotten it): the process is killed. Every
//! exec process is deleted from containerd when its session ends.

use crate::cgroups::Cgroups;
use crate::engine::Engine;
use crate::runtime::{ExecSpec, Runtime};
use berth_proto::link::{EXEC_CHUNK, EXEC_OUTPUT_WINDOW};
use berth_proto::v1::agent_message::Message as ToController;
use berth_proto::v1::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn, Instrument as _};

/// Stdin chunks a session queues before it is ended for not reading them.
const STDIN_QUEUE: usize = 1024;
/// How long output may keep coming after the process exited (a terminal held open by a
/// process it started in the background) before the session reports the exit anyway.
const DRAIN: Duration = Duration::from_secs(5);

struct Handle {
    stdin: mpsc::Sender<Input>,
    window: watch::Sender<Option<WindowSize>>,
    credit: Arc<Semaphore>,
    cancel: watch::Sender<bool>,
}

enum Input {
    Data(Vec<u8>),
    Eof,
}

/// The sessions of one link session. Dropping it ends them all (their processes are killed).
pub struct ExecSessions<R: Runtime, C: Cgroups> {
    engine: Engine<R, C>,
    out: mpsc::Sender<AgentMessage>,
    sessions: Arc<Mutex<HashMap<String, Handle>>>,
}

fn msg(m: ToController) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

fn exit(session_id: &str, code: Option<i32>, error: Option<String>) -> AgentMessage {
    msg(ToController::ExecExit(ExecExit {
        session_id: session_id.to_string(),
        exit_code: code,
        error,
    }))
}

impl<R: Runtime, C: Cgroups> ExecSessions<R, C> {
    /// Sessions whose messages go to `out` (the link writer's exec outbox).
    pub fn new(engine: Engine<R, C>, out: mpsc::Sender<AgentMessage>) -> Self {
        Self {
            engine,
            out,
            sessions: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Handle>) -> T) -> T {
        let mut s = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s)
    }

    /// Starts a session (in the background; its start, output and exit go to the outbox).
    pub fn start(&self, s: ExecStart) {
        let id = s.session_id.clone();
        let refuse = |why: String| {
            warn!(session = %id, task = %s.task_arn, container = %s.container_name, "ExecuteCommand refused: {why}");
            // The outbox is small but this is rare; never wait on it here.
            let out = self.out.clone();
            let m = exit(&id, None, Some(why));
            tokio::spawn(async move {
                let _ = out.send(m).await;
            });
        };
        if self.with(|m| m.contains_key(&id)) {
            return refuse(format!("session {id} is already open"));
        }
        let container_id = match self.engine.exec_target(&s.task_arn, &s.container_name) {
            Ok(c) => c,
            Err(why) => return refuse(why),
        };
        let (stdin_tx, stdin_rx) = mpsc::channel(STDIN_QUEUE);
        let (window_tx, window_rx) = watch::channel(s.window);
        let credit = Arc::new(Semaphore::new(EXEC_OUTPUT_WINDOW as usize));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        self.with(|m| {
            m.insert(
                id.clone(),
                Handle {
                    stdin: stdin_tx,
                    window: window_tx,
                    credit: credit.clone(),
                    cancel: cancel_tx,
                },
            )
        });
        let session = Session {
            runtime: self.engine.runtime(),
            timeout: self.engine.call_timeout(),
            container_id,
            start: s,
            out: self.out.clone(),
            credit,
        };
        let sessions = self.sessions.clone();
        let span = tracing::info_span!("exec", session = %id);
        tokio::spawn(
            async move {
                session.run(stdin_rx, window_rx, cancel_rx).await;
                sessions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&id);
            }
            .instrument(span),
        );
    }

    /// Stdin, an end of stdin or credit for a session; never waits.
    pub fn input(&self, i: ExecInput) {
        self.with(|m| {
            let Some(h) = m.get(&i.session_id) else {
                return;
            };
            if i.credit > 0 {
                h.credit.add_permits(i.credit as usize);
            }
            let mut queued = true;
            if !i.data.is_empty() {
                queued = h.stdin.try_send(Input::Data(i.data)).is_ok();
            }
            if queued && i.eof {
                queued = h.stdin.try_send(Input::Eof).is_ok();
            }
            if !queued {
                warn!(session = %i.session_id, "the process does not read its stdin; ending the session");
                let _ = h.cancel.send(true);
            }
        })
    }

    /// A new terminal size for a session.
    pub fn resize(&self, r: ExecResize) {
        self.with(|m| {
            if let Some(h) = m.get(&r.session_id) {
                h.window.send_replace(r.window);
            }
        })
    }

    /// Ends a session: its process is killed.
    pub fn cancel(&self, c: ExecCancel) {
        self.with(|m| {
            if let Some(h) = m.get(&c.session_id) {
                let _ = h.cancel.send(true);
            }
        })
    }

    /// How many sessions run.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<R: Runtime, C: Cgroups> Drop for ExecSessions<R, C> {
    fn drop(&mut self) {
        self.with(|m| {
            for h in m.values() {
                let _ = h.cancel.send(true);
            }
        })
    }
}

/// One session's process.
struct Session<R> {
    runtime: Arc<R>,
    timeout: Duration,
    container_id: String,
    start: ExecStart,
    out: mpsc::Sender<AgentMessage>,
    credit: Arc<Semaphore>,
}

impl<R: Runtime> Session<R> {
    async fn run(
        self,
        mut stdin_rx: mpsc::Receiver<Input>,
        mut window: watch::Receiver<Option<WindowSize>>,
        mut cancel: watch::Receiver<bool>,
    ) {
        let id = self.start.session_id.clone();
        let cid = self.container_id.clone();
        let mut env = Vec::new();
        if self.start.terminal {
            // As `docker exec -t` does: a terminal needs a TERM for most programs to use it.
            env.push("TERM=xterm".to_string());
        }
        let spec = ExecSpec {
            exec_id: id.clone(),
            args: self.start.args.clone(),
            env,
            terminal: self.start.terminal,
            stdin: true,
        };
        let io = match tokio::time::timeout(self.timeout, self.runtime.exec(&cid, &spec)).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                warn!(container = %cid, error = %e, "ExecuteCommand: exec failed");
                let _ = self.out.send(exit(&id, None, Some(e.message()))).await;
                self.delete(&cid, &id).await;
                return;
            }
            Err(_) => {
                let why = format!(
                    "containerd did not start the process within {:?}",
                    self.timeout
                );
                let _ = self.out.send(exit(&id, None, Some(why))).await;
                self.delete(&cid, &id).await;
                return;
            }
        };
        info!(task = %self.start.task_arn, container = %self.start.container_name, args = ?self.start.args,
            terminal = self.start.terminal, "ExecuteCommand session started");
        let _ = self
            .out
            .send(msg(ToController::ExecStarted(ExecStarted {
                session_id: id.clone(),
            })))
            .await;
        if self.start.terminal {
            let w = *window.borrow_and_update();
            if let Some(w) = w {
                self.resize(&cid, &id, w).await;
            }
        }
        let mut readers = tokio::task::JoinSet::new();
        readers.spawn(pump_output(
            io.stdout,
            false,
            id.clone(),
            self.out.clone(),
            self.credit.clone(),
        ));
        if let Some(stderr) = io.stderr {
            readers.spawn(pump_output(
                stderr,
                true,
                id.clone(),
                self.out.clone(),
                self.credit.clone(),
            ));
        }
        // Stdin on a task of its own: a process that does not read it must not hold up
        // resizes, the cancel or the exit.
        let mut stdin = io.stdin;
        let feeder = tokio::spawn(async move {
            while let Some(i) = stdin_rx.recv().await {
                match (i, stdin.as_mut()) {
                    (Input::Data(d), Some(w)) => {
                        if w.write_all(&d).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                    (Input::Eof, Some(w)) => {
                        let _ = w.shutdown().await;
                        stdin = None;
                    }
                    (_, None) => {}
                }
            }
        });
        let wait = self.runtime.exec_wait(&cid, &id);
        tokio::pin!(wait);
        let mut killed = false;
        let mut resizes = true;
        let status = loop {
            tokio::select! {
                r = &mut wait => break r,
                r = window.changed(), if resizes => {
                    resizes = r.is_ok();
                    let w = if resizes { *window.borrow_and_update() } else { None };
                    if let Some(w) = w {
                        self.resize(&cid, &id, w).await;
                    }
                }
                r = cancel.changed(), if !killed => {
                    if r.is_err() || *cancel.borrow() {
                        killed = true;
                        info!("ExecuteCommand session cancelled; killing its process");
                        let kill = self.runtime.exec_kill(&cid, &id, nix::sys::signal::Signal::SIGKILL as u32);
                        match tokio::time::timeout(self.timeout, kill).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => warn!(error = %e, "killing the exec process"),
                            Err(_) => warn!("killing the exec process: no answer in time"),
                        }
                    }
                }
            }
        };
        feeder.abort();
        // Everything the process wrote goes out before its exit status.
        let drained = tokio::time::timeout(DRAIN, async {
            while readers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("output still open {DRAIN:?} after the process exited; reporting the exit");
            readers.abort_all();
        }
        let (code, error) = match status {
            Ok(s) => (Some(s as i32), None),
            Err(e) => (None, Some(e.message())),
        };
        info!(exit_code = ?code, error = ?error, killed, "ExecuteCommand session ended");
        let _ = self.out.send(exit(&id, code, error)).await;
        self.delete(&cid, &id).await;
    }

    async fn resize(&self, cid: &str, id: &str, w: WindowSize) {
        let r = self.runtime.exec_resize(cid, id, w.columns, w.rows);
        match tokio::time::timeout(self.timeout, r).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "resizing the exec terminal"),
            Err(_) => warn!("resizing the exec terminal: no answer in time"),
        }
    }

    async fn delete(&self, cid: &str, id: &str) {
        match tokio::time::timeout(self.timeout, self.runtime.exec_delete(cid, id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "deleting the exec process"),
            Err(_) => warn!("deleting the exec process: no answer in time"),
        }
    }
}

/// Sends what `r` yields as ExecOutput, each message taking one credit.
async fn pump_output(
    mut r: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    stderr: bool,
    session_id: String,
    out: mpsc::Sender<AgentMessage>,
    credit: Arc<Semaphore>,
) {
    let mut buf = vec![0u8; EXEC_CHUNK];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match credit.acquire().await {
            Ok(p) => p.forget(),
            Err(_) => return,
        }
        let m = msg(ToController::ExecOutput(ExecOutput {
            session_id: session_id.clone(),
            data: buf[..n].to_vec(),
            stderr,
        }));
        if out.send(m).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output beyond the window waits for credit: a slow client holds back its own session,
    /// and what was read goes out in order once credit comes.
    #[tokio::test]
    async fn output_waits_for_credit_beyond_the_window() {
        let (mut w, r) = tokio::io::duplex(64);
        let (tx, mut rx) = mpsc::channel(1000);
        let credit = Arc::new(Semaphore::new(2));
        let pump = tokio::spawn(pump_output(
            Box::pin(r),
            false,
            "s1".into(),
            tx,
            credit.clone(),
        ));
        let data = |m: AgentMessage| match m.message {
            Some(ToController::ExecOutput(o)) => (o.session_id, o.data),
            other => panic!("{other:?}"),
        };
        w.write_all(b"a").await.unwrap();
        assert_eq!(data(rx.recv().await.unwrap()), ("s1".into(), b"a".to_vec()));
        w.write_all(b"b").await.unwrap();
        assert_eq!(data(rx.recv().await.unwrap()).1, b"b");
        // The window is used up: the third waits.
        w.write_all(b"c").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(waited.is_err(), "sent without credit: {waited:?}");
        credit.add_permits(1);
        assert_eq!(data(rx.recv().await.unwrap()).1, b"c");
        drop(w);
        pump.await.unwrap();
        assert!(rx.recv().await.is_none());
    }
}
