//! The CLI's credentials and SigV4 signing, found as the aws CLI finds them: an explicit profile
//! (`--profile`, BERTH_PROFILE) from the credentials file; else BERTH_ACCESS_KEY_ID and
//! BERTH_SECRET_ACCESS_KEY; else the `default` profile of the credentials file
//! (BERTH_SHARED_CREDENTIALS_FILE, default ~/.berth/credentials); else none: the call goes
//! unsigned, as with `--no-sign-request`. Every call is signed afresh (its own x-amz-date).

use super::CliError;
use berth_proto::sigv4::{self, Credentials};
use std::path::PathBuf;
use std::time::SystemTime;

/// The environment variable of the access key id.
pub const ACCESS_KEY_ID_ENV: &str = "BERTH_ACCESS_KEY_ID";
/// The environment variable of the secret access key.
pub const SECRET_ACCESS_KEY_ENV: &str = "BERTH_SECRET_ACCESS_KEY";
/// The environment variable of a session token (Berth has none: refused).
pub const SESSION_TOKEN_ENV: &str = "BERTH_SESSION_TOKEN";
/// The environment variable naming the credentials file.
pub const CREDENTIALS_FILE_ENV: &str = "BERTH_SHARED_CREDENTIALS_FILE";
/// The environment variable naming the profile.
pub const PROFILE_ENV: &str = "BERTH_PROFILE";
/// The environment variable of the region.
pub const REGION_ENV: &str = "BERTH_DEFAULT_REGION";

/// How calls are signed: with these credentials in this region, or not at all.
#[derive(Debug, Clone)]
pub struct Signing {
    /// The key, None to send unsigned.
    pub credentials: Option<Credentials>,
    /// The region of the credential scope.
    pub region: String,
}

