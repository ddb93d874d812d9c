//! AWS Signature Version 4, as the `berth` CLI signs and the controller verifies every API call
//! (issue 7). The same algorithm as AWS's (checked against its published test-suite vectors in
//! the tests below), applied to a gRPC call as to the HTTP/2 POST it is: the path
//! `/berth.v1.Ecs/RunTask`, an empty query, the headers `host` (the URI authority) and
//! `x-amz-date`, and the SHA-256 of the exact request body (the gRPC frame: flag byte, 4-byte
//! length, message). The `authorization` and `x-amz-date` travel as metadata.
//!
//! HMAC-SHA256 and SHA-256 are RustCrypto's; signatures are compared in constant time by
//! `hmac`'s `verify_slice`.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// The only algorithm: `AWS4-HMAC-SHA256`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The metadata (header) key of the signature.
pub const AUTHORIZATION: &str = "authorization";
/// The metadata (header) key of the signing time, `YYYYMMDDTHHMMSSZ`.
pub const X_AMZ_DATE: &str = "x-amz-date";
/// The metadata (header) key of a session token (Berth has no temporary credentials).
pub const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
/// How far the signing time may be from the verifier's clock (AWS's 5 minutes).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

type HmacSha256 = Hmac<Sha256>;

/// The parts of a request that are signed.
#[derive(Debug, Clone)]
pub struct CanonicalInput<'a> {
    /// `POST` for every gRPC call.
    pub method: &'a str,
    /// The URI path, already in canonical (URI-encoded) form; gRPC paths need no encoding.
    pub path: &'a str,
    /// The canonical query string (empty for gRPC).
    pub query: &'a str,
    /// The signed headers as (name, value); names are lower-cased and sorted here.
    pub headers: Vec<(String, String)>,
    /// Hex SHA-256 of the body.
    pub payload_sha256: String,
}

/// Hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The gRPC frame of an uncompressed message: what a unary call's HTTP/2 body is, and so what
/// is hashed.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A header value as SigV4 canonicalises it: trimmed, runs of spaces collapsed to one.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The sorted, lower-cased header names joined with `;` (SignedHeaders).
pub fn signed_headers(input: &CanonicalInput<'_>) -> String {
    let mut names: Vec<String> = input
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.join(";")
}

/// The canonical request: method, path, query, canonical headers, signed headers, payload hash.
pub fn canonical_request(input: &CanonicalInput<'_>) -> String {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), canonical_value(v)))
        .collect();
    headers.sort();
    let mut canonical_headers = String::new();
    for (n, v) in &headers {
        canonical_headers.push_str(n);
        canonical_headers.push(':');
        canonical_headers.push_str(v);
        canonical_headers.push('\n');
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        input.method,
        input.path,
        input.query,
        canonical_headers,
        signed_headers(input),
        input.payload_sha256
    )
}

/// The credential scope `DATE/REGION/SERVICE/aws4_request`.
pub fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

/// The string to sign: algorithm, time, scope and the hash of the canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

fn hmac(key: &[u8], data: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac
}

/// The signing key: HMAC chain of `AWS4`+secret over date, region, service, `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes()).finalize();
    let k_region = hmac(&k_date.into_bytes(), region.as_bytes()).finalize();
    let k_service = hmac(&k_region.into_bytes(), service.as_bytes()).finalize();
    hmac(&k_service.into_bytes(), b"aws4_request")
        .finalize()
        .into_bytes()
        .into()
}

/// Hex HMAC of the string to sign under the signing key.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(
        hmac(signing_key, string_to_sign.as_bytes())
            .finalize()
            .into_bytes(),
    )
}

/// An access key's pair. Its Debug never shows the secret.
#[derive(Clone)]
pub struct Credentials {
    /// The access key id (`AKIA…`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Signs `input` at `amz_date` for `region` and `service`; returns the Authorization value
/// `AWS4-HMAC-SHA256 Credential=AKID/SCOPE, SignedHeaders=..., Signature=...`.
pub fn authorization(
    creds: &Credentials,
    input: &CanonicalInput<'_>,
    amz_date: &str,
    region: &str,
    service: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = scope(date, region, service);
    let sts = string_to_sign(amz_date, &scope, &canonical_request(input));
    let key = signing_key(&creds.secret_access_key, date, region, service);
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={}",
        creds.access_key_id,
        signed_headers(input),
        signature(&key, &sts)
    )
}

