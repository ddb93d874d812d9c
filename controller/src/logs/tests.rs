//! The log store and service: exactly-once appends, ordering, time ranges, tokens, retention
//! with a moved clock, filter patterns, and CloudWatch's refusals.

use super::store::{Append, Cursor, LogStore, NewEvent, Query, RedbLogStore};
use super::*;
use std::sync::atomic::{AtomicI64, Ordering};

const NOW: i64 = 1_800_000_000_000;

struct Rig {
    svc: LogService,
    clock: Arc<AtomicI64>,
    store: Arc<RedbLogStore>,
}

fn rig() -> Rig {
    let store = Arc::new(RedbLogStore::in_memory().unwrap());
    let clock = Arc::new(AtomicI64::new(NOW));
    let c = clock.clone();
    let svc = LogService::new(store.clone(), Arc::new(move || c.load(Ordering::SeqCst)));
    Rig { svc, clock, store }
}

fn batch(group: &str, stream: &str, first: u64, msgs: &[&str]) -> LogBatch {
    LogBatch {
        log_group_name: group.into(),
        log_stream_name: stream.into(),
        create_group: true,
        task_arn: "arn:aws:ecs:on-prem:000000000000:task/c/t1".into(),
        container_name: "app".into(),
        first_sequence: first,
        events: msgs
            .iter()
            .enumerate()
            .map(|(i, m)| LogEvent {
                timestamp: NOW + first as i64 + i as i64,
                message: m.to_string(),
            })
            .collect(),
    }
}

