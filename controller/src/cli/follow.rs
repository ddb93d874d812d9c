//! `berth ecs run-task --wait` (issue 11, a Berth extension): after RunTask, follows the tasks
//! (DescribeTasks and DescribePullProgress, polled every [`POLL`] as aws waiters poll) and
//! prints on stderr one line whenever a task's status or a container's pull changes, until
//! every task is RUNNING (exit 0), one is STOPPED (its stoppedReason, exit 255) or
//! `--wait-timeout` passes (exit 255). Either way stdout is run-task's JSON with the tasks as
//! DescribeTasks last showed them.

use std::collections::HashMap;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::Value;

use super::run::Connection;
use super::table;
use super::CliError;

/// How often the tasks are polled while waiting.
pub const POLL: Duration = Duration::from_millis(500);
/// `--wait-timeout`'s default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

const WAIT: &str = "berth-wait";
const WAIT_TIMEOUT: &str = "berth-wait-timeout";

/// `sub` with `--wait` and `--wait-timeout` when `api` is RunTask.
pub fn args(api: &str, sub: Command) -> Command {
    if api != "RunTask" {
        return sub;
    }
    sub.arg(
        Arg::new(WAIT)
            .long("wait")
            .action(ArgAction::SetTrue)
            .help("Berth: follow the tasks (status and image pull progress on stderr) until every one is RUNNING; exit non-zero if one stops or --wait-timeout passes"),
    )
    .arg(
        Arg::new(WAIT_TIMEOUT)
            .long("wait-timeout")
            .action(ArgAction::Set)
            .value_name("SECS")
            .help("Berth: how long --wait waits (default 900)"),
    )
}

/// `Some(timeout)` when `--wait` is given to `api` (RunTask); a bad `--wait-timeout`, or one
/// without `--wait`, is refused by name.
pub fn wait_of(api: &str, m: &ArgMatches) -> Result<Option<Duration>, CliError> {
    if api != "RunTask" {
        return Ok(None);
    }
    let timeout = m
        .get_one::<String>(WAIT_TIMEOUT)
        .map(|s| match s.trim().parse::<u64>() {
            Ok(0) => Err(CliError::Usage(
                "argument --wait-timeout: must be at least 1, got 0".into(),
            )),
            Ok(n) => Ok(Duration::from_secs(n)),
            Err(_) => Err(CliError::Usage(format!(
                "argument --wait-timeout: invalid int value: '{s}'"
            ))),
        })
        .transpose()?;
    match (m.get_flag(WAIT), timeout) {
        (true, t) => Ok(Some(t.unwrap_or(DEFAULT_TIMEOUT))),
        (false, Some(_)) => Err(CliError::Usage(
            "argument --wait-timeout: only with --wait".into(),
        )),
        (false, None) => Ok(None),
    }
}