/// A parsed Authorization value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id of the credential.
    pub access_key_id: String,
    /// The scope's date `YYYYMMDD`.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// The signed header names, lower-case, as given.
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

/// Why an Authorization value or a signing time does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    #[error("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters after the AWS4-HMAC-SHA256 algorithm: {0}")]
    Malformed(String),
    /// The credential is not `AKID/DATE/REGION/SERVICE/aws4_request`.
    #[error("Credential should be scoped to a valid region, service and date, with the terminator aws4_request: '{0}'")]
    Credential(String),
    /// The signing time is not `YYYYMMDDTHHMMSSZ`.
    #[error("X-Amz-Date must be in the ISO8601 basic format YYYYMMDD'T'HHMMSS'Z': '{0}'")]
    Date(String),
}

impl Authorization {
    /// Parses an Authorization value as [`authorization`] writes it (AWS accepts the
    /// parameters separated by commas with or without spaces).
    pub fn parse(value: &str) -> Result<Authorization, ParseError> {
        let malformed = || ParseError::Malformed(value.to_string());
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or_else(malformed)?;
        let (mut credential, mut signed, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(malformed)?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut sig,
                _ => return Err(malformed()),
            };
            if slot.replace(v.to_string()).is_some() {
                return Err(malformed());
            }
        }
        let (credential, signed, signature) = match (credential, signed, sig) {
            (Some(c), Some(h), Some(s)) if !h.is_empty() && !s.is_empty() => (c, h, s),
            _ => return Err(malformed()),
        };
        let parts: Vec<&str> = credential.split('/').collect();
        match parts.as_slice() {
            [id, date, region, service, "aws4_request"]
                if !id.is_empty()
                    && date.len() == 8
                    && date.bytes().all(|b| b.is_ascii_digit())
                    && !region.is_empty()
                    && !service.is_empty() =>
            {
                Ok(Authorization {
                    access_key_id: id.to_string(),
                    date: date.to_string(),
                    region: region.to_string(),
                    service: service.to_string(),
                    signed_headers: signed.split(';').map(str::to_string).collect(),
                    signature,
                })
            }
            _ => Err(ParseError::Credential(credential)),
        }
    }

    /// Whether `signature` is the one `secret` makes for `input` at `amz_date`, compared in
    /// constant time. `input.headers` must be exactly the signed headers (the caller looks
    /// them up by [`Authorization::signed_headers`]).
    pub fn verify(&self, secret: &str, input: &CanonicalInput<'_>, amz_date: &str) -> bool {
        let Ok(given) = hex::decode(&self.signature) else {
            return false;
        };
        let scope = scope(&self.date, &self.region, &self.service);
        let sts = string_to_sign(amz_date, &scope, &canonical_request(input));
        let key = signing_key(secret, &self.date, &self.region, &self.service);
        hmac(&key, sts.as_bytes()).verify_slice(&given).is_ok()
    }
}

/// `t` as a signing time `YYYYMMDDTHHMMSSZ` (UTC, whole seconds).
pub fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // prost's Timestamp prints RFC 3339 (`2015-08-30T12:36:00Z` for whole seconds).
    let rfc = prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
    .to_string();
    rfc.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// Parses a signing time `YYYYMMDDTHHMMSSZ`.