/// The command line's say on signing.
#[derive(Debug, Clone, Default)]
pub struct SigningOptions {
    /// `--profile`.
    pub profile: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--no-sign-request`.
    pub no_sign_request: bool,
}

/// The `[profile]` sections of an aws credentials file: name → (key → value).
fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_string(), Vec::new()));
        } else if let (Some((k, v)), Some(s)) = (line.split_once('='), sections.last_mut()) {
            s.1.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    sections
}

impl Signing {
    /// Resolves the credentials from `opts` and the environment `env`.
    pub fn resolve(
        opts: &SigningOptions,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Signing, CliError> {
        let env = |k: &str| env(k).filter(|v| !v.is_empty());
        let region = opts
            .region
            .clone()
            .or_else(|| env(REGION_ENV))
            .unwrap_or_else(|| berth_proto::arn::REGION.to_string());
        if opts.no_sign_request {
            return Ok(Signing {
                credentials: None,
                region,
            });
        }
        if env(SESSION_TOKEN_ENV).is_some() {
            return Err(CliError::Other(format!(
                "{SESSION_TOKEN_ENV} is set, but Berth has no temporary credentials: unset it and use an access key ({ACCESS_KEY_ID_ENV} and {SECRET_ACCESS_KEY_ENV}, or a profile)"
            )));
        }
        let explicit = opts.profile.clone().or_else(|| env(PROFILE_ENV));
        if explicit.is_none() {
            match (env(ACCESS_KEY_ID_ENV), env(SECRET_ACCESS_KEY_ENV)) {
                (Some(id), Some(secret)) => {
                    return Ok(Signing {
                        credentials: Some(Credentials {
                            access_key_id: id,
                            secret_access_key: secret,
                        }),
                        region,
                    })
                }
                (Some(_), None) => {
                    return Err(CliError::Other(format!(
                        "Partial credentials found in env, missing: {SECRET_ACCESS_KEY_ENV}"
                    )))
                }
                (None, Some(_)) => {
                    return Err(CliError::Other(format!(
                        "Partial credentials found in env, missing: {ACCESS_KEY_ID_ENV}"
                    )))
                }
                (None, None) => {}
            }
        }
        let file = env(CREDENTIALS_FILE_ENV)
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".berth").join("credentials")));
        let text = match &file {
            Some(f) => match std::fs::read_to_string(f) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(CliError::Other(format!(
                        "Unable to read the credentials file {}: {e}",
                        f.display()
                    )))
                }
            },
            None => None,
        };
        let profile = explicit.clone().unwrap_or_else(|| "default".to_string());
        let section = text
            .as_deref()
            .map(parse_ini)
            .and_then(|s| s.into_iter().find(|(n, _)| *n == profile));
        let Some((_, keys)) = section else {
            if explicit.is_some() {
                return Err(CliError::Other(format!(
                    "The config profile ({profile}) could not be found"
                )));
            }
            return Ok(Signing {
                credentials: None,
                region,
            });
        };
        let get = |k: &str| keys.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(Signing {
                credentials: Some(Credentials {
                    access_key_id: id,
                    secret_access_key: secret,
                }),
                region,
            }),
            _ => Err(CliError::Other(format!(
                "Partial credentials found in shared-credentials-file, profile {profile}: it needs aws_access_key_id and aws_secret_access_key"
            ))),
        }
    }

    /// The `authorization` and `x-amz-date` metadata of a call of `path` at `host` whose
    /// encoded request is `message`, signed now; None when unsigned.
    pub fn sign(
        &self,
        host: &str,
        path: &str,
        message: &[u8],
        now: SystemTime,
    ) -> Option<(String, String)> {
        let creds = self.credentials.as_ref()?;
        let date = sigv4::amz_date(now);
        let service = sigv4::scope_service(path).unwrap_or("ecs");
        let input = sigv4::CanonicalInput {
            method: "POST",
            path,
            query: "",
            headers: vec![
                ("host".into(), host.to_string()),
                (sigv4::X_AMZ_DATE.into(), date.clone()),
            ],
            payload_sha256: sigv4::hex_sha256(&sigv4::grpc_frame(message)),
        };
        Some((
            sigv4::authorization(creds, &input, &date, &self.region, service),
            date,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(opts: SigningOptions, vars: &[(&str, &str)]) -> Result<Signing, CliError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Signing::resolve(&opts, &move |k| map.get(k).cloned())
    }

    fn file(text: &str) -> (PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("berth-cred-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("credentials");
        std::fs::write(&f, text).unwrap();
        let s = f.to_str().unwrap().to_string();
        (f, s)
    }

    const FILE: &str = "# keys\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[ops]\naws_access_key_id=AKIAOPS\naws_secret_access_key=s2\n";

    #[test]
    fn credentials_are_found_as_the_aws_cli_finds_them() {
        let (_f, path) = file(FILE);
        let id = |s: Signing| s.credentials.map(|c| c.access_key_id);
        let env = [
            (ACCESS_KEY_ID_ENV, "AKIAENV"),
            (SECRET_ACCESS_KEY_ENV, "s0"),
            (CREDENTIALS_FILE_ENV, path.as_str()),
        ];
        // Environment first, then the file's default profile.
        assert_eq!(
            id(resolve(SigningOptions::default(), &env).unwrap()).as_deref(),
            Some("AKIAENV")
        );
        assert_eq!(
            id(resolve(SigningOptions::default(), &env[2..]).unwrap()).as_deref(),
            Some("AKIADEFAULT")
        );
        // An explicit profile wins over the environment.
        let ops = SigningOptions {
            profile: Some("ops".into()),
            ..Default::default()
        };
        assert_eq!(
            id(resolve(ops.clone(), &env).unwrap()).as_deref(),
            Some("AKIAOPS")
        );
        assert_eq!(
            id(resolve(SigningOptions::default(), &[(PROFILE_ENV, "ops"), env[2]]).unwrap())
                .as_deref(),
            Some("AKIAOPS")
        );
        let missing = SigningOptions {
            profile: Some("nope".into()),
            ..Default::default()
        };
        let e = resolve(missing, &env).unwrap_err();
        assert_eq!(
            e.to_string(),
            "The config profile (nope) could not be found"
        );
        assert_eq!(e.exit_code(), 255);
        // Nothing at all, or --no-sign-request: unsigned.
        assert!(
            resolve(SigningOptions::default(), &[("HOME", "/nonexistent")])
                .unwrap()
                .credentials
                .is_none()
        );
        let unsigned = SigningOptions {
            no_sign_request: true,
            ..Default::default()
        };
        assert!(resolve(unsigned, &env).unwrap().credentials.is_none());
        // Half a key, or a session token, is refused clearly.
        let e = resolve(SigningOptions::default(), &env[..1]).unwrap_err();
        assert!(
            e.to_string().contains("missing: BERTH_SECRET_ACCESS_KEY"),
            "{e}"
        );
        let e = resolve(
            SigningOptions::default(),
            &[env[0], env[1], (SESSION_TOKEN_ENV, "t")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("BERTH_SESSION_TOKEN"), "{e}");
    }

    #[test]
    fn region_comes_from_the_flag_the_environment_or_berths_default() {
        let r = |o: SigningOptions, v: &[(&str, &str)]| resolve(o, v).unwrap().region;
        assert_eq!(r(SigningOptions::default(), &[]), berth_proto::arn::REGION);
        assert_eq!(
            r(SigningOptions::default(), &[(REGION_ENV, "eu-west-1")]),
            "eu-west-1"
        );
        let flag = SigningOptions {
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        assert_eq!(r(flag, &[(REGION_ENV, "eu-west-1")]), "us-east-1");
    }

    #[test]
    fn a_signed_call_verifies_with_the_same_key() {
        let s = Signing {
            credentials: Some(Credentials {
                access_key_id: "AKIAX".into(),
                secret_access_key: "secret".into(),
            }),
            region: "on-prem".into(),
        };
        let now = SystemTime::now();
        let (authz, date) = s
            .sign("h:1", "/berth.v1.Iam/CreateAccessKey", b"m", now)
            .unwrap();
        let auth = sigv4::Authorization::parse(&authz).unwrap();
        assert_eq!(auth.service, "iam");
        let input = sigv4::CanonicalInput {
            method: "POST",
            path: "/berth.v1.Iam/CreateAccessKey",
            query: "",
            headers: vec![
                ("host".into(), "h:1".into()),
                ("x-amz-date".into(), date.clone()),
            ],
            payload_sha256: sigv4::hex_sha256(&sigv4::grpc_frame(b"m")),
        };
        assert!(auth.verify("secret", &input, &date));
        assert!(!authz.contains("secret"));
    }
}