/// Runs the task(s) of `request` and follows them. `Err`: RunTask itself failed (nothing to
/// print). `Ok((json, end))`: `json` is what to print on stdout, `end` how the wait ended.
/// Each progress line goes to `say`.
pub async fn run_task_and_wait(
    conn: &mut Connection,
    request: Value,
    timeout: Duration,
    poll: Duration,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<(Value, Result<(), CliError>), CliError> {
    let op = |api| table::by_api(api).ok_or_else(|| CliError::Other(format!("no operation {api}")));
    let (run_task, describe, progress_op) = (
        op("RunTask")?,
        op("DescribeTasks")?,
        op("DescribePullProgress")?,
    );
    let cluster = request.get("cluster").cloned();
    let mut out = conn.call(run_task, request).await?;
    let arns: Vec<Value> = out
        .get("tasks")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| t.get("taskArn").cloned())
                .collect()
        })
        .unwrap_or_default();
    if arns.is_empty() {
        let why = out
            .get("failures")
            .and_then(Value::as_array)
            .and_then(|f| f.first())
            .map(|f| text(f, "reason"))
            .unwrap_or_default();
        return Ok((
            out,
            Err(CliError::Other(format!(
                "RunTask started no task, so there is nothing to wait for: {why}"
            ))),
        ));
    }
    let mut ask = serde_json::json!({ "tasks": arns });
    if let (Some(c), Some(obj)) = (cluster, ask.as_object_mut()) {
        obj.insert("cluster".into(), c);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown: HashMap<String, String> = HashMap::new();
    // An older controller without DescribePullProgress: said once, then only statuses.
    let mut with_progress = true;
    loop {
        let next = tokio::time::Instant::now() + poll;
        let now = match within(deadline, timeout, conn.call(describe, ask.clone())).await {
            Ok(v) => v,
            Err(e) => return Ok((out, Err(e))),
        };
        let tasks: Vec<Value> = now
            .get("tasks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(obj) = out.as_object_mut() {
            obj.insert("tasks".into(), Value::Array(tasks.clone()));
        }
        if let Some(f) = now
            .get("failures")
            .and_then(Value::as_array)
            .and_then(|f| f.first())
        {
            return Ok((
                out,
                Err(CliError::Other(format!(
                    "Task {} is {}",
                    text(f, "arn"),
                    text(f, "reason")
                ))),
            ));
        }
        let pending = tasks.iter().any(|t| text(t, "lastStatus") != "RUNNING");
        let progress = if pending && with_progress {
            match within(deadline, timeout, conn.call(progress_op, ask.clone())).await {
                Ok(v) => Some(v),
                Err(e @ CliError::Other(_)) => return Ok((out, Err(e))),
                Err(e) => {
                    say(&format!("(no pull progress: {e})"));
                    with_progress = false;
                    None
                }
            }
        } else {
            None
        };
        for t in &tasks {
            let arn = text(t, "taskArn");
            let of_task = progress
                .as_ref()
                .and_then(|p| p.get("progress"))
                .and_then(Value::as_array)
                .and_then(|ps| ps.iter().find(|p| text(p, "taskArn") == arn));
            for (key, line) in lines(t, of_task) {
                if shown.get(&key) != Some(&line) {
                    say(&line);
                    shown.insert(key, line);
                }
            }
        }
        if let Some(t) = tasks.iter().find(|t| text(t, "lastStatus") == "STOPPED") {
            return Ok((
                out,
                Err(CliError::Other(format!(
                    "Task {} STOPPED: {}",
                    text(t, "taskArn"),
                    text(t, "stoppedReason")
                ))),
            ));
        }
        if !pending {
            return Ok((out, Ok(())));
        }
        if tokio::time::Instant::now() >= deadline {
            let waiting: Vec<String> = tasks
                .iter()
                .filter(|t| text(t, "lastStatus") != "RUNNING")
                .map(|t| {
                    format!(
                        "{} is {}",
                        short(&text(t, "taskArn")),
                        text(t, "lastStatus")
                    )
                })
                .collect();
            return Ok((
                out,
                Err(CliError::Other(format!(
                    "Gave up waiting after {} s (--wait-timeout): {}",
                    timeout.as_secs(),
                    waiting.join(", ")
                ))),
            ));
        }
        tokio::time::sleep_until(next.min(deadline)).await;
    }
}

/// `call`, bounded by the wait's deadline: a controller that stops answering cannot make the
/// wait outlast `--wait-timeout`.
async fn within(
    deadline: tokio::time::Instant,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<Value, CliError>>,
) -> Result<Value, CliError> {
    // A poll that starts just before the deadline still gets a moment to answer.
    let until = deadline.max(tokio::time::Instant::now() + Duration::from_secs(5));
    tokio::time::timeout_at(until, call)
        .await
        .unwrap_or_else(|_| {
            Err(CliError::Other(format!(
                "Gave up waiting after {} s (--wait-timeout): the controller did not answer",
                timeout.as_secs()
            )))
        })
}

/// A member as text ("" when absent); numbers too, as pbjson writes 64-bit ones as strings.
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    text(v, key).parse().unwrap_or(0)
}

/// A task's id, shortened for a progress line: its first 8 characters and an ellipsis.
fn short(task_arn: &str) -> String {
    let id = task_arn.rsplit('/').next().unwrap_or(task_arn);
    match id.char_indices().nth(8) {
        Some((at, _)) => format!("{}…", &id[..at]),
        None => id.to_string(),
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_000_000.0)
}

