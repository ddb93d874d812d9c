//! Issue 11: images from a registry, on real containerd + runc, against a private
//! docker-registry on loopback (the harness's [`Registry`]).

use berth_tests::images::{self, host_architecture};
use berth_tests::registry::{registry_prerequisites, Registry};
use berth_tests::Cluster;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

/// The harness itself: a pushed image is served with the digest skopeo reported, by tag and
/// by digest; the registry stopped refuses, started again serves the same content on the same
/// port; with auth it answers 401 without credentials; ctr pulls and unpacks each image kind
/// (multi-layer, multi-platform index for the host's platform).
#[test]
fn registry_fixture_serves_pushed_images() {
    if !registry_prerequisites() {
        return;
    }
    let c = Cluster::containerd_only("img-fixture");
    let mut reg = Registry::launch_with_auth("tester", "s3cret");
    assert_eq!(reg.ping(), Some(401));

    let multi = c.dir.join("multi.tar");
    images::multi_layer_image(&multi, "localhost/multi:1", &[100_000, 200_000], 7);
    let digest = reg.push(&multi, "multi:1");

    let index = c.dir.join("index.tar");
    images::multi_platform_image(&index, "localhost/plat:1");
    let index_digest = reg.push_all(&index, "plat:1");

    let pull = |reference: &str| {
        c.ctr(
            "fixture",
            &[
                "images",
                "pull",
                "--plain-http",
                "--user",
                "tester:s3cret",
                reference,
            ],
            T,
        )
    };
    let out = pull(&reg.reference("multi:1"));
    assert!(
        out.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr("fixture", &["images", "ls"], T);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains(&digest), "{digest} not in: {ls}");

    // Stopped: nothing answers; started again: same port, same content.
    reg.stop();
    assert_eq!(reg.ping(), None);
    let out = pull(&reg.reference("plat:1"));
    assert!(!out.status.success(), "pulled from a stopped registry");
    reg.start();
    let out = pull(&reg.reference("plat:1"));
    assert!(
        out.status.success(),
        "ctr pull after restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr("fixture", &["images", "ls"], T);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains(&index_digest), "{index_digest} not in: {ls}");
    assert!(reg.manifest_gets("plat") >= 1, "{:?}", reg.requests());

    // The host's platform was unpacked: its marker layer says so.
    let mount = c.dir.join("mnt");
    std::fs::create_dir_all(&mount).expect("mount dir");
    let out = c.ctr(
        "fixture",
        &[
            "images",
            "mount",
            &reg.reference("plat:1"),
            &mount.display().to_string(),
        ],
        T,
    );
    assert!(
        out.status.success(),
        "ctr images mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let platform = std::fs::read_to_string(mount.join("platform"));
    let _ = c.ctr(
        "fixture",
        &["images", "unmount", &mount.display().to_string()],
        T,
    );
    assert_eq!(
        platform.expect("/platform in the image"),
        format!("{}\n", host_architecture())
    );
}

/// A docker-save archive of busybox loads with `ctr images import` (the format is what Docker
/// writes), as a reference for `berth-agent image load`.
#[test]
fn docker_save_archive_is_what_docker_writes() {
    if !registry_prerequisites() {
        return;
    }
    let c = Cluster::containerd_only("img-save");
    let archive = c.dir.join("save.tar");
    images::docker_save_archive(&archive, "localhost/saved:1");
    let out = c.ctr(
        "fixture",
        &["images", "import", &archive.display().to_string()],
        T,
    );
    assert!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr("fixture", &["images", "ls", "-q"], T);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains("localhost/saved:1"), "{ls}");
}
