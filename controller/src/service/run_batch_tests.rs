//! RunTask's group commit: requests of one batch see each other's reservations, share one
//! transaction, and all fail with nothing changed when it fails.

use super::super::test_support::{instance_with, register_td};
use super::super::*;
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A store that counts its commits and fails them on demand.
#[derive(Default)]
struct CountingStore {
    inner: MemoryStore,
    commits: AtomicUsize,
    fail: AtomicBool,
}

impl Store for CountingStore {
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(prefix)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend {
                op: "commit",
                message: "injected failure".into(),
            });
        }
        self.inner.commit(writes)
    }
}

fn setup() -> (Arc<Controller>, Arc<CountingStore>) {
    let store = Arc::new(CountingStore::default());
    let c = Controller::load(store.clone(), Arc::new(Fleet::default())).unwrap();
    (Arc::new(c), store)
}

fn run(token: Option<&str>) -> RunTaskRequest {
    RunTaskRequest {
        task_definition: "web".into(),
        client_token: token.map(str::to_string),
        ..Default::default()
    }
}

/// Runs `reqs` concurrently so that they all land in one batch: the state lock is held until
/// every request is queued, then released; returns each request's answer in order.
async fn one_batch(
    c: &Arc<Controller>,
    reqs: Vec<RunTaskRequest>,
) -> Vec<Result<RunTaskResponse, EcsError>> {
    let n = reqs.len();
    let held = c.state.lock().await;
    let handles: Vec<_> = reqs
        .into_iter()
        .map(|r| {
            let c = c.clone();
            tokio::spawn(async move { c.run_task(r).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.run_queue.lock().unwrap().len() < n {
        assert!(Instant::now() < deadline, "requests were not queued");
        tokio::task::yield_now().await;
    }
    drop(held);
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Two RunTasks in one batch that together need more memory than the only instance has: one
/// gets the instance, the other RESOURCE:MEMORY; never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_never_double_books_an_instance() {
    let (c, store) = setup();
    let (arn, _s) = instance_with(&c, 4096, 1024, vec![]).await;
    register_td(
        &c,
        r#"{"family":"web","memory":"768","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    )
    .await;
    let before = store.commits.load(Ordering::SeqCst);
    let out = one_batch(&c, vec![run(None), run(None)]).await;
    assert_eq!(store.commits.load(Ordering::SeqCst) - before, 1);
    let placed: usize = out.iter().map(|r| r.as_ref().unwrap().tasks.len()).sum();
    assert_eq!(placed, 1, "{out:?}");
    let refused: Vec<&Failure> = out
        .iter()
        .flat_map(|r| r.as_ref().unwrap().failures.iter())
        .collect();
    assert_eq!(refused.len(), 1, "{out:?}");
    assert_eq!(refused[0].arn, arn);
    assert_eq!(refused[0].reason, "RESOURCE:MEMORY");
    let st = c.state.lock().await;
    assert_eq!(st.tasks.len(), 1);
}

/// A batch whose commit fails: every request gets the store's error and nothing changed (no
/// task, no token); the same requests succeed once the store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_commit_changes_nothing_and_fails_every_request() {
    let (c, store) = setup();
    let _i = instance_with(&c, 4096, 4096, vec![]).await;
    register_td(
        &c,
        r#"{"family":"web","memory":"256","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    )
    .await;
    store.fail.store(true, Ordering::SeqCst);
    let before = store.commits.load(Ordering::SeqCst);
    let reqs = vec![run(Some("t1")), run(None), run(Some("t3"))];
    let out = one_batch(&c, reqs.clone()).await;
    assert_eq!(store.commits.load(Ordering::SeqCst) - before, 1);
    for r in &out {
        assert!(
            matches!(r, Err(EcsError::Store(_))),
            "every request fails: {r:?}"
        );
    }
    {
        let st = c.state.lock().await;
        assert!(st.tasks.is_empty());
        assert!(st.active.is_empty());
        assert!(st.run_tokens.is_empty());
    }
    assert!(store
        .inner
        .scan("")
        .unwrap()
        .iter()
        .all(|(k, _)| !k.starts_with(TASK_PREFIX)));
    store.fail.store(false, Ordering::SeqCst);
    let out = one_batch(&c, reqs).await;
    for r in &out {
        assert_eq!(r.as_ref().unwrap().tasks.len(), 1, "{r:?}");
    }
    assert_eq!(c.state.lock().await.tasks.len(), 3);
}

/// N concurrent RunTasks commit in fewer than N transactions (here: one), and each gets its
/// own tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_run_tasks_share_a_transaction() {
    let (c, store) = setup();
    let _i = instance_with(&c, 65536, 65536, vec![]).await;
    register_td(
        &c,
        r#"{"family":"web","memory":"128","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    )
    .await;
    let n = 16;
    let before = store.commits.load(Ordering::SeqCst);
    let out = one_batch(&c, (0..n).map(|_| run(None)).collect()).await;
    let commits = store.commits.load(Ordering::SeqCst) - before;
    assert!(commits < n, "{commits} transactions for {n} RunTasks");
    let mut arns: Vec<String> = out
        .iter()
        .flat_map(|r| r.as_ref().unwrap().tasks.iter().map(|t| t.task_arn.clone()))
        .collect();
    arns.sort();
    arns.dedup();
    assert_eq!(arns.len(), n);
    assert_eq!(c.state.lock().await.tasks.len(), n);
}

/// The same clientToken twice in one batch starts the tasks once: the second request is
/// answered from the first's record (the same task), a different request with it conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_token_twice_in_a_batch_starts_once() {
    let (c, _store) = setup();
    let _i = instance_with(&c, 4096, 4096, vec![]).await;
    register_td(
        &c,
        r#"{"family":"web","memory":"128","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    )
    .await;
    let mut other = run(Some("tok"));
    other.started_by = Some("someone-else".into());
    let out = one_batch(&c, vec![run(Some("tok")), run(Some("tok")), other]).await;
    let first = &out[0].as_ref().unwrap().tasks;
    let second = &out[1].as_ref().unwrap().tasks;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].task_arn, second[0].task_arn);
    assert!(
        matches!(out[2], Err(EcsError::Conflict { .. })),
        "{:?}",
        out[2]
    );
    assert_eq!(c.state.lock().await.tasks.len(), 1);
}
