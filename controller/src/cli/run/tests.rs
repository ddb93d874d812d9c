//! Paging and waiters against an in-process fake `Ecs` server on 127.0.0.1:0 that speaks the
//! real protocol: it answers ListTaskDefinitions in pages of `maxResults` over a fixed list and
//! DescribeTasks from a script, and records what it was asked.

use super::*;
use berth_proto::v1 as pb;
use prost::Message as _;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};

#[derive(Default)]
struct State {
    items: Vec<String>,
    /// (nextToken, maxResults) of each ListTaskDefinitions request.
    asked: Mutex<Vec<(Option<String>, Option<i32>)>>,
    /// DescribeTasks answers, in order; the last repeats.
    script: Mutex<VecDeque<Result<pb::DescribeTasksResponse, tonic::Status>>>,
    /// RunTask's answer, and the requests it got.
    run_task: Option<pb::RunTaskResponse>,
    run_requests: Mutex<Vec<pb::RunTaskRequest>>,
    /// DescribePullProgress answers, in order; the last repeats; none: Unimplemented.
    progress: Mutex<VecDeque<pb::DescribePullProgressResponse>>,
}

#[derive(Clone)]
struct Fake(Arc<State>);

impl tonic::server::NamedService for Fake {
    const NAME: &'static str = "berth.v1.Ecs";
}

struct Handler {
    path: String,
    state: Arc<State>,
}

impl tonic::server::UnaryService<Vec<u8>> for Handler {
    type Response = Vec<u8>;
    type Future = BoxFuture<tonic::Response<Vec<u8>>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<Vec<u8>>) -> Self::Future {
        let state = self.state.clone();
        let path = self.path.clone();
        Box::pin(async move {
            let body = req.into_inner();
            match path.as_str() {
                "/berth.v1.Ecs/ListTaskDefinitions" => {
                    let r = pb::ListTaskDefinitionsRequest::decode(body.as_slice())
                        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    state
                        .asked
                        .lock()
                        .unwrap()
                        .push((r.next_token.clone(), r.max_results));
                    let start: usize = r.next_token.as_deref().unwrap_or("0").parse().unwrap();
                    let size = r.max_results.unwrap_or(100) as usize;
                    let end = (start + size).min(state.items.len());
                    let resp = pb::ListTaskDefinitionsResponse {
                        task_definition_arns: state.items[start..end].to_vec(),
                        next_token: (end < state.items.len()).then(|| end.to_string()),
                    };
                    Ok(tonic::Response::new(resp.encode_to_vec()))
                }
                "/berth.v1.Ecs/DescribeTasks" => {
                    let mut script = state.script.lock().unwrap();
                    let answer = if script.len() > 1 {
                        script.pop_front()
                    } else {
                        script.front().cloned()
                    };
                    match answer {
                        Some(Ok(resp)) => Ok(tonic::Response::new(resp.encode_to_vec())),
                        Some(Err(s)) => Err(s),
                        None => Err(tonic::Status::internal("no script")),
                    }
                }
                "/berth.v1.Ecs/RunTask" => {
                    let r = pb::RunTaskRequest::decode(body.as_slice())
                        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
                    state.run_requests.lock().unwrap().push(r);
                    match &state.run_task {
                        Some(resp) => Ok(tonic::Response::new(resp.encode_to_vec())),
                        None => Err(tonic::Status::internal("no RunTask answer")),
                    }
                }
                "/berth.v1.Ecs/DescribePullProgress" => {
                    let mut script = state.progress.lock().unwrap();
                    let answer = if script.len() > 1 {
                        script.pop_front()
                    } else {
                        script.front().cloned()
                    };
                    match answer {
                        Some(resp) => Ok(tonic::Response::new(resp.encode_to_vec())),
                        None => Err(tonic::Status::unimplemented("DescribePullProgress")),
                    }
                }
                other => Err(tonic::Status::unimplemented(other.to_string())),
            }
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Fake {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let handler = Handler {
            path: req.uri().path().to_string(),
            state: self.0.clone(),
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(Raw);
            Ok(grpc.unary(handler, req).await)
        })
    }
}

struct Server {
    url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(state: State) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(state);
    let fake = Fake(state.clone());
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(fake)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Server {
        url: format!("http://{addr}"),
        state,
        task,
    }
}

fn arns(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("arn:td/f{i}:1")).collect()
}