pub fn parse_amz_date(s: &str) -> Result<SystemTime, ParseError> {
    let bad = || ParseError::Date(s.to_string());
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return Err(bad());
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    let ts: prost_types::Timestamp = rfc.parse().map_err(|_| bad())?;
    let secs = u64::try_from(ts.seconds).map_err(|_| bad())?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Why a signing time is refused: AWS's wording when it is more than [`MAX_SKEW`] from `now`.
pub fn skew_error(signed_at: &str, now: SystemTime) -> Option<String> {
    let t = parse_amz_date(signed_at).ok()?;
    let now_s = amz_date(now);
    if t + MAX_SKEW < now {
        Some(format!(
            "Signature expired: {signed_at} is now earlier than {} ({now_s} - 5 min.)",
            amz_date(now - MAX_SKEW)
        ))
    } else if t > now + MAX_SKEW {
        Some(format!(
            "Signature not yet current: {signed_at} is still later than {} ({now_s} + 5 min.)",
            amz_date(now + MAX_SKEW)
        ))
    } else {
        None
    }
}

/// The service name in a credential scope for a gRPC path `/berth.v1.SERVICE/METHOD`: `ecs`,
/// `ssm`, `iam` or `secretsmanager`, as AWS names them.
pub fn scope_service(grpc_path: &str) -> Option<&'static str> {
    let service = grpc_path.strip_prefix("/berth.v1.")?.split('/').next()?;
    match service {
        // ExecuteCommand's stream is an ECS call (exec.proto).
        "Ecs" | "ExecuteCommand" => Some("ecs"),
        "Ssm" => Some("ssm"),
        "Iam" => Some("iam"),
        "SecretsManager" => Some("secretsmanager"),
        "Ec2" => Some("ec2"),
        // Issue 10: CloudWatch Logs (logs.proto).
        "Logs" => Some("logs"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's test suite (aws-sig-v4-test-suite): credentials, time, region and service.
    fn suite() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }
    const SUITE_DATE: &str = "20150830T123600Z";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn vanilla(method: &str) -> CanonicalInput<'_> {
        CanonicalInput {
            method,
            path: "/",
            query: "",
            headers: vec![
                ("Host".into(), "example.amazonaws.com".into()),
                ("X-Amz-Date".into(), SUITE_DATE.into()),
            ],
            payload_sha256: hex_sha256(b""),
        }
    }

    #[test]
    fn the_suites_get_vanilla_and_post_vanilla_sign_as_published() {
        assert_eq!(hex_sha256(b""), EMPTY);
        let get = vanilla("GET");
        assert_eq!(
            canonical_request(&get),
            format!("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:{SUITE_DATE}\n\nhost;x-amz-date\n{EMPTY}")
        );
        assert_eq!(
            authorization(&suite(), &get, SUITE_DATE, "us-east-1", "service"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let post = vanilla("POST");
        let scope = scope("20150830", "us-east-1", "service");
        assert_eq!(
            string_to_sign(SUITE_DATE, &scope, &canonical_request(&post)),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n553f88c9e4d10fc9e109e2aeb65f030801b70c2f6468faca261d401ae622fc87"
        );
        assert_eq!(
            authorization(&suite(), &post, SUITE_DATE, "us-east-1", "service"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    /// The S3 documentation's GET Object example: more headers, another key and service.
    #[test]
    fn the_s3_get_object_example_signs_as_published() {
        let creds = Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        };
        let input = CanonicalInput {
            method: "GET",
            path: "/test.txt",
            query: "",
            headers: vec![
                ("Host".into(), "examplebucket.s3.amazonaws.com".into()),
                ("Range".into(), "bytes=0-9".into()),
                ("x-amz-content-sha256".into(), EMPTY.into()),
                ("x-amz-date".into(), "20130524T000000Z".into()),
            ],
            payload_sha256: EMPTY.into(),
        };
        let scope = scope("20130524", "us-east-1", "s3");
        assert!(
            string_to_sign("20130524T000000Z", &scope, &canonical_request(&input))
                .ends_with("7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")
        );
        assert!(
            authorization(&creds, &input, "20130524T000000Z", "us-east-1", "s3").ends_with(
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
            )
        );
    }

    fn grpc_input(body: &[u8], path: &'static str, date: &str) -> CanonicalInput<'static> {
        CanonicalInput {
            method: "POST",
            path,
            query: "",
            headers: vec![
                ("host".into(), "127.0.0.1:7480".into()),
                ("x-amz-date".into(), date.into()),
            ],
            payload_sha256: hex_sha256(&grpc_frame(body)),
        }
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let date = "20261128T150000Z";
        let good = grpc_input(b"\x0a\x03abc", "/berth.v1.Ecs/RunTask", date);
        let header = authorization(&suite(), &good, date, "on-prem", "ecs");
        let auth = Authorization::parse(&header).unwrap();
        assert_eq!(auth.access_key_id, "AKIDEXAMPLE");
        assert_eq!(auth.service, "ecs");
        assert_eq!(auth.signed_headers, ["host", "x-amz-date"]);
        let secret = &suite().secret_access_key;
        assert!(auth.verify(secret, &good, date));
        // Tampered body, path, time, host; wrong secret.
        let body = grpc_input(b"\x0a\x03abd", "/berth.v1.Ecs/RunTask", date);
        assert!(!auth.verify(secret, &body, date));
        let path = grpc_input(b"\x0a\x03abc", "/berth.v1.Ecs/StopTask", date);
        assert!(!auth.verify(secret, &path, date));
        let later = grpc_input(b"\x0a\x03abc", "/berth.v1.Ecs/RunTask", "20261128T150001Z");
        assert!(!auth.verify(secret, &later, "20261128T150001Z"));
        let mut host = good.clone();
        host.headers[0].1 = "evil:7480".into();
        assert!(!auth.verify(secret, &host, date));
        assert!(!auth.verify("wrong", &good, date));
        // Another scope (service) in the credential does not verify either.
        let mut other = auth.clone();
        other.service = "ssm".into();
        assert!(!other.verify(secret, &good, date));
        let mut garbage = auth.clone();
        garbage.signature = "zz".into();
        assert!(!garbage.verify(secret, &good, date));
    }

    #[test]
    fn malformed_authorization_values_are_refused() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA1 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request, SignedHeaders=host, Signature=00, Signature=01",
            "AWS4-HMAC-SHA256 Credential=A/2015083/r/s/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s, SignedHeaders=host, Signature=00",
        ] {
            assert!(Authorization::parse(bad).is_err(), "{bad}");
        }
        // AWS also accepts the parameters without spaces after the commas.
        let ok = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=A/20150830/r/s/aws4_request,SignedHeaders=host;x-amz-date,Signature=00",
        )
        .unwrap();
        assert_eq!(ok.region, "r");
    }

    #[test]
    fn signing_times_print_parse_and_skew_as_aws_words_it() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(t), SUITE_DATE);
        assert_eq!(parse_amz_date(SUITE_DATE).unwrap(), t);
        for bad in [
            "2015-08-30T12:36:00Z",
            "20150830T123600",
            "20151330T123600Z",
        ] {
            assert!(parse_amz_date(bad).is_err(), "{bad}");
        }
        assert_eq!(skew_error(SUITE_DATE, t + MAX_SKEW), None);
        assert_eq!(skew_error(SUITE_DATE, t - MAX_SKEW), None);
        assert_eq!(
            skew_error(SUITE_DATE, t + Duration::from_secs(15 * 60)).unwrap(),
            "Signature expired: 20150830T123600Z is now earlier than 20150830T124600Z (20150830T125100Z - 5 min.)"
        );
        assert_eq!(
            skew_error(SUITE_DATE, t - Duration::from_secs(301)).unwrap(),
            "Signature not yet current: 20150830T123600Z is still later than 20150830T123559Z (20150830T123059Z + 5 min.)"
        );
    }

    #[test]
    fn grpc_paths_name_aws_services_and_frames_are_grpcs() {
        assert_eq!(scope_service("/berth.v1.Ecs/RunTask"), Some("ecs"));
        assert_eq!(
            scope_service("/berth.v1.SecretsManager/CreateSecret"),
            Some("secretsmanager")
        );
        assert_eq!(
            scope_service("/berth.v1.Ec2/CreateSecurityGroup"),
            Some("ec2")
        );
        assert_eq!(scope_service("/berth.v1.Agent/Session"), None);
        assert_eq!(grpc_frame(b"ab"), b"\0\0\0\0\x02ab");
    }

    #[test]
    fn credentials_never_print_their_secret() {
        assert!(!format!("{:?}", suite()).contains("EXAMPLEKEY"));
    }
}
