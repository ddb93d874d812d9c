//! ExecuteCommand sessions routed over the agents' links. A session belongs to the link of the
//! instance holding its task; what the agent sends for it is handed on without ever blocking
//! the link's reader (the agent's output window bounds what can be in flight, so a buffer of
//! that size never fills unless the agent breaks the protocol; then the session ends, never
//! the link). A link that ends or is replaced ends its sessions.

use berth_proto::link::EXEC_OUTPUT_WINDOW;
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::{ExecCancel, ExecStart};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::warn;

/// What the agent said about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The process runs.
    Started,
    /// Output of the process.
    Output {
        /// The bytes.
        data: Vec<u8>,
        /// From stderr.
        stderr: bool,
    },
    /// The session ended: the exit status, or why the process could not run.
    Exit {
        /// The exit status.
        code: Option<i32>,
        /// Why there is none.
        error: Option<String>,
    },
}

/// Why a session could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No agent link for the instance.
    #[error("no agent is connected for container instance {0}")]
    NotConnected(String),
}

/// What became of a message from an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handed to its session.
    Delivered,
    /// No such session on this link (ended, or another instance's): dropped.
    Unknown,
    /// The session's buffer was full (the agent sent beyond its window): the session ended.
    Overrun,
}

/// How many messages to the agents' links may wait (stdin, resizes, credits, cancels).
pub const LINK_OUTBOX: usize = 256;
/// What a session buffers from the agent: its output window, and room for the start and exit.
const SESSION_BUFFER: usize = EXEC_OUTPUT_WINDOW as usize + 4;

struct Link {
    id: u64,
    tx: mpsc::Sender<ToAgent>,
}

struct Route {
    instance: String,
    link: u64,
    tx: mpsc::Sender<ExecEvent>,
}

/// The links that carry sessions, and the sessions open on them.
#[derive(Default)]
pub struct ExecRoutes {
    links: Mutex<HashMap<String, Link>>,
    sessions: Mutex<HashMap<String, Route>>,
    next: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ExecRoutes {
    /// Registers the link of `instance`, replacing an older one (whose sessions end); returns
    /// its id and the messages to send on it.
    pub fn attach_link(&self, instance: &str) -> (u64, mpsc::Receiver<ToAgent>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(LINK_OUTBOX);
        if let Some(old) = lock(&self.links).insert(instance.to_string(), Link { id, tx }) {
            self.end_sessions(instance, old.id);
        }
        (id, rx)
    }

    /// The link `id` of `instance` ended: its sessions end (their events close without an exit).
    pub fn detach_link(&self, instance: &str, id: u64) {
        let mut links = lock(&self.links);
        if links.get(instance).is_some_and(|l| l.id == id) {
            links.remove(instance);
        }
        drop(links);
        self.end_sessions(instance, id);
    }

    fn end_sessions(&self, instance: &str, link: u64) {
        lock(&self.sessions).retain(|_, r| !(r.instance == instance && r.link == link));
    }

    /// Opens a session on the link of `instance` and sends it the start.
    pub async fn open(
        self: &Arc<Self>,
        instance: &str,
        start: ExecStart,
    ) -> Result<ExecSession, RouteError> {
        let not_connected = || RouteError::NotConnected(instance.to_string());
        let (link, tx) = {
            let links = lock(&self.links);
            let l = links.get(instance).ok_or_else(not_connected)?;
            (l.id, l.tx.clone())
        };
        let (events_tx, events) = mpsc::channel(SESSION_BUFFER);
        let id = start.session_id.clone();
        lock(&self.sessions).insert(
            id.clone(),
            Route {
                instance: instance.to_string(),
                link,
                tx: events_tx,
            },
        );
        let session = ExecSession {
            routes: self.clone(),
            id,
            link: tx,
            events,
            finished: false,
        };
        session
            .link
            .send(ToAgent::ExecStart(start))
            .await
            .map_err(|_| not_connected())?;
        Ok(session)
    }

    /// Hands what the agent of `instance` (on link `link`) sent for `session_id` to the
    /// session; never waits. An agent reaches only sessions open on its own link.
    pub fn deliver(
        &self,
        instance: &str,
        link: u64,
        session_id: &str,
        event: ExecEvent,
    ) -> Delivery {
        let mut sessions = lock(&self.sessions);
        let Some(route) = sessions
            .get(session_id)
            .filter(|r| r.instance == instance && r.link == link)
        else {
            return Delivery::Unknown;
        };
        let last = matches!(event, ExecEvent::Exit { .. });
        match route.tx.try_send(event) {
            Ok(()) => {
                if last {
                    sessions.remove(session_id);
                }
                Delivery::Delivered
            }
            Err(TrySendError::Full(_)) => {
                warn!(session = %session_id, %instance, "the agent sent beyond its output window; ending the session");
                sessions.remove(session_id);
                Delivery::Overrun
            }
            Err(TrySendError::Closed(_)) => {
                sessions.remove(session_id);
                Delivery::Unknown
            }
        }
    }

    /// How many sessions are open (all links).
    pub fn open_sessions(&self) -> usize {
        lock(&self.sessions).len()
    }
}

/// An open session. Dropped before the agent reported its end, it cancels the process.
pub struct ExecSession {
    routes: Arc<ExecRoutes>,
    /// The session id.
    pub id: String,
    link: mpsc::Sender<ToAgent>,
    /// What the agent says; closes without an `Exit` when the link ended or the agent overran.
    pub events: mpsc::Receiver<ExecEvent>,
    finished: bool,
}

impl ExecSession {
    /// Sends `m` on the session's link (waiting for room); false when the link is gone.
    pub async fn send(&self, m: ToAgent) -> bool {
        self.link.send(m).await.is_ok()
    }