async fn berth(s: &Server, args: &[&str]) -> Result<String, CliError> {
    let mut all = vec!["berth", "--endpoint-url", &s.url, "ecs"];
    all.extend_from_slice(args);
    run(all.into_iter().map(String::from).collect()).await
}

fn listed(out: &str) -> (Vec<String>, Option<String>) {
    let v: Value = serde_json::from_str(out).unwrap();
    let items = v["taskDefinitionArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    (items, v["NextToken"].as_str().map(String::from))
}

#[tokio::test]
async fn pages_are_followed_and_merged_with_page_size_as_max_results() {
    let s = serve(State {
        items: arns(250),
        ..State::default()
    })
    .await;
    let out = berth(&s, &["list-task-definitions", "--page-size", "7"])
        .await
        .unwrap();
    let (items, next) = listed(&out);
    assert_eq!(items, arns(250));
    assert_eq!(next, None);
    let asked = s.state.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 250_usize.div_ceil(7));
    assert!(asked.iter().all(|(_, m)| *m == Some(7)), "{asked:?}");
    assert_eq!(asked[0].0, None);
    assert_eq!(asked[1].0.as_deref(), Some("7"));
}

#[tokio::test]
async fn max_items_truncates_and_the_token_resumes_exactly_there() {
    let s = serve(State {
        items: arns(40),
        ..State::default()
    })
    .await;
    // Mid-page: 10 items of pages of 7 stop 3 items into the second page.
    let out = berth(
        &s,
        &[
            "list-task-definitions",
            "--page-size",
            "7",
            "--max-items",
            "10",
        ],
    )
    .await
    .unwrap();
    let (first, next) = listed(&out);
    assert_eq!(first, arns(40)[..10]);
    let token = next.expect("a NextToken when truncated");
    // botocore's token: the page's own token and how much of it was printed.
    assert_eq!(
        ResumeToken::decode(&token).unwrap(),
        ResumeToken {
            next_token: Some("7".into()),
            truncate: 3
        }
    );
    let out = berth(
        &s,
        &[
            "list-task-definitions",
            "--page-size",
            "7",
            "--max-items",
            "14",
            "--starting-token",
            &token,
        ],
    )
    .await
    .unwrap();
    let (second, next) = listed(&out);
    assert_eq!(second, arns(40)[10..24]);
    let out = berth(
        &s,
        &["list-task-definitions", "--starting-token", &next.unwrap()],
    )
    .await
    .unwrap();
    let (rest, next) = listed(&out);
    assert_eq!(rest, arns(40)[24..]);
    assert_eq!(next, None);
    // Truncated again on the page it resumed in: the token counts the items skipped before.
    let out = berth(
        &s,
        &[
            "list-task-definitions",
            "--page-size",
            "7",
            "--max-items",
            "2",
            "--starting-token",
            &token,
        ],
    )
    .await
    .unwrap();
    let (two, next) = listed(&out);
    assert_eq!(two, arns(40)[10..12]);
    assert_eq!(
        ResumeToken::decode(&next.unwrap()).unwrap(),
        ResumeToken {
            next_token: Some("7".into()),
            truncate: 5
        }
    );
    // On a page boundary the token is the service's own.
    let out = berth(
        &s,
        &[
            "list-task-definitions",
            "--page-size",
            "5",
            "--max-items",
            "10",
        ],
    )
    .await
    .unwrap();
    let (_, next) = listed(&out);
    assert_eq!(
        ResumeToken::decode(&next.unwrap()).unwrap(),
        ResumeToken {
            next_token: Some("10".into()),
            truncate: 0
        }
    );
}