async fn messages(svc: &LogService, group: &str, stream: &str) -> Vec<String> {
    let r = svc
        .get_log_events(GetLogEventsRequest {
            log_group_name: group.into(),
            log_stream_name: stream.into(),
            start_from_head: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    r.events.into_iter().map(|e| e.message).collect()
}

async fn create(svc: &LogService, group: &str, stream: &str) {
    svc.create_log_group(CreateLogGroupRequest {
        log_group_name: group.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    svc.create_log_stream(CreateLogStreamRequest {
        log_group_name: group.into(),
        log_stream_name: stream.into(),
    })
    .await
    .unwrap();
}

async fn put(
    svc: &LogService,
    group: &str,
    stream: &str,
    events: &[(i64, &str)],
) -> PutLogEventsResponse {
    svc.put_log_events(PutLogEventsRequest {
        log_group_name: group.into(),
        log_stream_name: stream.into(),
        log_events: events
            .iter()
            .map(|(t, m)| InputLogEvent {
                timestamp: *t,
                message: m.to_string(),
            })
            .collect(),
        sequence_token: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn resent_and_overlapping_batches_are_stored_once_in_order() {
    let r = rig();
    let a = r
        .svc
        .store_batch(batch("g", "s", 1, &["1", "2", "3"]))
        .await;
    assert_eq!((a.stored_through, a.error.as_str()), (3, ""));
    // The same batch again (a lost ack), then one overlapping it. Events are known by their
    // numbers, not their content or time: resent with other times, they are not stored twice.
    let mut again = batch("g", "s", 1, &["1", "2", "3"]);
    again.events.iter_mut().for_each(|e| e.timestamp += 1000);
    let a = r.svc.store_batch(again).await;
    assert_eq!(a.stored_through, 3);
    let mut overlap = batch("g", "s", 2, &["2", "3", "4", "5"]);
    overlap.events.iter_mut().for_each(|e| e.timestamp -= 1);
    let a = r.svc.store_batch(overlap).await;
    assert_eq!(a.stored_through, 5);
    assert_eq!(messages(&r.svc, "g", "s").await, ["1", "2", "3", "4", "5"]);
    assert_eq!(r.store.event_count().unwrap(), 5);
    // The stream records its owner.
    let s = r.svc.stored_streams("g").await.unwrap();
    assert_eq!(s[0].container_name, "app");
    assert!(s[0].task_arn.ends_with("task/c/t1"));
    assert_eq!(s[0].stored_through, 5);
    assert_eq!(s[0].stored_bytes, 5 * (1 + store::EVENT_OVERHEAD));
}

#[tokio::test]
async fn put_log_events_into_an_agents_stream_takes_no_number_of_the_agents() {
    let r = rig();
    let a = r.svc.store_batch(batch("g", "s", 1, &["1", "2"])).await;
    assert_eq!(a.stored_through, 2);
    // A caller puts into the agent's stream (CloudWatch allows it) between two batches.
    put(&r.svc, "g", "s", &[(NOW + 2, "put-a"), (NOW + 2, "put-b")]).await;
    // The agent's next batch, numbered on from its own, is all stored and acknowledged.
    let a = r.svc.store_batch(batch("g", "s", 3, &["3", "4"])).await;
    assert_eq!((a.stored_through, a.error.as_str()), (4, ""));
    let mut got = messages(&r.svc, "g", "s").await;
    got.sort();
    assert_eq!(got, ["1", "2", "3", "4", "put-a", "put-b"]);
    assert_eq!(r.store.event_count().unwrap(), 6);
}

#[tokio::test]
async fn an_empty_batch_makes_the_stream_or_says_the_group_is_missing() {
    let r = rig();
    // The agent's announcement of a stream before any output (as Docker's awslogs driver
    // creates its stream when the container starts).
    let a = r.svc.store_batch(batch("g", "s", 0, &[])).await;
    assert_eq!((a.stored_through, a.error.as_str()), (0, ""));
    let s = r.svc.stored_streams("g").await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].log_stream_name, "s");
    let mut b = batch("nogroup", "s", 0, &[]);
    b.create_group = false;
    let a = r.svc.store_batch(b).await;
    assert!(
        a.error.starts_with("ResourceNotFoundException"),
        "{}",
        a.error
    );
}

#[tokio::test]
async fn a_batch_for_a_missing_group_is_refused_and_not_stored() {
    let r = rig();
    let mut b = batch("nogroup", "s", 1, &["x"]);
    b.create_group = false;
    let a = r.svc.store_batch(b).await;
    assert_eq!(
        a.error,
        "ResourceNotFoundException: The specified log group does not exist."
    );
    assert_eq!(a.stored_through, 0);
    assert_eq!(r.store.event_count().unwrap(), 0);
    assert!(r.svc.stored_streams("nogroup").await.is_err());
}

#[tokio::test]
async fn events_are_ordered_by_time_within_a_stream_and_across_streams() {
    let r = rig();
    create(&r.svc, "g", "a").await;
    r.svc
        .create_log_stream(CreateLogStreamRequest {
            log_group_name: "g".into(),
            log_stream_name: "b".into(),
        })
        .await
        .unwrap();
    put(&r.svc, "g", "a", &[(NOW - 30, "a1"), (NOW - 10, "a2")]).await;
    put(&r.svc, "g", "b", &[(NOW - 20, "b1"), (NOW, "b2")]).await;
    // A later batch with earlier times sorts by time.
    put(&r.svc, "g", "a", &[(NOW - 40, "a0")]).await;
    assert_eq!(messages(&r.svc, "g", "a").await, ["a0", "a1", "a2"]);
    let f = r
        .svc
        .filter_log_events(FilterLogEventsRequest {
            log_group_name: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = f.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(got, ["a0", "a1", "b1", "a2", "b2"]);
    assert_eq!(f.events[2].log_stream_name, "b");
    assert!(f.next_token.is_none());
}

#[tokio::test]
async fn time_ranges_select_start_inclusive_end_exclusive_for_get_inclusive_for_filter() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    put(
        &r.svc,
        "g",
        "s",
        &[(NOW - 3, "a"), (NOW - 2, "b"), (NOW - 1, "c"), (NOW, "d")],
    )
    .await;
    let g = r
        .svc
        .get_log_events(GetLogEventsRequest {
            log_group_name: "g".into(),
            log_stream_name: "s".into(),
            start_time: Some(NOW - 2),
            end_time: Some(NOW),
            start_from_head: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = g.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(got, ["b", "c"]);
    let f = r
        .svc
        .filter_log_events(FilterLogEventsRequest {
            log_group_name: "g".into(),
            start_time: Some(NOW - 2),
            end_time: Some(NOW),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = f.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(got, ["b", "c", "d"]);
}

#[tokio::test]
async fn get_log_events_tokens_page_forward_and_backward_and_end_where_they_started() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    let evs: Vec<(i64, String)> = (0..7).map(|i| (NOW - 100 + i, format!("m{i}"))).collect();
    let refs: Vec<(i64, &str)> = evs.iter().map(|(t, m)| (*t, m.as_str())).collect();
    put(&r.svc, "g", "s", &refs).await;
    let get = |token: Option<String>, head: Option<bool>| {
        let svc = &r.svc;
        async move {
            svc.get_log_events(GetLogEventsRequest {
                log_group_name: "g".into(),
                log_stream_name: "s".into(),
                limit: Some(3),
                next_token: token,
                start_from_head: head,
                ..Default::default()
            })
            .await
            .unwrap()
        }
    };
    let msgs = |r: &GetLogEventsResponse| -> Vec<String> {
        r.events.iter().map(|e| e.message.clone()).collect()
    };
    // Default: the latest page.
    let last = get(None, None).await;
    assert_eq!(msgs(&last), ["m4", "m5", "m6"]);
    let before = get(Some(last.next_backward_token.clone()), None).await;
    assert_eq!(msgs(&before), ["m1", "m2", "m3"]);
    // From the head, forward to the end: the last page's token comes back unchanged.
    let mut token = None;
    let mut all = Vec::new();
    let mut ended = false;
    // 3 full pages, one partial, then the end: the same token back.
    for _ in 0..6 {
        let page = get(token.clone(), Some(true)).await;
        all.extend(msgs(&page));
        if token.as_deref() == Some(page.next_forward_token.as_str()) {
            ended = true;
            break;
        }
        token = Some(page.next_forward_token);
    }
    assert!(ended, "the forward token never came back unchanged");
    assert_eq!(all, ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    assert!(last.next_forward_token.starts_with("f/") && last.next_forward_token.ends_with("/s"));
    // A new event shows on the latest page's forward token.
    put(&r.svc, "g", "s", &[(NOW, "new")]).await;
    assert_eq!(
        msgs(&get(Some(last.next_forward_token), None).await),
        ["new"]
    );
    let bad = r
        .svc
        .get_log_events(GetLogEventsRequest {
            log_group_name: "g".into(),
            log_stream_name: "s".into(),
            next_token: Some("garbage".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.exception_name(), "InvalidParameterException");
}

#[tokio::test]
async fn filter_log_events_pages_with_next_token_and_matches_patterns() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    let evs: Vec<(i64, String)> = (0..10)
        .map(|i| {
            (
                NOW - 100 + i,
                format!("{} line {i}", if i % 2 == 0 { "ERROR" } else { "INFO" }),
            )
        })
        .collect();
    let refs: Vec<(i64, &str)> = evs.iter().map(|(t, m)| (*t, m.as_str())).collect();
    put(&r.svc, "g", "s", &refs).await;
    let mut token = None;
    let mut got = Vec::new();
    loop {
        let page = r
            .svc
            .filter_log_events(FilterLogEventsRequest {
                log_group_name: "g".into(),
                filter_pattern: Some("ERROR -\"line 4\"".into()),
                limit: Some(2),
                next_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        got.extend(page.events.into_iter().map(|e| e.message));
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        got,
        [
            "ERROR line 0",
            "ERROR line 2",
            "ERROR line 6",
            "ERROR line 8"
        ]
    );
    let e = r
        .svc
        .filter_log_events(FilterLogEventsRequest {
            log_group_name: "g".into(),
            filter_pattern: Some("{ $.x = 1 }".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    let e = r
        .svc
        .filter_log_events(FilterLogEventsRequest {
            log_group_name: "g".into(),
            log_stream_names: vec!["s".into()],
            log_stream_name_prefix: Some("s".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot both"), "{e}");
}

#[tokio::test]
async fn retention_deletes_old_events_when_the_clock_passes_it() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    put(
        &r.svc,
        "g",
        "s",
        &[
            (NOW - 3 * DAY_MS, "old"),
            (NOW - 2 * DAY_MS, "older-but-kept"),
        ],
    )
    .await;
    put(&r.svc, "g", "s", &[(NOW, "new")]).await;
    assert_eq!(
        r.svc.enforce_retention().await.unwrap(),
        0,
        "no policy: nothing expires"
    );
    r.svc
        .put_retention_policy(PutRetentionPolicyRequest {
            log_group_name: "g".into(),
            retention_in_days: 3,
        })
        .await
        .unwrap();
    assert_eq!(r.svc.enforce_retention().await.unwrap(), 0);
    // A day later the first event is older than 3 days.
    r.clock.fetch_add(DAY_MS / 2 + 1, Ordering::SeqCst);
    assert_eq!(r.svc.enforce_retention().await.unwrap(), 1);
    assert_eq!(messages(&r.svc, "g", "s").await, ["older-but-kept", "new"]);
    let s = r
        .svc
        .describe_log_streams(DescribeLogStreamsRequest {
            log_group_name: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        s.log_streams[0].first_event_timestamp,
        Some(NOW - 2 * DAY_MS)
    );
    let g = r
        .svc
        .describe_log_groups(DescribeLogGroupsRequest::default())
        .await
        .unwrap();
    assert_eq!(g.log_groups[0].retention_in_days, Some(3));
    assert_eq!(
        g.log_groups[0].stored_bytes,
        ("older-but-kept".len() + "new".len()) as i64 + 2 * store::EVENT_OVERHEAD
    );
}

#[tokio::test]
async fn put_log_events_rejects_too_old_too_new_and_expired_as_cloudwatch_does() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    let resp = put(
        &r.svc,
        "g",
        "s",
        &[
            (NOW - 15 * DAY_MS, "too old"),
            (NOW - 1000, "ok1"),
            (NOW, "ok2"),
            (NOW + 3 * 3_600_000, "too new"),
        ],
    )
    .await;
    let info = resp.rejected_log_events_info.unwrap();
    assert_eq!(info.too_old_log_event_end_index, Some(1));
    assert_eq!(info.too_new_log_event_start_index, Some(3));
    assert_eq!(info.expired_log_event_end_index, None);
    assert_eq!(messages(&r.svc, "g", "s").await, ["ok1", "ok2"]);
    r.svc
        .put_retention_policy(PutRetentionPolicyRequest {
            log_group_name: "g".into(),
            retention_in_days: 1,
        })
        .await
        .unwrap();
    let resp = put(
        &r.svc,
        "g",
        "s",
        &[(NOW - 2 * DAY_MS, "expired"), (NOW, "ok3")],
    )
    .await;
    let info = resp.rejected_log_events_info.unwrap();
    assert_eq!(info.expired_log_event_end_index, Some(1));
    assert_eq!(info.too_old_log_event_end_index, None);
}

#[tokio::test]
async fn bad_requests_are_refused_with_cloudwatchs_exceptions_and_change_nothing() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    let put_err = |events: Vec<InputLogEvent>, stream: &str| {
        let svc = &r.svc;
        let stream = stream.to_string();
        async move {
            svc.put_log_events(PutLogEventsRequest {
                log_group_name: "g".into(),
                log_stream_name: stream,
                log_events: events,
                sequence_token: None,
            })
            .await
            .unwrap_err()
        }
    };
    let ev = |t: i64, m: &str| InputLogEvent {
        timestamp: t,
        message: m.into(),
    };
    let e = put_err(vec![ev(NOW, "b"), ev(NOW - 1, "a")], "s").await;
    assert!(e.to_string().contains("chronological order"), "{e}");
    let e = put_err(vec![ev(NOW - DAY_MS - 1, "a"), ev(NOW, "b")], "s").await;
    assert!(e.to_string().contains("24 hours"), "{e}");
    let e = put_err(vec![ev(NOW, "")], "s").await;
    assert_eq!(e.exception_name(), "InvalidParameterException");
    let e = put_err(vec![ev(NOW, "x")], "nostream").await;
    assert_eq!(e.exception_name(), "ResourceNotFoundException");
    assert_eq!(e.to_string(), "The specified log stream does not exist.");
    assert_eq!(r.store.event_count().unwrap(), 0);
    let e = r
        .svc
        .create_log_group(CreateLogGroupRequest {
            log_group_name: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ResourceAlreadyExistsException");
    let e = r
        .svc
        .create_log_group(CreateLogGroupRequest {
            log_group_name: "bad name".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'logGroupName'"), "{e}");
    let e = r
        .svc
        .put_retention_policy(PutRetentionPolicyRequest {
            log_group_name: "g".into(),
            retention_in_days: 2,
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("enum value set"), "{e}");
    let e = r
        .svc
        .describe_log_streams(DescribeLogStreamsRequest {
            log_group_name: "g".into(),
            order_by: Some("LastEventTime".into()),
            log_stream_name_prefix: Some("x".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    let e = r
        .svc
        .delete_log_group(DeleteLogGroupRequest {
            log_group_name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ResourceNotFoundException");
    let g = r
        .svc
        .describe_log_groups(DescribeLogGroupsRequest::default())
        .await
        .unwrap();
    assert_eq!(g.log_groups.len(), 1);
    assert_eq!(g.log_groups[0].retention_in_days, None);
}

#[tokio::test]
async fn describe_pages_and_orders_groups_and_streams() {
    let r = rig();
    for g in ["app/a", "app/b", "app/c", "other"] {
        r.svc
            .create_log_group(CreateLogGroupRequest {
                log_group_name: g.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut token = None;
    let mut names = Vec::new();
    loop {
        let p = r
            .svc
            .describe_log_groups(DescribeLogGroupsRequest {
                log_group_name_prefix: Some("app/".into()),
                limit: Some(2),
                next_token: token,
            })
            .await
            .unwrap();
        names.extend(p.log_groups.into_iter().map(|g| g.log_group_name));
        token = p.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, ["app/a", "app/b", "app/c"]);
    for (s, t) in [("x", NOW - 5), ("y", NOW - 50), ("z", NOW - 1)] {
        r.svc
            .create_log_stream(CreateLogStreamRequest {
                log_group_name: "other".into(),
                log_stream_name: s.into(),
            })
            .await
            .unwrap();
        put(&r.svc, "other", s, &[(t, "m")]).await;
    }
    let d = r
        .svc
        .describe_log_streams(DescribeLogStreamsRequest {
            log_group_name: "other".into(),
            order_by: Some("LastEventTime".into()),
            descending: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = d
        .log_streams
        .iter()
        .map(|s| s.log_stream_name.as_str())
        .collect();
    assert_eq!(got, ["z", "x", "y"]);
    assert_eq!(d.log_streams[0].last_event_timestamp, Some(NOW - 1));
    assert!(d.log_streams[0]
        .arn
        .ends_with(":log-group:other:log-stream:z"));
    let d = r
        .svc
        .describe_log_streams(DescribeLogStreamsRequest {
            log_group_name: "other".into(),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let d2 = r
        .svc
        .describe_log_streams(DescribeLogStreamsRequest {
            log_group_name: "other".into(),
            next_token: d.next_token,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<_> = d
        .log_streams
        .iter()
        .chain(&d2.log_streams)
        .map(|s| s.log_stream_name.as_str())
        .collect();
    assert_eq!(got, ["x", "y", "z"]);
}

#[tokio::test]
async fn deleting_a_group_deletes_its_events() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    put(&r.svc, "g", "s", &[(NOW, "x")]).await;
    create(&r.svc, "h", "s").await;
    put(&r.svc, "h", "s", &[(NOW, "y")]).await;
    r.svc
        .delete_log_group(DeleteLogGroupRequest {
            log_group_name: "g".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.store.event_count().unwrap(), 1);
    assert_eq!(messages(&r.svc, "h", "s").await, ["y"]);
}

#[tokio::test]
async fn a_live_tail_sees_new_matching_events_of_its_group() {
    let r = rig();
    create(&r.svc, "g", "s").await;
    let mut tail = r
        .svc
        .start_live_tail(StartLiveTailRequest {
            log_group_name: "g".into(),
            filter_pattern: Some("hello".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    put(&r.svc, "g", "s", &[(NOW, "skip me"), (NOW, "hello world")]).await;
    let b = tail.batches.recv().await.unwrap();
    let got: Vec<_> = tail.select(&b).into_iter().map(|e| e.message).collect();
    assert_eq!(got, ["hello world"]);
    let e = r
        .svc
        .start_live_tail(StartLiveTailRequest {
            log_group_name: "missing".into(),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(e.exception_name(), "ResourceNotFoundException");
}

/// The store's merge across streams honours a cursor in the middle of a timestamp tie.
#[test]
fn a_cursor_splits_ties_by_stream_and_sequence() {
    let s = RedbLogStore::in_memory().unwrap();
    for stream in ["a", "b"] {
        s.append(Append {
            group: "g".into(),
            stream: stream.into(),
            create_group: true,
            create_stream: true,
            first_sequence: None,
            events: (0..3)
                .map(|i| NewEvent {
                    timestamp: 5,
                    message: format!("{stream}{i}"),
                })
                .collect(),
            ingestion_time: 1,
            owner: None,
        })
        .unwrap();
    }
    let streams: Vec<(u64, String)> = s
        .streams("g")
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.log_stream_name))
        .collect();
    let read = |lo: Cursor| -> Vec<String> {
        s.query(&Query {
            streams: streams.clone(),
            lo,
            hi: Cursor::at(i64::MAX),
            reverse: false,
            limit: 100,
            keep: &|_| true,
        })
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
    };
    assert_eq!(read(Cursor::at(0)), ["a0", "a1", "a2", "b0", "b1", "b2"]);
    let mid = Cursor {
        timestamp: 5,
        stream_id: streams[0].0,
        // a2: PutLogEvents' numbers start at PUT_SEQUENCE_BASE + 1.
        sequence: store::PUT_SEQUENCE_BASE + 3,
    };
    assert_eq!(read(mid.next()), ["b0", "b1", "b2"]);
    assert_eq!(read(mid), ["a2", "b0", "b1", "b2"]);
}

/// A store on disk keeps its events across a reopen (a controller restart).
#[test]
fn the_store_file_keeps_events_across_a_reopen() {
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let path = std::env::temp_dir().join(format!("berth-logs-{}.redb", crate::service::new_id()));
    let _gone = Gone(path.clone());
    {
        let s = RedbLogStore::open(&path).unwrap();
        let a = s
            .append(Append {
                group: "g".into(),
                stream: "s".into(),
                create_group: true,
                create_stream: true,
                first_sequence: Some(1),
                events: vec![NewEvent {
                    timestamp: 1,
                    message: "kept".into(),
                }],
                ingestion_time: 1,
                owner: None,
            })
            .unwrap();
        assert_eq!(a.stored_through, 1);
    }
    let s = RedbLogStore::open(&path).unwrap();
    assert_eq!(s.event_count().unwrap(), 1);
    assert_eq!(s.streams("g").unwrap()[0].stored_through, 1);
}

/// Retention deletes in bounded transactions: each call at most its budget, the oldest first,
/// until none older is left.
#[test]
fn expiry_deletes_at_most_its_budget_per_transaction() {
    let s = RedbLogStore::in_memory().unwrap();
    s.append(Append {
        group: "g".into(),
        stream: "s".into(),
        create_group: true,
        create_stream: true,
        first_sequence: None,
        events: (0..6)
            .map(|i| NewEvent {
                timestamp: i,
                message: format!("m{i}"),
            })
            .collect(),
        ingestion_time: 1,
        owner: None,
    })
    .unwrap();
    assert_eq!(s.expire("g", 5, 2).unwrap(), 2);
    assert_eq!(s.expire("g", 5, 2).unwrap(), 2);
    assert_eq!(s.expire("g", 5, 2).unwrap(), 1);
    assert_eq!(s.expire("g", 5, 2).unwrap(), 0);
    let left = s.streams("g").unwrap();
    assert_eq!(left[0].first_event_timestamp, Some(5));
    assert_eq!(left[0].stored_bytes, 2 + store::EVENT_OVERHEAD);
    assert_eq!(s.event_count().unwrap(), 1);
}
