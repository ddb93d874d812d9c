use super::*;

fn op(target: &str) -> &'static Operation {
    operation(target).expect("a served target").1
}

#[test]
fn targets_name_their_services_signing_names_and_rows() {
    let (signing, run) = operation("AmazonEC2ContainerServiceV20141113.RunTask").unwrap();
    assert_eq!(
        (signing, run.path().as_str()),
        ("ecs", "/berth.v1.Ecs/RunTask")
    );
    let (signing, get) = operation("Logs_20140328.GetLogEvents").unwrap();
    assert_eq!(
        (signing, get.path().as_str()),
        ("logs", "/berth.v1.Logs/GetLogEvents")
    );
    let (signing, put) = operation("AmazonSSM.PutParameter").unwrap();
    assert_eq!(
        (signing, put.path().as_str()),
        ("ssm", "/berth.v1.Ssm/PutParameter")
    );
    let (signing, s) = operation("secretsmanager.CreateSecret").unwrap();
    assert_eq!(
        (signing, s.path().as_str()),
        ("secretsmanager", "/berth.v1.SecretsManager/CreateSecret")
    );
    for bad in [
        "AmazonEC2ContainerServiceV20141113.RunTasks",
        "AmazonEC2ContainerServiceV20141113",
        "Logs_20140328.RunTask",
        "Logs_20140328.StartLiveTail",
        "DynamoDB_20120810.GetItem",
    ] {
        assert_eq!(
            operation(bad).err().map(|e| e.kind).as_deref(),
            Some(UNKNOWN_OPERATION),
            "{bad}"
        );
    }
}