#[tokio::test]
async fn no_paginate_makes_one_call_and_prints_the_services_token() {
    let s = serve(State {
        items: arns(150),
        ..State::default()
    })
    .await;
    let out = berth(&s, &["list-task-definitions", "--no-paginate"])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["taskDefinitionArns"].as_array().unwrap().len(), 100);
    assert_eq!(v["nextToken"], "100");
    // --next-token / --max-results given by hand also make one call, as in the aws CLI.
    let out = berth(&s, &["list-task-definitions", "--max-results", "3"])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["taskDefinitionArns"].as_array().unwrap().len(), 3);
    assert_eq!(s.state.asked.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn text_output_of_a_truncated_listing_ends_with_the_token() {
    let s = serve(State {
        items: arns(5),
        ..State::default()
    })
    .await;
    let out = berth(
        &s,
        &[
            "list-task-definitions",
            "--max-items",
            "2",
            "--output",
            "text",
        ],
    )
    .await
    .unwrap();
    let token = ResumeToken {
        next_token: None,
        truncate: 2,
    }
    .encode();
    assert_eq!(
        out,
        format!("TASKDEFINITIONARNS\tarn:td/f0:1\nTASKDEFINITIONARNS\tarn:td/f1:1\nNEXTTOKEN\t{token}\n")
    );
}

fn tasks(statuses: &[&str]) -> Result<pb::DescribeTasksResponse, tonic::Status> {
    Ok(pb::DescribeTasksResponse {
        tasks: statuses
            .iter()
            .map(|s| pb::Task {
                last_status: s.to_string(),
                ..Default::default()
            })
            .collect(),
        failures: vec![],
    })
}

async fn wait_for(
    script: Vec<Result<pb::DescribeTasksResponse, tonic::Status>>,
    waiter: &str,
    attempts: u128,
) -> (Result<(), CliError>, usize) {
    let s = serve(State {
        script: Mutex::new(script.into()),
        ..State::default()
    })
    .await;
    let waiter = table::WAITERS.iter().find(|w| w.name == waiter).unwrap();
    let mut conn = Connection::open_at(&s.url, false).await.unwrap();
    let request = serde_json::json!({"cluster": "c", "tasks": ["t"]});
    let r = wait_every(
        &mut conn,
        waiter,
        request,
        Duration::from_millis(5),
        attempts,
    )
    .await;
    let left = s.state.script.lock().unwrap().len();
    (r, left)
}

#[tokio::test]
async fn tasks_running_waits_for_every_task_and_fails_as_botocore_says() {
    let (r, left) = wait_for(
        vec![
            tasks(&["PENDING", "RUNNING"]),
            tasks(&["RUNNING", "RUNNING"]),
        ],
        "TasksRunning",
        10,
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(left, 1);
    let (r, _) = wait_for(
        vec![
            tasks(&["PENDING", "RUNNING"]),
            tasks(&["RUNNING", "STOPPED"]),
        ],
        "TasksRunning",
        10,
    )
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.exit_code(), 255);
    assert_eq!(
        e.to_string(),
        "Waiter TasksRunning failed: Waiter encountered a terminal failure state: For expression \"tasks[].lastStatus\" we matched expected path: \"STOPPED\" at least once"
    );
    let missing = Ok(pb::DescribeTasksResponse {
        tasks: vec![],
        failures: vec![pb::Failure {
            arn: "t".into(),
            reason: "MISSING".into(),
            detail: None,
        }],
    });
    let (r, _) = wait_for(vec![missing], "TasksRunning", 10).await;
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("\"failures[].reason\" we matched expected path: \"MISSING\""),);
    let (r, _) = wait_for(vec![tasks(&["PENDING"])], "TasksRunning", 3).await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "Waiter TasksRunning failed: Max attempts exceeded"
    );
    let mut gone = tonic::Status::not_found("Cluster not found.");
    gone.metadata_mut().insert(
        berth_proto::exceptions::METADATA_KEY,
        "ClusterNotFoundException".parse().unwrap(),
    );
    let (r, _) = wait_for(vec![Err(gone)], "TasksRunning", 3).await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "Waiter TasksRunning failed: An error occurred (ClusterNotFoundException): Cluster not found."
    );
}

#[tokio::test]
async fn tasks_stopped_needs_every_task_stopped() {
    let (r, left) = wait_for(
        vec![
            tasks(&["RUNNING", "STOPPED"]),
            tasks(&["STOPPED", "STOPPED"]),
        ],
        "TasksStopped",
        10,
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(left, 1);
    // An empty answer matches nothing (botocore's pathAll needs a non-empty list).
    let (r, _) = wait_for(vec![tasks(&[])], "TasksStopped", 2).await;
    assert!(r.is_err());
}

#[tokio::test]
async fn an_unreachable_endpoint_is_exit_255() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = run(["berth", "--endpoint-url", &url, "ecs", "list-clusters"]
        .into_iter()
        .map(String::from)
        .collect())
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), 255);
    assert_eq!(
        e.to_string(),
        format!("Could not connect to the endpoint URL: \"{url}\"")
    );
}

