//! Issue 7: signed API calls. The controller runs with `--auth required` (the harness's
//! default) on loopback; these tests need no root (`Cluster::controller_only`).
//!
//! Calls the CLI cannot make (a signature from the past) are made with a tonic client signed by
//! `berth_proto::sigv4` here, as any SDK would sign them.

use berth_proto::sigv4::Credentials;
use berth_proto::v1::ecs_client::EcsClient;
use berth_proto::v1::iam_client::IamClient;
use berth_proto::v1::*;
use berth_tests::Cluster;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;
use std::time::{Duration, SystemTime};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Creates a key through the Iam service, signed by the admin key; returns it.
fn create_key(c: &Cluster, user: &str, permissions: &str) -> Credentials {
    let admin = berth_tests::read_credentials(&c.admin_credentials());
    let rt = runtime();
    let k = rt.block_on(async {
        let mut iam = IamClient::new(c.channel().await.unwrap());
        let req = CreateAccessKeyRequest {
            user_name: Some(user.into()),
            permissions: Some(permissions.into()),
        };
        let req = c.signed(
            req,
            "/berth.v1.Iam/CreateAccessKey",
            &admin,
            SystemTime::now(),
        );
        tokio::time::timeout(Duration::from_secs(20), iam.create_access_key(req))
            .await
            .unwrap()
            .unwrap()
            .into_inner()
            .access_key
            .unwrap()
    });
    Credentials {
        access_key_id: k.access_key_id,
        secret_access_key: k.secret_access_key,
    }
}

