//! Benchmark of issue 11's image pull: `berth-agent image pull` against containerd's own client,
//! `ctr images pull`, from the same loopback registry into the same private containerd.
//!
//! The image: busybox plus `--layers` gzip'd layers of `--layer-mb` MB of incompressible data
//! each (default 5 x 20 MB: a ~100 MB image), pushed once to a private docker-registry on
//! 127.0.0.1 (plain HTTP, no auth).
//!
//! - floor: `ctr -a SOCK -n NS images pull --plain-http REF`: resolve, fetch every blob into
//!   the content store, unpack the layers into overlayfs snapshots (ctr 1.6 unpacks by default).
//! - berth: `berth-agent --containerd-socket SOCK --containerd-namespace NS --insecure-registry
//!   HOST image pull REF`: the same work through the agent's puller.
//!
//! Before every run (either side) the image is removed with `ctr images rm --sync` (containerd's
//! GC frees its content and snapshots at once), and the bench checks that no blob of the image
//! is left in `ctr content ls` and no snapshot in `ctr snapshots ls`: each run fetches and
//! unpacks everything. After every run it checks the image is there with one snapshot per
//! layer. Runs are interleaved (floor, berth, floor, …) after warm-up runs of each. Times are
//! wall clock of the whole command, process start included (both sides are one process).
//!
//! Everything runs in a private containerd and registry, removed at the end, on failure too.
//! Prints figures; exits non-zero only when something fails, never on a missed target.
//!
//!   CARGO_INCREMENTAL=0 cargo build --release -p berth-agent -p berth-tests --bins
//!   target/release/bench-pull [--runs N] [--warmup N] [--layers N] [--layer-mb N]

use anyhow::{bail, ensure, Context, Result};
use berth_tests::registry::{registry_prerequisites, Registry};
use berth_tests::{bin, images, Cluster};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The target: berth's pull at most this many times the floor's (issue 11).
const TARGET_RATIO: f64 = 1.2;
/// containerd's namespace for both sides.
const NAMESPACE: &str = "bench-pull";
/// The repository and tag the image is pushed as.
const REPO_TAG: &str = "bench/pull:1";
/// How long one pull (either side) may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a `ctr` bookkeeping call may take.
const CTR_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    runs: usize,
    warmup: usize,
    layers: usize,
    layer_mb: usize,
}

const USAGE: &str = "usage: bench-pull [--runs N (default 5)] [--warmup N (default 1)] [--layers N (default 5)] [--layer-mb N (default 20)]";

fn args() -> Result<Args> {
    let mut out = Args {
        runs: 5,
        warmup: 1,
        layers: 5,
        layer_mb: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .with_context(|| format!("{a} needs a number; {USAGE}"))?;
        let n: usize = v
            .parse()
            .with_context(|| format!("{a} {v}: not a number; {USAGE}"))?;
        match a.as_str() {
            "--runs" => out.runs = n,
            "--warmup" => out.warmup = n,
            "--layers" => out.layers = n,
            "--layer-mb" => out.layer_mb = n,
            _ => bail!("unknown option {a}; {USAGE}"),
        }
    }
    ensure!(out.runs > 0, "--runs must be at least 1; {USAGE}");
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// n, p50 and p99 (the maximum when n < 100, and labelled so).
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        Stats {
            n: v.len(),
            p50: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
        }
    }
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-pull: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !registry_prerequisites() {
        eprintln!(
            "bench-pull: needs root, containerd, runc, ctr, busybox-static, docker-registry, skopeo"
        );
        return ExitCode::FAILURE;
    }
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-pull: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The side being timed.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    Floor,
    Berth,
}

struct Bench<'a> {
    c: &'a Cluster,
    reg: &'a Registry,
    reference: String,
    /// The image's blobs (manifest, config, layers), as pushed.
    blobs: Vec<String>,
    layers: usize,
}