#[test]
fn debug_output_hides_secret_members_at_any_depth() {
    let v = serde_json::json!({
        "Name": "db", "SecretString": "hunter2",
        "AccessKey": {"AccessKeyId": "AKIA1", "SecretAccessKey": "s3cr3t"},
        "Parameter": {"Name": "p", "Value": "v4lue"},
        "ActivationCode": "c0de", "list": [{"SecretBinary": "YmluYXJ5"}]
    });
    let text = super::redacted(&v).to_string();
    for secret in ["hunter2", "s3cr3t", "v4lue", "c0de", "YmluYXJ5"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(
        text.contains("AKIA1") && text.contains("\"Name\":\"db\""),
        "{text}"
    );
}

// ---- run-task --wait (issue 11) ----

const TASK: &str = "arn:aws:ecs:on-prem:000000000000:task/c/8f2c0a1b2c3d4e5f6a7b8c9d0e1f2a3b";

fn task_is(status: &str, reason: &str) -> Result<pb::DescribeTasksResponse, tonic::Status> {
    Ok(pb::DescribeTasksResponse {
        tasks: vec![pb::Task {
            task_arn: TASK.into(),
            last_status: status.into(),
            stopped_reason: (!reason.is_empty()).then(|| reason.to_string()),
            ..Default::default()
        }],
        failures: vec![],
    })
}

fn pulling(phase: &str, layers_done: u32, bytes_done: u64) -> pb::DescribePullProgressResponse {
    pb::DescribePullProgressResponse {
        progress: vec![pb::TaskPullProgress {
            task_arn: TASK.into(),
            containers: vec![pb::ContainerPullProgress {
                container_name: "web".into(),
                image: "reg.example/app:1".into(),
                phase: phase.into(),
                layers_done,
                layers_total: 5,
                bytes_done,
                bytes_total: 101_300_000,
            }],
        }],
        failures: vec![],
    }
}

fn launched() -> Option<pb::RunTaskResponse> {
    Some(pb::RunTaskResponse {
        tasks: vec![pb::Task {
            task_arn: TASK.into(),
            last_status: "PROVISIONING".into(),
            ..Default::default()
        }],
        failures: vec![],
    })
}

/// Runs `--wait` against a fake following `script` and `progress`; the lines said, what
/// would be printed, how the wait ended and the RunTask requests the fake got.
async fn follow_with(
    script: Vec<Result<pb::DescribeTasksResponse, tonic::Status>>,
    progress: Vec<pb::DescribePullProgressResponse>,
    timeout: Duration,
) -> (Vec<String>, Value, Result<(), CliError>, usize) {
    let s = serve(State {
        script: Mutex::new(script.into()),
        progress: Mutex::new(progress.into()),
        run_task: launched(),
        ..State::default()
    })
    .await;
    let mut conn = Connection::open_at(&s.url, false).await.unwrap();
    let mut said = Vec::new();
    let (json, end) = crate::cli::follow::run_task_and_wait(
        &mut conn,
        serde_json::json!({"cluster": "c", "taskDefinition": "web"}),
        timeout,
        Duration::from_millis(5),
        &mut |l| said.push(l.to_string()),
    )
    .await
    .unwrap();
    let runs = s.state.run_requests.lock().unwrap().len();
    (said, json, end, runs)
}

/// The wait prints one line per change (an unchanged report prints nothing), ends when the
/// task is RUNNING, and prints run-task's JSON with the task as DescribeTasks shows it.
#[tokio::test]
async fn run_task_wait_shows_each_change_of_the_pull_until_running() {
    let (said, json, end, runs) = follow_with(
        vec![
            task_is("PENDING", ""),
            task_is("PENDING", ""),
            task_is("PENDING", ""),
            task_is("PENDING", ""),
            task_is("RUNNING", ""),
        ],
        vec![
            pulling("RESOLVING", 0, 0),
            pulling("DOWNLOADING", 3, 45_200_000),
            pulling("DOWNLOADING", 3, 45_200_000),
            pulling("DONE", 5, 101_300_000),
        ],
        Duration::from_secs(600),
    )
    .await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(runs, 1);
    assert_eq!(
        said,
        vec![
            "8f2c0a1b…: web: RESOLVING reg.example/app:1",
            "8f2c0a1b…: PENDING",
            "8f2c0a1b…: web: DOWNLOADING 3/5 layers, 45.2 of 101.3 MB",
            "8f2c0a1b…: web: DONE reg.example/app:1 (101.3 MB)",
            "8f2c0a1b…: RUNNING",
        ]
    );
    assert_eq!(json["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(json["tasks"][0]["taskArn"], TASK);
    assert_eq!(json["failures"], serde_json::json!([]));
}

/// A STOPPED task ends the wait with its stoppedReason (exit 255), the JSON showing it; a
/// controller without DescribePullProgress still gets the statuses followed.
#[tokio::test]
async fn run_task_wait_fails_with_the_stopped_reason() {
    let why = "CannotPullContainerError: pull access denied for reg.example/app";
    let (said, json, end, _) = follow_with(
        vec![task_is("PENDING", ""), task_is("STOPPED", why)],
        vec![],
        Duration::from_secs(600),
    )
    .await;
    let e = end.unwrap_err();
    assert_eq!(e.exit_code(), 255);
    assert_eq!(e.to_string(), format!("Task {TASK} STOPPED: {why}"));
    assert_eq!(json["tasks"][0]["lastStatus"], "STOPPED");
    assert_eq!(json["tasks"][0]["stoppedReason"], why);
    assert!(said[0].starts_with("(no pull progress: "), "{said:?}");
    assert_eq!(&said[1..], ["8f2c0a1b…: PENDING", "8f2c0a1b…: STOPPED"]);
}

/// Past --wait-timeout the wait gives up, saying so and what is still waited for.
#[tokio::test]
async fn run_task_wait_gives_up_after_its_timeout() {
    let (_, json, end, _) = follow_with(
        vec![task_is("PENDING", "")],
        vec![pulling("DOWNLOADING", 1, 1)],
        Duration::from_secs(1),
    )
    .await;
    let e = end.unwrap_err();
    assert_eq!(e.exit_code(), 255);
    assert_eq!(
        e.to_string(),
        "Gave up waiting after 1 s (--wait-timeout): 8f2c0a1b… is PENDING"
    );
    assert_eq!(json["tasks"][0]["lastStatus"], "PENDING");
}

/// Through the command line: `--wait` prints run-task's JSON once RUNNING; bad flags are
/// refused by name (exit 252) before anything is sent.
#[tokio::test]
async fn run_task_wait_flags_are_checked_by_name() {
    let s = serve(State {
        script: Mutex::new(vec![task_is("RUNNING", "")].into()),
        run_task: launched(),
        ..State::default()
    })
    .await;
    let out = berth(
        &s,
        &[
            "run-task",
            "--cluster",
            "c",
            "--task-definition",
            "web",
            "--wait",
            "--wait-timeout",
            "30",
        ],
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING");
    for (args, needle) in [
        (
            &[
                "run-task",
                "--task-definition",
                "web",
                "--wait-timeout",
                "5",
            ][..],
            "argument --wait-timeout: only with --wait",
        ),
        (
            &[
                "run-task",
                "--task-definition",
                "web",
                "--wait",
                "--wait-timeout",
                "soon",
            ][..],
            "argument --wait-timeout: invalid int value: 'soon'",
        ),
        (
            &[
                "run-task",
                "--task-definition",
                "web",
                "--wait",
                "--wait-timeout",
                "0",
            ][..],
            "argument --wait-timeout: must be at least 1, got 0",
        ),
        (
            &["describe-tasks", "--tasks", "t", "--wait"][..],
            "'--wait'",
        ),
    ] {
        let e = berth(&s, args).await.unwrap_err();
        assert_eq!(e.exit_code(), 252, "{args:?}: {e}");
        assert!(e.to_string().contains(needle), "{args:?}: {e}");
    }
    assert_eq!(
        s.state.run_requests.lock().unwrap().len(),
        1,
        "only the good one ran"
    );
}