fn env_of(k: &Credentials) -> [(&'static str, String); 2] {
    [
        ("BERTH_ACCESS_KEY_ID", k.access_key_id.clone()),
        ("BERTH_SECRET_ACCESS_KEY", k.secret_access_key.clone()),
    ]
}

fn berth_as(c: &Cluster, k: &Credentials, args: &[&str]) -> Output {
    let env = env_of(k);
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    c.berth_with(&env, args)
}

/// Asserts exit 254 and the aws CLI's one line naming `exception` and `op`; returns it.
fn refused(out: &Output, exception: &str, op: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert_eq!(out.status.code(), Some(254), "{err}");
    let prefix = format!("An error occurred ({exception}) when calling the {op} operation: ");
    assert!(err.starts_with(&prefix), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn audit_lines(c: &Cluster) -> Vec<serde_json::Value> {
    std::fs::read_to_string(c.dir.join("controller").join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn unsigned_badly_signed_unknown_and_skewed_calls_get_awss_errors() {
    let c = Cluster::controller_only("auth-refusals");
    let admin = berth_tests::read_credentials(&c.admin_credentials());

    let out = c.berth_with(&[], &["--no-sign-request", "ecs", "list-clusters"]);
    let err = refused(&out, "MissingAuthenticationTokenException", "ListClusters");
    assert!(
        err.contains("Missing Authentication Token") && err.contains("BERTH_ACCESS_KEY_ID"),
        "{err}"
    );
    // No credentials anywhere: unsigned too, same answer.
    let out = c.berth_with(
        &[
            ("BERTH_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
            ("HOME", "/nonexistent"),
        ],
        &["ecs", "list-clusters"],
    );
    refused(&out, "MissingAuthenticationTokenException", "ListClusters");

    let wrong = Credentials {
        secret_access_key: "x".repeat(40),
        ..admin.clone()
    };
    let out = berth_as(&c, &wrong, &["ecs", "list-clusters"]);
    let err = refused(&out, "InvalidSignatureException", "ListClusters");
    assert!(err.ends_with("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."), "{err}");

    let unknown = Credentials {
        access_key_id: "AKIAAAAAAAAAAAAAAAAA".into(),
        ..admin.clone()
    };
    let out = berth_as(
        &c,
        &unknown,
        &["ecs", "create-cluster", "--cluster-name", "nope"],
    );
    let err = refused(&out, "UnrecognizedClientException", "CreateCluster");
    assert!(
        err.ends_with("The security token included in the request is invalid."),
        "{err}"
    );

    // Signed ten minutes ago: expired, in AWS's words.
    let rt = runtime();
    let status = rt.block_on(async {
        let mut ecs = EcsClient::new(c.channel().await.unwrap());
        let req = c.signed(
            ListClustersRequest::default(),
            "/berth.v1.Ecs/ListClusters",
            &admin,
            SystemTime::now() - Duration::from_secs(600),
        );
        tokio::time::timeout(Duration::from_secs(20), ecs.list_clusters(req))
            .await
            .unwrap()
            .unwrap_err()
    });
    assert_eq!(
        berth_proto::exceptions::of(&status),
        "InvalidSignatureException"
    );
    assert!(
        status.message().starts_with("Signature expired: ")
            && status.message().contains(" - 5 min.)"),
        "{}",
        status.message()
    );
    // The same call signed now passes: the signing is right, only the time was not.
    let ok = rt.block_on(async {
        let mut ecs = EcsClient::new(c.channel().await.unwrap());
        let req = c.signed(
            ListClustersRequest::default(),
            "/berth.v1.Ecs/ListClusters",
            &admin,
            SystemTime::now(),
        );
        ecs.list_clusters(req).await
    });
    assert!(ok.is_ok(), "{ok:?}");

    // Nothing refused changed anything.
    assert!(!c.ok(&["list-clusters"]).contains("nope"));
}

#[test]
fn a_read_only_key_reads_but_cannot_write() {
    let c = Cluster::controller_only("auth-read-only");
    let reader = create_key(&c, "reader", "read-only");
    let out = berth_as(&c, &reader, &["ecs", "list-clusters"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&c.name));
    let out = berth_as(
        &c,
        &reader,
        &["ecs", "create-cluster", "--cluster-name", "ro"],
    );
    let err = refused(&out, "AccessDeniedException", "CreateCluster");
    assert!(
        err.contains("User: arn:aws:iam::000000000000:user/reader is not authorized to perform: ecs:CreateCluster"),
        "{err}"
    );
    assert!(!c.ok(&["list-clusters"]).contains("/ro\""));

    // A SecureString's plaintext is a secret: the reader sees the parameter, not its value.
    c.ok_in(
        "ssm",
        &[
            "put-parameter",
            "--name",
            "db-pass",
            "--type",
            "SecureString",
            "--value",
            "s3cr3t-ro",
        ],
    );
    let out = berth_as(&c, &reader, &["ssm", "get-parameter", "--name", "db-pass"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cr3t-ro"));
    let out = berth_as(
        &c,
        &reader,
        &[
            "ssm",
            "get-parameter",
            "--name",
            "db-pass",
            "--with-decryption",
        ],
    );
    refused(&out, "AccessDeniedException", "GetParameter");
    assert!(c
        .ok_in(
            "ssm",
            &["get-parameter", "--name", "db-pass", "--with-decryption"]
        )
        .contains("s3cr3t-ro"));
}

#[test]
fn state_changing_calls_are_audited_with_the_key_id_and_no_secret() {
    let c = Cluster::controller_only("auth-audit");
    let admin = berth_tests::read_credentials(&c.admin_credentials());
    let reader = create_key(&c, "reader", "read-only");
    berth_as(
        &c,
        &reader,
        &["ecs", "delete-cluster", "--cluster", &c.name],
    );
    c.berth_with(
        &[],
        &[
            "--no-sign-request",
            "ecs",
            "create-cluster",
            "--cluster-name",
            "x",
        ],
    );
    c.ok(&["list-clusters"]);
    let lines = audit_lines(&c);
    let find = |action: &str, outcome: &str| {
        lines
            .iter()
            .find(|l| l["action"] == action && l["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {action} {outcome} in {lines:?}"))
    };
    let created = find("CreateCluster", "OK");
    assert_eq!(created["accessKeyId"], admin.access_key_id.as_str());
    assert_eq!(created["service"], "ecs");
    assert!(created["sourceAddress"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(created["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        find("CreateAccessKey", "OK")["accessKeyId"],
        admin.access_key_id.as_str()
    );
    assert_eq!(
        find("DeleteCluster", "AccessDeniedException")["accessKeyId"],
        reader.access_key_id.as_str()
    );
    assert!(find("CreateCluster", "MissingAuthenticationTokenException")["accessKeyId"].is_null());
    assert!(
        lines.iter().all(|l| l["action"] != "ListClusters"),
        "reads are not audited"
    );
    let text = std::fs::read_to_string(c.dir.join("controller").join("audit.log")).unwrap();
    assert!(!text.contains(&admin.secret_access_key) && !text.contains(&reader.secret_access_key));
}

#[test]
fn the_admin_key_file_is_0600_and_no_secret_reaches_logs_or_the_store() {
    let c = Cluster::controller_only("auth-secrets");
    let file = c.admin_credentials();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let admin = berth_tests::read_credentials(&file);
    assert!(admin.access_key_id.starts_with("AKIA") && admin.access_key_id.len() == 20);
    assert_eq!(admin.secret_access_key.len(), 40);
    let reader = create_key(&c, "reader", "read-only");
    // --debug shows the key id, never the secret.
    let out = berth_as(&c, &reader, &["--debug", "ecs", "list-clusters"]);
    let debug = String::from_utf8_lossy(&out.stderr);
    assert!(debug.contains(&reader.access_key_id), "{debug}");
    assert!(!debug.contains(&reader.secret_access_key), "{debug}");
    // A restart keeps the keys (and does not write a new admin key).
    let before = std::fs::read_to_string(&file).unwrap();
    let mut c = c;
    c.kill_controller();
    c.start_controller();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    assert!(berth_as(&c, &reader, &["ecs", "list-clusters"])
        .status
        .success());
    let mut searched = 0;
    for entry in walk(&c.dir) {
        if entry == file {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        for secret in [&admin.secret_access_key, &reader.secret_access_key] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret access key is in {}",
                entry.display()
            );
        }
        searched += 1;
    }
    assert!(
        searched >= 3,
        "the store, the audit log and the controller's logs were searched"
    );
    assert!(c.dir.join("controller").join("state.redb").exists());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn access_keys_are_managed_with_berth_iam_and_profiles_pick_them() {
    let c = Cluster::controller_only("auth-iam");
    let admin = berth_tests::read_credentials(&c.admin_credentials());
    let out = c.ok_in(
        "iam",
        &[
            "create-access-key",
            "--user-name",
            "reader",
            "--permissions",
            "read-only",
        ],
    );
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let key = &created["AccessKey"];
    assert_eq!(key["UserName"], "reader");
    assert_eq!(key["Status"], "Active");
    assert_eq!(key["Permissions"], "read-only");
    let id = key["AccessKeyId"].as_str().unwrap().to_string();
    let secret = key["SecretAccessKey"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("AKIA") && id.len() == 20 && secret.len() == 40,
        "{key}"
    );

    // Listing never shows a secret; without --user-name it lists the caller's (admin's) keys.
    let listed = c.ok_in("iam", &["list-access-keys", "--user-name", "reader"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(v["AccessKeyMetadata"][0]["AccessKeyId"], id.as_str());
    assert!(
        !listed.contains(&secret) && !listed.contains("SecretAccessKey"),
        "{listed}"
    );
    let mine = c.ok_in("iam", &["list-access-keys"]);
    assert!(
        mine.contains(&admin.access_key_id) && !mine.contains(&id),
        "{mine}"
    );

    // A profile in a credentials file picks the key; a missing profile is the aws CLI's error.
    let file = c.dir.join("credentials");
    std::fs::write(
        &file,
        format!("[reader]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let env = [("BERTH_SHARED_CREDENTIALS_FILE", file)];
    let out = c.berth_with(
        &env,
        &[
            "--profile",
            "reader",
            "ecs",
            "create-cluster",
            "--cluster-name",
            "x",
        ],
    );
    refused(&out, "AccessDeniedException", "CreateCluster");
    let out = c.berth_with(
        &[("BERTH_PROFILE", "reader"), env[0]],
        &["iam", "list-access-keys"],
    );
    refused(&out, "AccessDeniedException", "ListAccessKeys");
    let out = c.berth_with(&env, &["--profile", "nobody", "ecs", "list-clusters"]);
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "The config profile (nobody) could not be found"
    );

    // Bad permissions, an unknown key, and the last full key: IAM's names, nothing changed.
    let out = c.berth_with(&[], &["iam", "create-access-key", "--permissions", "admin"]);
    refused(&out, "InvalidInput", "CreateAccessKey");
    let out = c.berth_with(
        &[],
        &[
            "iam",
            "delete-access-key",
            "--access-key-id",
            "AKIAAAAAAAAAAAAAAAAA",
        ],
    );
    let err = refused(&out, "NoSuchEntity", "DeleteAccessKey");
    assert!(
        err.ends_with("The Access Key with id AKIAAAAAAAAAAAAAAAAA cannot be found."),
        "{err}"
    );
    let out = c.berth_with(
        &[],
        &[
            "iam",
            "delete-access-key",
            "--access-key-id",
            &admin.access_key_id,
        ],
    );
    refused(&out, "DeleteConflict", "DeleteAccessKey");

    c.ok_in("iam", &["delete-access-key", "--access-key-id", &id]);
    let out = c.berth_with(
        &[("BERTH_PROFILE", "reader"), env[0]],
        &["ecs", "list-clusters"],
    );
    refused(&out, "UnrecognizedClientException", "ListClusters");
    let left = c.ok_in("iam", &["list-access-keys", "--user-name", "reader"]);
    assert!(!left.contains(&id), "{left}");
}
