//! Image cleanup (issue 11), as the ECS agent's: every interval, the images this agent pulled
//! that no task it holds uses (a stopped task counts until it is cleaned up) and that are older
//! than the minimum age are removed, least recently used first, a bounded number per cycle.
//! Images loaded by hand are kept unless configured otherwise; images something else put in the
//! namespace (`ctr images pull`) are never touched.

use crate::runtime::{ImageSource, LocalImage, Runtime, RuntimeError};
use std::collections::HashSet;
use std::time::{Duration, SystemTime};
use tracing::{info, warn};

/// ECS_IMAGE_CLEANUP_INTERVAL, ECS_IMAGE_MINIMUM_CLEANUP_AGE, ECS_NUM_IMAGES_DELETE_PER_CYCLE.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    /// Between passes; zero: no cleanup.
    pub interval: Duration,
    /// An image younger than this (since its pull, or its record's creation) stays.
    pub minimum_age: Duration,
    /// At most this many removals a pass.
    pub per_cycle: usize,
    /// Images loaded by hand may go too.
    pub include_loaded: bool,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1800),
            minimum_age: Duration::from_secs(3600),
            per_cycle: 5,
            include_loaded: false,
        }
    }
}

/// Which images a pass removes, in order: a pure choice over the store's records.
pub fn choose(
    images: &[LocalImage],
    in_use: &HashSet<String>,
    config: &CleanupConfig,
    now: SystemTime,
) -> Vec<String> {
    let mut candidates: Vec<&LocalImage> = images
        .iter()
        .filter(|i| !in_use.contains(&i.name))
        .filter(|i| match i.source {
            ImageSource::Pull => true,
            ImageSource::Load => config.include_loaded,
            ImageSource::Other => false,
        })
        .filter(|i| {
            let born = i.pulled_at.or(i.created_at).unwrap_or(now);
            now.duration_since(born).unwrap_or_default() >= config.minimum_age
        })
        .collect();
    // Least recently used first; never used counts from its pull.
    candidates.sort_by_key(|i| (i.last_used.or(i.pulled_at).or(i.created_at), i.name.clone()));
    candidates
        .into_iter()
        .take(config.per_cycle)
        .map(|i| i.name.clone())
        .collect()
}

/// One pass: removes what [`choose`] picks. Returns the names removed.
pub async fn clean_once<R: Runtime + ?Sized>(
    runtime: &R,
    in_use: &HashSet<String>,
    config: &CleanupConfig,
) -> Result<Vec<String>, RuntimeError> {
    let images = runtime.list_images().await?;
    let mut removed = Vec::new();
    for name in choose(&images, in_use, config, SystemTime::now()) {
        match runtime.remove_image(&name).await {
            Ok(()) => {
                info!(image = %name, "image cleanup removed an unused image");
                removed.push(name);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(image = %name, error = %e, "image cleanup could not remove an image"),
        }
    }
    Ok(removed)
}

/// Runs passes every `config.interval` until dropped; `in_use` is asked at each pass.
pub async fn run_forever<R: Runtime + ?Sized>(
    runtime: std::sync::Arc<R>,
    config: CleanupConfig,
    in_use: impl Fn() -> HashSet<String>,
) {
    if config.interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = clean_once(&*runtime, &in_use(), &config).await {
            warn!(error = %e, "image cleanup pass failed; trying again at the next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str, source: ImageSource, pulled_s: u64, used_s: Option<u64>) -> LocalImage {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        LocalImage {
            name: name.into(),
            source,
            pulled_at: Some(t(pulled_s)),
            last_used: used_s.map(t),
            ..Default::default()
        }
    }

    #[test]
    fn only_old_unused_pulled_images_go_least_recently_used_first() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let images = vec![
            img("used-recently", ImageSource::Pull, 1_000, Some(9_000)),
            img("used-long-ago", ImageSource::Pull, 1_000, Some(2_000)),
            img("never-used", ImageSource::Pull, 1_500, None),
            img("in-use", ImageSource::Pull, 1_000, Some(1_000)),
            img("too-young", ImageSource::Pull, 9_900, None),
            img("loaded", ImageSource::Load, 1_000, None),
            img("ctr-pulled", ImageSource::Other, 1_000, None),
        ];
        let in_use: HashSet<String> = ["in-use".to_string()].into();
        let config = CleanupConfig {
            interval: Duration::from_secs(1),
            minimum_age: Duration::from_secs(3_600),
            per_cycle: 5,
            include_loaded: false,
        };
        assert_eq!(
            choose(&images, &in_use, &config, now),
            ["never-used", "used-long-ago", "used-recently"]
        );
        let two = CleanupConfig {
            per_cycle: 2,
            include_loaded: true,
            ..config
        };
        // Loaded by hand goes too when asked; still least recently used first.
        assert_eq!(
            choose(&images, &in_use, &two, now),
            ["loaded", "never-used"]
        );
    }
}