    /// The agent reported the end: nothing to cancel.
    pub fn finished(&mut self) {
        self.finished = true;
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        lock(&self.routes.sessions).remove(&self.id);
        if self.finished {
            return;
        }
        let cancel = ToAgent::ExecCancel(ExecCancel {
            session_id: self.id.clone(),
        });
        if let Err(TrySendError::Full(cancel)) = self.link.try_send(cancel) {
            // The outbox is full: send it once there is room, without holding anyone up.
            let link = self.link.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = link.send(cancel).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: &str) -> ExecStart {
        ExecStart {
            session_id: id.into(),
            task_arn: "t".into(),
            container_name: "c".into(),
            args: vec!["id".into()],
            ..Default::default()
        }
    }

    fn out(n: u8) -> ExecEvent {
        ExecEvent::Output {
            data: vec![n],
            stderr: false,
        }
    }

    #[tokio::test]
    async fn a_session_goes_to_its_instances_link_and_hears_only_that_agent() {
        let routes = Arc::new(ExecRoutes::default());
        let e = routes.open("i1", start("s1")).await.err();
        assert_eq!(e, Some(RouteError::NotConnected("i1".into())));
        let (l1, mut rx1) = routes.attach_link("i1");
        let (l2, mut rx2) = routes.attach_link("i2");
        let mut s = routes.open("i1", start("s1")).await.unwrap();
        assert!(matches!(rx1.try_recv(), Ok(ToAgent::ExecStart(x)) if x.session_id == "s1"));
        assert!(rx2.try_recv().is_err());
        // Another instance's agent cannot write into the session.
        assert_eq!(routes.deliver("i2", l2, "s1", out(1)), Delivery::Unknown);
        assert_eq!(routes.deliver("i1", l1, "s1", out(2)), Delivery::Delivered);
        assert_eq!(s.events.try_recv(), Ok(out(2)));
        let exit = ExecEvent::Exit {
            code: Some(3),
            error: None,
        };
        assert_eq!(
            routes.deliver("i1", l1, "s1", exit.clone()),
            Delivery::Delivered
        );
        assert_eq!(s.events.try_recv(), Ok(exit));
        assert_eq!(routes.open_sessions(), 0);
        s.finished();
        drop(s);
        assert!(rx1.try_recv().is_err(), "no cancel after the exit");
    }

    #[tokio::test]
    async fn a_dropped_session_cancels_and_a_lost_link_ends_its_sessions() {
        let routes = Arc::new(ExecRoutes::default());
        let (l1, mut rx) = routes.attach_link("i1");
        let s = routes.open("i1", start("s1")).await.unwrap();
        let _ = rx.try_recv();
        drop(s);
        assert!(matches!(rx.try_recv(), Ok(ToAgent::ExecCancel(c)) if c.session_id == "s1"));
        assert_eq!(routes.deliver("i1", l1, "s1", out(1)), Delivery::Unknown);

        let mut s = routes.open("i1", start("s2")).await.unwrap();
        routes.detach_link("i1", l1);
        assert_eq!(s.events.recv().await, None, "events close without an exit");
        // A replaced link ends the old link's sessions too.
        let (l2, _rx2) = routes.attach_link("i1");
        let mut s3 = routes.open("i1", start("s3")).await.unwrap();
        let (_l3, _rx3) = routes.attach_link("i1");
        assert_eq!(s3.events.recv().await, None);
        assert_eq!(routes.deliver("i1", l2, "s3", out(1)), Delivery::Unknown);
    }

    #[tokio::test]
    async fn an_agent_beyond_its_window_ends_the_session_not_the_reader() {
        let routes = Arc::new(ExecRoutes::default());
        let (l, _rx) = routes.attach_link("i1");
        let mut s = routes.open("i1", start("s1")).await.unwrap();
        for n in 0..SESSION_BUFFER {
            assert_eq!(
                routes.deliver("i1", l, "s1", out(n as u8)),
                Delivery::Delivered
            );
        }
        // Nobody reads: the next one does not wait, it ends the session.
        assert_eq!(routes.deliver("i1", l, "s1", out(0)), Delivery::Overrun);
        assert_eq!(routes.deliver("i1", l, "s1", out(0)), Delivery::Unknown);
        let mut n = 0;
        while s.events.recv().await.is_some() {
            n += 1;
        }
        assert_eq!(n, SESSION_BUFFER);
    }
}