/// The progress lines of one task, each with the key it replaces: the task's status, and
/// while it is not RUNNING, each container's pull as `progress` (DescribePullProgress's entry
/// for the task) shows it.
pub fn lines(task: &Value, progress: Option<&Value>) -> Vec<(String, String)> {
    let arn = text(task, "taskArn");
    let id = short(&arn);
    let status = text(task, "lastStatus");
    let mut out = Vec::new();
    let running = status == "RUNNING";
    if let (false, Some(p)) = (running, progress) {
        for c in p
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = text(c, "containerName");
            out.push((
                format!("{arn}/{name}"),
                format!("{id}: {name}: {}", pull_line(c)),
            ));
        }
    }
    out.push((arn, format!("{id}: {status}")));
    out
}

/// One container's pull, e.g. `DOWNLOADING 3/5 layers, 45.2 of 101.3 MB`.
pub fn pull_line(c: &Value) -> String {
    let phase = text(c, "phase");
    let image = text(c, "image");
    let (done, total) = (number(c, "layersDone"), number(c, "layersTotal"));
    let (bytes, bytes_total) = (number(c, "bytesDone"), number(c, "bytesTotal"));
    let size = if bytes_total > 0 {
        format!("{} of {} MB", megabytes(bytes), megabytes(bytes_total))
    } else {
        format!("{} MB", megabytes(bytes))
    };
    match phase.as_str() {
        "DOWNLOADING" => format!("DOWNLOADING {done}/{total} layers, {size}"),
        "UNPACKING" => format!("UNPACKING {done}/{total} layers"),
        "DONE" if bytes_total > 0 => format!("DONE {image} ({} MB)", megabytes(bytes_total)),
        _ => format!("{phase} {image}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_container_s_pull_reads_as_its_phase_layers_and_megabytes() {
        let c = |phase: &str| {
            json!({"containerName": "web", "image": "reg.example/app:1", "phase": phase,
                   "layersDone": 3, "layersTotal": 5, "bytesDone": "45200000", "bytesTotal": "101300000"})
        };
        assert_eq!(
            pull_line(&c("DOWNLOADING")),
            "DOWNLOADING 3/5 layers, 45.2 of 101.3 MB"
        );
        assert_eq!(pull_line(&c("UNPACKING")), "UNPACKING 3/5 layers");
        assert_eq!(pull_line(&c("DONE")), "DONE reg.example/app:1 (101.3 MB)");
        assert_eq!(pull_line(&c("RESOLVING")), "RESOLVING reg.example/app:1");
        assert_eq!(pull_line(&c("CACHED")), "CACHED reg.example/app:1");
        let unknown_size = json!({"phase": "DOWNLOADING", "layersTotal": 0, "bytesDone": 1500000, "bytesTotal": "0"});
        assert_eq!(pull_line(&unknown_size), "DOWNLOADING 0/0 layers, 1.5 MB");
    }

    #[test]
    fn a_task_s_lines_show_its_containers_until_it_runs() {
        let arn = "arn:aws:ecs:on-prem:000000000000:task/default/8f2c0a1b2c3d4e5f";
        let p = json!({"taskArn": arn, "containers": [
            {"containerName": "web", "image": "i", "phase": "DOWNLOADING", "layersDone": 1,
             "layersTotal": 2, "bytesDone": "1000000", "bytesTotal": "2000000"}]});
        let pending = json!({"taskArn": arn, "lastStatus": "PENDING"});
        assert_eq!(
            lines(&pending, Some(&p)),
            vec![
                (
                    format!("{arn}/web"),
                    "8f2c0a1b…: web: DOWNLOADING 1/2 layers, 1.0 of 2.0 MB".to_string()
                ),
                (arn.to_string(), "8f2c0a1b…: PENDING".to_string()),
            ]
        );
        let running = json!({"taskArn": arn, "lastStatus": "RUNNING"});
        assert_eq!(
            lines(&running, Some(&p)),
            vec![(arn.to_string(), "8f2c0a1b…: RUNNING".to_string())]
        );
    }
}