/// Runs the bench and prints its report. Its containerd, registry and temp dir are removed
/// when it returns, on failure too.
fn bench(args: &Args) -> Result<()> {
    let c = Cluster::containerd_only("bench-pull");
    let reg = Registry::launch();
    let archive = c.dir.join("image.tar");
    let sizes = vec![args.layer_mb * 1024 * 1024; args.layers];
    let built = Instant::now();
    images::multi_layer_image(&archive, "localhost/bench-pull:1", &sizes, 1);
    let image_bytes = std::fs::metadata(&archive)
        .context("the image archive")?
        .len();
    eprintln!(
        "bench-pull: built a {:.1} MB image in {:.1} s",
        image_bytes as f64 / 1e6,
        built.elapsed().as_secs_f64()
    );
    let digest = reg.push(&archive, REPO_TAG);
    let blobs = images::archive_blobs(&archive).context("reading the image archive")?;
    ensure!(!blobs.is_empty(), "the image archive has no blobs");
    let _ = std::fs::remove_file(&archive);
    let b = Bench {
        c: &c,
        reg: &reg,
        reference: reg.reference(REPO_TAG),
        blobs,
        layers: args.layers + 1,
    };
    let version = c.ctr(NAMESPACE, &["version"], CTR_TIMEOUT);
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("Version:"))
        .nth(1)
        .map(|l| l.trim().trim_start_matches("Version:").trim().to_string())
        .unwrap_or_default();

    let berth_available = b.berth_pull_available();
    if !berth_available {
        eprintln!(
            "bench-pull: `berth-agent image pull` is not available in {}: timing the floor only",
            bin("berth-agent").display()
        );
    }
    let sides: Vec<Side> = if berth_available {
        vec![Side::Floor, Side::Berth]
    } else {
        vec![Side::Floor]
    };
    for _ in 0..args.warmup {
        for s in &sides {
            b.run(*s)?;
        }
    }
    let mut floor = Vec::new();
    let mut berth = Vec::new();
    for _ in 0..args.runs {
        for s in &sides {
            let t = b.run(*s)?;
            match s {
                Side::Floor => floor.push(t),
                Side::Berth => berth.push(t),
            }
        }
    }
    b.clear()?;

    let high = if args.runs >= 100 { "p99" } else { "max" };
    println!(
        "image pull: {} interleaved runs each (floor, berth, ...) after {} warm-up runs each",
        args.runs, args.warmup
    );
    println!(
        "host: {} cores, containerd {version}, registry docker-registry on 127.0.0.1 (plain HTTP)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "image: {} layers ({} x {} MB incompressible + busybox), {:.1} MB, manifest {digest}",
        b.layers,
        args.layers,
        args.layer_mb,
        image_bytes as f64 / 1e6
    );
    println!("each run: image removed (ctr images rm --sync; no blob or snapshot left), then pulled and unpacked");
    println!();
    println!(
        "{:<60} {:>4} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "",
        "n",
        "p50 ms",
        format!("{high} ms"),
        "MB/s",
        "p50/floor",
        format!("{high}/floor")
    );
    let floor = Stats::of(floor);
    let row = |label: &str, s: &Stats, ratio: bool| {
        let r = |a: f64, b: f64| {
            if ratio {
                format!("{:.2}x", a / b)
            } else {
                String::new()
            }
        };
        println!(
            "{label:<60} {:>4} {:>9.0} {:>9.0} {:>8.1} {:>10} {:>10}",
            s.n,
            s.p50,
            s.p99,
            image_bytes as f64 / 1e6 / (s.p50 / 1000.0),
            r(s.p50, floor.p50),
            r(s.p99, floor.p99)
        );
    };
    row(
        "floor  ctr images pull --plain-http (fetch + unpack)",
        &floor,
        false,
    );
    if berth_available {
        let berth = Stats::of(berth);
        row(
            "berth  berth-agent image pull (fetch + unpack)",
            &berth,
            true,
        );
        println!();
        println!(
            "target: berth p50 <= {TARGET_RATIO}x floor: {} ({:.2}x)",
            if berth.p50 <= TARGET_RATIO * floor.p50 {
                "met"
            } else {
                "MISSED"
            },
            berth.p50 / floor.p50
        );
    } else {
        println!();
        println!("berth: not measured (`berth-agent image pull` is not built yet)");
    }
    let gets = reg.manifest_gets("bench/pull");
    eprintln!("bench-pull: the registry answered {gets} manifest GETs");
    Ok(())
}

impl Bench<'_> {
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = self.c.ctr(NAMESPACE, args, CTR_TIMEOUT);
        ensure!(
            out.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Snapshot keys in the namespace (overlayfs).
    fn snapshots(&self) -> Result<Vec<String>> {
        Ok(self
            .ctr(&["snapshots", "ls"])?
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect())
    }

    /// Removes the image and checks containerd's GC freed its blobs and snapshots.
    fn clear(&self) -> Result<()> {
        let images = self.ctr(&["images", "ls", "-q"])?;
        if images.lines().any(|l| l.trim() == self.reference) {
            self.ctr(&["images", "rm", "--sync", &self.reference])?;
        }
        let content = self.c.content_digests(NAMESPACE);
        let left: Vec<&String> = self.blobs.iter().filter(|b| content.contains(b)).collect();
        ensure!(
            left.is_empty(),
            "after removing the image, containerd still holds {} of its blobs ({:?}); leases: {}",
            left.len(),
            left,
            self.ctr(&["leases", "ls"]).unwrap_or_default()
        );
        let snaps = self.snapshots()?;
        ensure!(
            snaps.is_empty(),
            "after removing the image, snapshots are left: {snaps:?}"
        );
        Ok(())
    }

    /// Whether the agent has `image pull`.
    fn berth_pull_available(&self) -> bool {
        let out =
            self.c
                .agent_image_command(NAMESPACE, &[], &["image", "pull", "--help"], CTR_TIMEOUT);
        out.status.success()
    }

    /// One run of a side: clear, then the timed pull; checks the result; milliseconds.
    fn run(&self, side: Side) -> Result<f64> {
        self.clear()?;
        let start = Instant::now();
        let out = match side {
            Side::Floor => self.c.ctr(
                NAMESPACE,
                &["images", "pull", "--plain-http", &self.reference],
                PULL_TIMEOUT,
            ),
            Side::Berth => self.c.agent_image_command(
                NAMESPACE,
                &[],
                &[
                    "--insecure-registry",
                    &self.reg.host(),
                    "image",
                    "pull",
                    &self.reference,
                ],
                PULL_TIMEOUT,
            ),
        };
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        let who = match side {
            Side::Floor => "ctr images pull",
            Side::Berth => "berth-agent image pull",
        };
        ensure!(
            out.status.success(),
            "{who} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let images = self.ctr(&["images", "ls", "-q"])?;
        ensure!(
            images.lines().any(|l| l.trim() == self.reference),
            "{who} left no image {}: {images}",
            self.reference
        );
        let snaps = self.snapshots()?;
        ensure!(
            snaps.len() == self.layers,
            "{who} left {} snapshots, not one per layer ({}): {snaps:?}",
            snaps.len(),
            self.layers
        );
        Ok(ms)
    }
}
