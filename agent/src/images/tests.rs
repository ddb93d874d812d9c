use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

/// An image store whose pulls count themselves and wait for a permit, and can fail.
#[derive(Debug)]
struct FakeStore {
    local: Mutex<Option<LocalImage>>,
    pulls: AtomicUsize,
    fail_pull: bool,
    gate: Semaphore,
}

impl FakeStore {
    fn new(local: Option<ImageSource>, fail_pull: bool) -> Arc<Self> {
        Arc::new(Self {
            local: Mutex::new(local.map(|source| LocalImage {
                name: "docker.io/library/app:1".into(),
                source,
                ..Default::default()
            })),
            pulls: AtomicUsize::new(0),
            fail_pull,
            gate: Semaphore::new(1_000),
        })
    }
    fn pulls(&self) -> usize {
        self.pulls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ImageStore for FakeStore {
    async fn local_image(&self, _: &str) -> Result<Option<LocalImage>, RuntimeError> {
        Ok(self.local.lock().unwrap().clone())
    }
    async fn pull(
        &self,
        reference: &str,
        _: Option<&Credentials>,
        progress: &watch::Sender<PullState>,
    ) -> Result<String, RuntimeError> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        progress.send_replace(PullState {
            phase: PullPhase::Downloading,
            layers_total: 2,
            bytes_total: 100,
            ..Default::default()
        });
        let _permit = self.gate.acquire().await.unwrap();
        if self.fail_pull {
            return Err(RuntimeError::Pull {
                image: reference.into(),
                message: "unauthorized: authentication required".into(),
            });
        }
        *self.local.lock().unwrap() = Some(LocalImage {
            name: reference.into(),
            source: ImageSource::Pull,
            ..Default::default()
        });
        progress.send_modify(|p| p.phase = PullPhase::Done);
        Ok(reference.into())
    }
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        match &*self.local.lock().unwrap() {
            Some(_) => Ok(ImageConfig {
                name: reference.into(),
                ..Default::default()
            }),
            None => Err(RuntimeError::ImageNotFound(reference.into())),
        }
    }
    async fn mark_image_used(&self, _: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
}

async fn ensure(behavior: PullBehavior, store: &Arc<FakeStore>) -> Result<Ensured, RuntimeError> {
    let images = Images::new(behavior, Duration::from_secs(60));
    let (tx, _rx) = watch::channel(PullState::default());
    images
        .ensure(store.clone(), "docker.io/library/app:1", None, &tx)
        .await
}

#[tokio::test]
async fn each_behaviour_pulls_exactly_when_ecs_would() {
    use ImageSource::*;
    use PullBehavior::*;
    // (behaviour, what the store holds, whether a pull happens)
    let table = [
        (Default, None, true),
        (Default, Some(Pull), true),
        (Default, Some(Other), true),
        (Default, Some(Load), false),
        (Always, None, true),
        (Always, Some(Pull), true),
        (Always, Some(Load), true),
        (Once, None, true),
        (Once, Some(Pull), false),
        (Once, Some(Other), true),
        (Once, Some(Load), false),
        (PreferCached, None, true),
        (PreferCached, Some(Pull), false),
        (PreferCached, Some(Other), false),
        (PreferCached, Some(Load), false),
    ];
    for (behavior, local, pulls) in table {
        let store = FakeStore::new(local, false);
        let got = ensure(behavior, &store).await.unwrap();
        assert_eq!(
            store.pulls(),
            usize::from(pulls),
            "{behavior:?} with {local:?}"
        );
        assert_eq!(got.pulled, pulls, "{behavior:?} with {local:?}");
    }
}

#[tokio::test]
async fn a_failed_pull_runs_the_cached_image_only_where_the_behaviour_allows() {
    // default: the cached image, and why the pull failed.
    let store = FakeStore::new(Some(ImageSource::Pull), true);
    let got = ensure(PullBehavior::Default, &store).await.unwrap();
    assert!(!got.pulled);
    assert!(got.fell_back.unwrap().contains("authentication required"));
    // always: the task fails with the registry's words.
    let store = FakeStore::new(Some(ImageSource::Pull), true);
    let e = ensure(PullBehavior::Always, &store).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("unauthorized: authentication required"),
        "{e}"
    );
    // Nothing cached: every behaviour fails.
    for b in [
        PullBehavior::Default,
        PullBehavior::Once,
        PullBehavior::PreferCached,
    ] {
        let store = FakeStore::new(None, true);
        assert!(ensure(b, &store).await.is_err(), "{b:?}");
    }
}

#[tokio::test]
async fn ten_tasks_wanting_one_new_image_share_one_pull_and_its_progress() {
    let store = FakeStore::new(None, false);
    let held = store.gate.acquire_many(1_000).await.unwrap();
    let images = Arc::new(Images::new(PullBehavior::Default, Duration::from_secs(60)));
    let mut waiters = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..10 {
        let (tx, rx) = watch::channel(PullState::default());
        progress.push(rx);
        let (images, store) = (images.clone(), store.clone());
        waiters.push(tokio::spawn(async move {
            images
                .ensure(store, "docker.io/library/app:1", None, &tx)
                .await
        }));
    }
    // Every waiter sees the one pull's progress while it runs.
    for rx in &mut progress {
        rx.wait_for(|p| p.phase == PullPhase::Downloading && p.bytes_total == 100)
            .await
            .unwrap();
    }
    assert_eq!(store.pulls(), 1);
    drop(held);
    for w in waiters {
        assert!(w.await.unwrap().unwrap().pulled);
    }
    assert_eq!(store.pulls(), 1);
    // Once it is over, the next task that wants a pull gets a new one.
    let (tx, _rx) = watch::channel(PullState::default());
    let again = Images::new(PullBehavior::Always, Duration::from_secs(60));
    again
        .ensure(store.clone(), "docker.io/library/app:1", None, &tx)
        .await
        .unwrap();
    images
        .ensure(store.clone(), "docker.io/library/app:1", None, &tx)
        .await
        .unwrap();
    assert_eq!(store.pulls(), 3, "a finished pull is never joined");
}

#[test]
fn pull_behaviours_parse_by_ecs_name_and_bad_ones_are_named() {
    assert_eq!("prefer-cached".parse(), Ok(PullBehavior::PreferCached));
    assert_eq!("once".parse(), Ok(PullBehavior::Once));
    let e = "sometimes".parse::<PullBehavior>().unwrap_err();
    assert!(
        e.contains("'sometimes'") && e.contains("prefer-cached"),
        "{e}"
    );
}

#[tokio::test]
async fn a_registry_not_allowed_is_never_reached_and_is_named() {
    let images = Images::new(PullBehavior::Always, Duration::from_secs(60))
        .with_allowed_registries(vec!["127.0.0.1".into(), "reg.lab:5000".into()]);
    let (tx, _rx) = watch::channel(PullState::default());
    for ok in ["127.0.0.1:5055/app:1", "reg.lab:5000/app:1"] {
        let store = FakeStore::new(None, false);
        images.ensure(store.clone(), ok, None, &tx).await.unwrap();
        assert_eq!(store.pulls(), 1, "{ok}");
    }
    for refused in ["nginx:alpine", "reg.lab:5001/app:1"] {
        let store = FakeStore::new(None, false);
        let e = images
            .ensure(store.clone(), refused, None, &tx)
            .await
            .unwrap_err();
        assert_eq!(store.pulls(), 0, "{refused}");
        assert!(e.to_string().contains("--allowed-registry"), "{e}");
    }
}