#[test]
fn an_unknown_member_is_refused_by_name_at_any_depth() {
    let run = op("AmazonEC2ContainerServiceV20141113.RunTask");
    let e = decode_request(run, br#"{"taskDefinition":"web","overides":{}}"#).unwrap_err();
    assert_eq!(e.kind, SERIALIZATION);
    assert!(
        e.message.contains("\"overides\"") && e.message.contains("RunTaskRequest"),
        "{e:?}"
    );
    // The proto's own spelling is not ECS's: refused too.
    let e = decode_request(run, br#"{"task_definition":"web"}"#).unwrap_err();
    assert!(e.message.contains("\"task_definition\""), "{e:?}");
    let e = decode_request(
        run,
        br#"{"taskDefinition":"web","overrides":{"containerOverrides":[{"name":"a","comand":["x"]}]}}"#,
    )
    .unwrap_err();
    assert!(
        e.message.contains("\"comand\"")
            && e.message
                .contains("RunTaskRequest.overrides.containerOverrides[0]"),
        "{e:?}"
    );
    let e = decode_request(run, b"[1]").unwrap_err();
    assert_eq!(e.kind, SERIALIZATION);
    let e = decode_request(run, b"{").unwrap_err();
    assert_eq!(e.kind, SERIALIZATION);
    let e = decode_request(run, br#"{"count":"many"}"#).unwrap_err();
    assert_eq!(e.kind, SERIALIZATION, "{e:?}");
    // Known members decode; null is "not given"; an empty body is an empty request.
    let bytes =
        decode_request(run, br#"{"taskDefinition":"web:1","count":2,"group":null}"#).unwrap();
    let req = <berth_proto::v1::RunTaskRequest as prost::Message>::decode(&bytes[..]).unwrap();
    assert_eq!(req.task_definition, "web:1");
    assert_eq!(req.count, Some(2));
    let list = op("AmazonEC2ContainerServiceV20141113.ListClusters");
    assert!(decode_request(list, b"").unwrap().is_empty());
}

#[test]
fn timestamps_are_epoch_seconds_and_longs_numbers_in_answers() {
    use berth_proto::v1 as pb;
    let describe = op("AmazonEC2ContainerServiceV20141113.DescribeTasks");
    let resp = pb::DescribeTasksResponse {
        tasks: vec![pb::Task {
            task_arn: "arn:aws:ecs:on-prem:000000000000:task/c/1".into(),
            created_at: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000,
            }),
            started_at: Some(pbjson_types::Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let v = encode_response(describe, &prost::Message::encode_to_vec(&resp)).unwrap();
    let t = &v["tasks"][0];
    assert_eq!(t["createdAt"], serde_json::json!(1_700_000_000.123));
    assert_eq!(t["startedAt"], serde_json::json!(1_700_000_001));
    // ECS's empty lists: failures shown, a task's unset lists as ECS shows them.
    assert_eq!(v["failures"], serde_json::json!([]));
    assert!(t.get("stoppedAt").is_none());
    let logs = op("Logs_20140328.DescribeLogGroups");
    let resp = pb::DescribeLogGroupsResponse {
        log_groups: vec![pb::LogGroup {
            log_group_name: "/ecs/web".into(),
            stored_bytes: 12,
            creation_time: 1_700_000_000_000,
            ..Default::default()
        }],
        ..Default::default()
    };
    let v = encode_response(logs, &prost::Message::encode_to_vec(&resp)).unwrap();
    assert_eq!(v["logGroups"][0]["storedBytes"], serde_json::json!(12));
    assert_eq!(
        v["logGroups"][0]["creationTime"],
        serde_json::json!(1_700_000_000_000_i64)
    );
}

#[test]
fn errors_are_400_with_the_exception_and_500_for_the_servers_fault() {
    let e = AwsError::from_status(
        tonic::Code::NotFound,
        Some("ClusterNotFoundException"),
        "Cluster not found.".into(),
    );
    let r = error_response(&e, "rid");
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-amzn-errortype"], "ClusterNotFoundException");
    assert_eq!(r.headers()["x-amzn-requestid"], "rid");
    assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
    let e = AwsError::from_status(tonic::Code::Internal, None, "disk".into());
    assert_eq!(
        (e.kind.as_str(), e.http_status().as_u16()),
        ("ServerException", 500)
    );
    let e = AwsError::from_status(tonic::Code::InvalidArgument, None, "bad".into());
    assert_eq!(
        (e.kind.as_str(), e.http_status().as_u16()),
        ("ClientException", 400)
    );
}

#[test]
fn request_timestamps_come_as_epoch_seconds() {
    assert_eq!(rfc3339(1_700_000_000.5).unwrap(), "2023-11-14T22:13:20.5Z");
    assert_eq!(
        epoch_seconds("2023-11-14T22:13:20.5Z").unwrap(),
        serde_json::json!(1_700_000_000.5)
    );
    assert!(rfc3339(f64::NAN).is_none());
}

#[tokio::test]
async fn a_query_protocol_call_is_refused_in_the_xml_its_client_reads() {
    let form = |body: &'static str| {
        let mut r = http::Request::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        r
    };
    let iam = form("Action=ListAccessKeys&Version=2010-05-08");
    assert!(is_query_protocol(&iam));
    let r = query_protocol_refusal(iam).await;
    assert_eq!(r.status(), 400);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.starts_with(
            "<ErrorResponse><Error><Type>Sender</Type><Code>UnknownOperationException</Code>"
        ) && body.contains("IAM's ListAccessKeys"),
        "{body}"
    );
    let ec2 = form("Action=DescribeSecurityGroups&Version=2016-11-15");
    let body = query_protocol_refusal(ec2)
        .await
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("<Response><Errors><Error><Code>UnknownOperationException</Code>")
            && body.contains("berth ec2"),
        "{body}"
    );
    // AWS JSON is not the query protocol.
    let mut json = form("{}");
    json.headers_mut().insert(
        "x-amz-target",
        http::HeaderValue::from_static("AmazonEC2ContainerServiceV20141113.ListClusters"),
    );
    assert!(!is_query_protocol(&json));
}

#[test]
fn browsers_are_told_apart_and_the_target_must_be_signed() {
    let mut h = http::HeaderMap::new();
    assert!(!from_a_browser(&h));
    h.insert(
        "sec-fetch-site",
        http::HeaderValue::from_static("same-origin"),
    );
    assert!(from_a_browser(&h));
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::ORIGIN,
        http::HeaderValue::from_static("http://rebound.example"),
    );
    assert!(from_a_browser(&h));

    let auth = |signed: &str| {
        let mut h = http::HeaderMap::new();
        let v = format!(
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261129/us-east-1/ecs/aws4_request, SignedHeaders={signed}, Signature={}",
            "0".repeat(64)
        );
        h.insert(berth_proto::sigv4::AUTHORIZATION, v.parse().unwrap());
        h
    };
    assert!(target_signed(&auth(
        "content-type;host;x-amz-date;x-amz-target"
    )));
    assert!(!target_signed(&auth("host;x-amz-date")));
    assert!(!target_signed(&http::HeaderMap::new()));
}

#[test]
fn a_refusal_shows_at_most_100_characters_of_a_value() {
    let long = serde_json::json!("x".repeat(10_000));
    let shown = shown(&long);
    assert_eq!(shown.chars().count(), 101, "{shown}");
    assert!(shown.ends_with('…'));
    assert_eq!(super::shown(&serde_json::json!([1])), "[1]");
}
