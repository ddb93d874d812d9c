//! Issue 10, the syslog log driver against a real rsyslog (Debian's `rsyslog` package): a task
//! registered with `logConfiguration.logDriver: syslog` runs five containers, each writing
//! numbered lines to stdout and stderr, over every syslog-address scheme (udp://, tcp://,
//! unix://) and every syslog-format (the default RFC 5424, rfc5424micro, rfc3164); a private
//! rsyslogd listening on loopback and on a unix socket under the test's directory writes every
//! message it parsed with its fields to a file, and the test finds every line there exactly as
//! written, in order, with the tag as APP-NAME (and MSGID), the configured facility, severity
//! info for stdout and err for stderr, the agent's host name and pid, and (RFC 5424) the
//! timestamp sent, which is the line's read time.
//!
//! UDP may lose datagrams; on loopback the kernel drops one only when the receiver's buffer is
//! full, so rsyslog's socket is given a 16 MiB buffer (`rcvbufSize`, root can exceed rmem_max)
//! that holds the whole burst even if rsyslog is not scheduled meanwhile, and the test expects
//! every line.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(120);
/// Numbered lines per stream per container.
const LINES: usize = 1000;
/// Field separator of rsyslog's output template (never in a test line).
const SEP: char = '\u{1f}';

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether rsyslogd is installed; under CI=true its absence fails the test.
fn rsyslogd_present() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v rsyslogd"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if found {
        return true;
    }
    let msg = "rsyslogd is missing (Debian package rsyslog; scripts/install-deps.sh installs it)";
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// A free loopback UDP port.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
}

/// One message as rsyslog parsed it.
#[derive(Debug, Clone)]
struct Parsed {
    input: String,
    timestamp: String,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    facility: String,
    severity: String,
    protocol_version: String,
    msg: String,
}

/// A private rsyslogd in the foreground with its own configuration, sockets, work directory
/// and output file, all under a temporary directory; killed and removed on drop.
struct Rsyslog {
    dir: PathBuf,
    child: Option<Child>,
    udp: u16,
    tcp: u16,
    socket: PathBuf,
    out: PathBuf,
}

impl Rsyslog {
    fn start() -> Self {
        Self::start_on(free_udp_port(), berth_tests::free_port())
    }

    /// [`Rsyslog::start`] listening on these loopback ports.
    fn start_on(udp: u16, tcp: u16) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-rsyslog-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("work")).expect("rsyslog dir");
        let socket = dir.join("log.sock");
        let out = dir.join("messages");
        // The RFC 5424 fields of every message, one message per line. imuxsock's special
        // parser (the default, for the traditional local format) and its system-time stamp are
        // turned off so the socket's messages go through the regular parser chain (RFC 5424)
        // as the network inputs' do. Control characters stay as sent; one main-queue worker
        // keeps the order of arrival.
        let conf = format!(
            r#"global(workDirectory="{work}" parser.escapeControlCharactersOnReceive="off")
main_queue(queue.workerThreads="1")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}" rcvbufSize="16m")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
input(type="imuxsock" Socket="{socket}" UseSpecialParser="off" ParseHostname="on" IgnoreTimestamp="off" RateLimit.Interval="0")
template(name="fields" type="string" string="%inputname%{s}%timereported:::date-rfc3339%{s}%hostname%{s}%app-name%{s}%procid%{s}%msgid%{s}%syslogfacility-text%{s}%syslogseverity-text%{s}%protocol-version%{s}%msg%\n")
action(type="omfile" file="{out}" template="fields")
"#,
            work = dir.join("work").display(),
            socket = socket.display(),
            out = out.display(),
            s = SEP,
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("rsyslog.conf");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).expect("stderr file"))
            .spawn()
            .expect("rsyslogd");
        let mut r = Rsyslog {
            dir,
            child: Some(child),
            udp,
            tcp,
            socket,
            out,
        };
        r.wait_ready();
        r
    }

    /// Waits until a probe sent on each of the three inputs is in the output file: then
    /// every input listens and the file is written. (UDP and a socket not yet bound drop a
    /// probe, so each round sends them again.)
    fn wait_ready(&mut self) {
        wait_for("rsyslogd to receive on udp, tcp and its socket", T, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "rsyslogd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
                );
            }
            let probe = |input: &str| {
                format!("<14>1 2024-01-01T00:00:00Z probehost probe - - - ready {input}")
            };
            if let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") {
                let _ = s.send_to(probe("udp").as_bytes(), ("127.0.0.1", self.udp));
            }
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.tcp).into(),
                Duration::from_secs(2),
            ) {
                let m = probe("tcp");
                let _ = s.write_all(format!("{} {m}", m.len()).as_bytes());
            }
            if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
                let _ = s.send_to(probe("unix").as_bytes(), &self.socket);
            }
            let got = self.messages();
            ["udp", "tcp", "unix"]
                .iter()
                .all(|i| {
                    got.iter()
                        .any(|m| m.app_name == "probe" && m.msg == format!("ready {i}"))
                })
                .then_some(())
        });
    }

    /// Every message in the output file so far.
    fn messages(&self) -> Vec<Parsed> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(10, SEP).collect();
                (f.len() == 10).then(|| Parsed {
                    input: f[0].into(),
                    timestamp: f[1].into(),
                    hostname: f[2].into(),
                    app_name: f[3].into(),
                    procid: f[4].into(),
                    msgid: f[5].into(),
                    facility: f[6].into(),
                    severity: f[7].into(),
                    protocol_version: f[8].into(),
                    msg: f[9].into(),
                })
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The lines a container writes: numbered ones on both streams, interleaved, and a few that
/// test what a syslog message must carry through unchanged.
fn script() -> String {
    format!(
        "i=1; while [ $i -le {LINES} ]; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); done; \
         echo ' leading and trailing spaces  '; echo 'ünïcode ✓ <134>1 - [sd x=\"y\"] | end' >&2"
    )
}

fn want(stream: &str) -> Vec<String> {
    let mut w: Vec<String> = (1..=LINES).map(|i| format!("{stream} {i}")).collect();
    w.push(if stream == "out" {
        " leading and trailing spaces  ".into()
    } else {
        "ünïcode ✓ <134>1 - [sd x=\"y\"] | end".into()
    });
    w
}

/// Milliseconds since the epoch of `2026-11-29T06:03:46.243Z` (or `.243000Z`), the forms
/// the driver sends (rsyslog's date-rfc3339 keeps the precision and zone sent).
fn rfc3339_ms(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if !(b.len() == 24 || b.len() == 27)
        || &ts[4..5] != "-"
        || &ts[10..11] != "T"
        || &ts[19..20] != "."
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (h, mi, s, ms) = (n(11..13)?, n(14..16)?, n(17..19)?, n(20..23)?);
    n(20..b.len() - 1)?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + mi) * 60 + s)
        .ok()
        .map(|secs| secs * 1000 + ms as u64)
}

/// Asserts `got` is `want`, naming the first difference (not printing thousands of lines).
fn same_lines(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} lines where {} were written; line {i} is {:?}, written {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One container of the task: its name, logConfiguration options, and what rsyslog should
/// show for its messages.
struct Case {
    name: &'static str,
    opts: Vec<(&'static str, String)>,
    /// rsyslog's input.
    input: &'static str,
    /// APP-NAME (`None`: the default tag, the runtime id's first 12 characters).
    tag: Option<&'static str>,
    facility: &'static str,
    /// RFC 5424 (VERSION 1) or the BSD format (rsyslog's protocol-version 0).
    rfc5424: bool,
}

#[test]
fn syslog_driver_delivers_to_rsyslog_over_udp_tcp_and_a_unix_socket() {
    if !prerequisites() || !rsyslogd_present() {
        return;
    }
    let rsyslog = Rsyslog::start();
    let c = Cluster::start("logs-rsyslog");
    let udp = format!("udp://127.0.0.1:{}", rsyslog.udp);
    let tcp = format!("tcp://127.0.0.1:{}", rsyslog.tcp);
    let unix = format!("unix://{}", rsyslog.socket.display());
    let cases = [
        Case {
            name: "viaudp",
            opts: vec![
                ("syslog-address", udp.clone()),
                ("syslog-facility", "local0".into()),
                ("tag", "web-udp".into()),
                // Docker's common options, taken as the spool's (non-blocking) behaviour.
                ("mode", "non-blocking".into()),
                ("max-buffer-size", "4m".into()),
            ],
            input: "imudp",
            tag: Some("web-udp"),
            facility: "local0",
            rfc5424: true,
        },
        Case {
            name: "viatcp",
            opts: vec![
                ("syslog-address", tcp.clone()),
                ("syslog-facility", "local5".into()),
                ("tag", "web-tcp".into()),
                ("syslog-format", "rfc5424".into()),
            ],
            input: "imtcp",
            tag: Some("web-tcp"),
            facility: "local5",
            rfc5424: true,
        },
        // Docker's defaults: facility daemon, tag the container id's first 12 characters.
        Case {
            name: "viaunix",
            opts: vec![("syslog-address", unix)],
            input: "imuxsock",
            tag: None,
            facility: "daemon",
            rfc5424: true,
        },
        Case {
            name: "micro",
            opts: vec![
                ("syslog-address", udp),
                ("syslog-facility", "user".into()),
                ("tag", "web-micro".into()),
                ("syslog-format", "rfc5424micro".into()),
                // Accepted as by Docker's syslog driver, which sends nothing of them.
                ("labels", "a,b".into()),
                ("env", "X".into()),
            ],
            input: "imudp",
            tag: Some("web-micro"),
            facility: "user",
            rfc5424: true,
        },
        Case {
            name: "bsd",
            opts: vec![
                ("syslog-address", tcp),
                ("syslog-facility", "local7".into()),
                ("tag", "web-bsd".into()),
                ("syslog-format", "rfc3164".into()),
            ],
            input: "imtcp",
            tag: Some("web-bsd"),
            facility: "local7",
            rfc5424: false,
        },
    ];
    let mut defs: Vec<serde_json::Value> = cases
        .iter()
        .map(|k| {
            let opts: serde_json::Map<String, serde_json::Value> = k
                .opts
                .iter()
                .map(|(o, v)| (o.to_string(), serde_json::Value::from(v.as_str())))
                .collect();
            serde_json::json!({
                "name": k.name, "image": IMAGE, "essential": false,
                "command": ["sh", "-c", script()],
                "logConfiguration": {"logDriver": "syslog", "options": opts},
            })
        })
        .collect();
    // The task ends when all of them have written everything.
    defs.push(serde_json::json!({
        "name": "done", "image": IMAGE, "essential": true, "command": ["true"],
        "dependsOn": cases.iter().map(|k| serde_json::json!(
            {"containerName": k.name, "condition": "COMPLETE"})).collect::<Vec<_>>(),
    }));
    let td = serde_json::json!({
        "family": "syslogged", "networkMode": "none", "memory": "512",
        "containerDefinitions": defs,
    });
    let td = c.register(&td.to_string());
    let started = now_ms();
    let arn = c.run_task(&td);
    let task = c.wait_status(&arn, "STOPPED", T);
    for ct in task["containers"].as_array().expect("containers") {
        assert_eq!(ct["exitCode"], 0, "every container ran to its end: {task}");
    }
    let runtime_id = |name: &str| -> String {
        task["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ct| ct["name"] == name)
            .and_then(|ct| ct["runtimeId"].as_str())
            .unwrap_or_else(|| panic!("{name}'s runtimeId: {task}"))
            .to_string()
    };
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();
    let agent_pid = c.agent_pid().expect("agent running").to_string();

    let total = cases.len() * 2 * (LINES + 1);
    let got = wait_for("every line in rsyslog's file", T, || {
        let m: Vec<Parsed> = rsyslog
            .messages()
            .into_iter()
            .filter(|m| m.app_name != "probe")
            .collect();
        (m.len() >= total).then_some(m)
    });
    let ended = now_ms();
    assert_eq!(got.len(), total, "nothing doubled or extra");
    for k in &cases {
        let tag = k
            .tag
            .map(String::from)
            .unwrap_or_else(|| runtime_id(k.name).chars().take(12).collect());
        let what = format!("{} ({})", k.name, k.input);
        let mine: Vec<&Parsed> = got.iter().filter(|m| m.app_name == tag).collect();
        // rsyslog's RFC 3164 MSG keeps the space after "TAG[PID]:".
        let by_severity = |sev: &str| -> Vec<String> {
            mine.iter()
                .filter(|m| m.severity == sev)
                .map(|m| {
                    if k.rfc5424 {
                        m.msg.clone()
                    } else {
                        m.msg.strip_prefix(' ').unwrap_or("<no space>").to_string()
                    }
                })
                .collect()
        };
        // Docker's severities: LOG_INFO for stdout, LOG_ERR for stderr.
        same_lines(
            &by_severity("info"),
            &want("out"),
            &format!("{what}: stdout at info"),
        );
        same_lines(
            &by_severity("err"),
            &want("err"),
            &format!("{what}: stderr at err"),
        );
        assert_eq!(mine.len(), 2 * (LINES + 1), "{what}: no other severity");
        for m in &mine {
            // Parsed in the format sent, every header field where the driver put it.
            assert_eq!(m.input, k.input, "{what}: {m:?}");
            assert_eq!(m.facility, k.facility, "{what}: facility: {m:?}");
            assert_eq!(m.hostname, hostname, "{what}: HOSTNAME: {m:?}");
            assert_eq!(m.procid, agent_pid, "{what}: PROCID: {m:?}");
            if k.rfc5424 {
                assert_eq!(m.protocol_version, "1", "{what}: not RFC 5424: {m:?}");
                assert_eq!(
                    m.msgid, tag,
                    "{what}: the tag is MSGID too, as Docker sends it"
                );
                let ts = rfc3339_ms(&m.timestamp)
                    .unwrap_or_else(|| panic!("{what}: not the RFC 3339 time sent: {m:?}"));
                assert!(
                    ts + 1000 >= started && ts <= ended,
                    "{what}: the line's read time, not rsyslog's: {m:?}"
                );
                let micro = k
                    .opts
                    .iter()
                    .any(|(o, v)| *o == "syslog-format" && v == "rfc5424micro");
                assert_eq!(
                    m.timestamp.len(),
                    if micro { 27 } else { 24 },
                    "{what}: {m:?}"
                );
            } else {
                assert_eq!(m.protocol_version, "0", "{what}: not RFC 3164: {m:?}");
            }
        }
    }
    drop(c);
    drop(rsyslog);
}

/// At-least-once across an agent kill -9: a container writes numbered lines to rsyslog over
/// tcp while the agent is killed mid-stream and started again; every line arrives, in order
/// (a batch that was sent but whose position was not yet saved may come twice).
#[test]
fn syslog_lines_survive_an_agent_kill_at_least_once_and_in_order() {
    if !prerequisites() || !rsyslogd_present() {
        return;
    }
    let rsyslog = Rsyslog::start();
    let mut c = Cluster::start("logs-rsyslog-kill");
    // ~100-byte lines, five times the pipe: the container cannot finish while no agent reads.
    let n = 50_000usize;
    let pad = "x".repeat(88);
    let tcp = format!("tcp://127.0.0.1:{}", rsyslog.tcp);
    let td = serde_json::json!({
        "family": "syslog-kill", "networkMode": "none", "memory": "256",
        "containerDefinitions": [{
            "name": "main", "image": IMAGE,
            "command": ["sh", "-c", format!("i=1; while [ $i -le {n} ]; do echo \"$i {pad}\"; i=$((i+1)); done")],
            "logConfiguration": {"logDriver": "syslog", "options": {
                "syslog-address": tcp, "tag": "survivor", "syslog-facility": "local1"}},
        }],
    });
    let td = c.register(&td.to_string());
    let arn = c.run_task(&td);
    let spool = c.container_spool(&arn, "main", "stdout");
    let total: u64 = (1..=n)
        .map(|i| i.to_string().len() as u64 + 1 + pad.len() as u64 + 1)
        .sum();
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    // A tight poll of our own: the container writes fast.
    let deadline = std::time::Instant::now() + T;
    while size(&spool) < total / 4 {
        assert!(std::time::Instant::now() < deadline, "the spool never grew");
        std::thread::sleep(Duration::from_millis(2));
    }
    c.kill_agent();
    assert!(size(&spool) < total, "the stream ended before the kill");
    let before: usize = rsyslog
        .messages()
        .iter()
        .filter(|m| m.app_name == "survivor")
        .count();
    assert!(before < n, "everything was delivered before the kill");
    c.start_agent();
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(task["containers"][0]["exitCode"], 0, "{task}");
    let numbers = wait_for("every line in rsyslog's file after the restart", T, || {
        let nums: Vec<usize> = rsyslog
            .messages()
            .iter()
            .filter(|m| m.app_name == "survivor")
            .map(|m| {
                assert_eq!(
                    (
                        m.facility.as_str(),
                        m.severity.as_str(),
                        m.protocol_version.as_str()
                    ),
                    ("local1", "info", "1"),
                    "{m:?}"
                );
                let (num, rest) = m.msg.split_once(' ').unwrap_or_else(|| panic!("{m:?}"));
                assert_eq!(rest, pad, "the line as written: {m:?}");
                num.parse().unwrap_or_else(|_| panic!("{m:?}"))
            })
            .collect();
        nums.contains(&n).then_some(nums)
    });
    // In order: each line after the previous one, or a resent run starting again earlier.
    let mut next = 1;
    let mut repeated = 0;
    for &k in &numbers {
        if k == next {
            next += 1;
        } else if k < next {
            repeated += 1;
        } else {
            panic!("line {next} is missing: {k} came instead");
        }
    }
    assert_eq!(next, n + 1, "every line");
    // A local driver sends one batch (at most 10,000 events) before saving its position.
    assert!(
        repeated <= 10_000,
        "at most the batch being sent at the kill comes twice: {repeated}"
    );
    eprintln!("{before} lines delivered before the kill; {repeated} sent twice");
    drop(c);
    drop(rsyslog);
}

/// syslog `mode: blocking`: while nothing listens at syslog-address the spool fills to its
/// bound and then the container waits on its full pipe, nothing dropped; once rsyslogd
/// listens every line arrives, in order, and the container finishes.
#[test]
fn syslog_blocking_mode_holds_the_container_back_until_rsyslog_listens() {
    if !prerequisites() || !rsyslogd_present() {
        return;
    }
    let (bound, pipe) = (64 * 1024u64, 64 * 1024usize);
    let c = Cluster::start_with_agent_env(
        "logs-rsyslog-block",
        &[
            ("BERTH_LOG_SPOOL_MAX", "64k"),
            ("BERTH_LOG_PIPE_SIZE", "64k"),
        ],
    );
    let (udp, tcp) = (free_udp_port(), berth_tests::free_port());
    // ~1.2 MB of lines: many times the bound and the pipe.
    let n = 200_000usize;
    let td = serde_json::json!({
        "family": "syslog-block", "networkMode": "none", "memory": "256",
        "containerDefinitions": [{
            "name": "main", "image": IMAGE, "command": ["seq", "1", n.to_string()],
            "logConfiguration": {"logDriver": "syslog", "options": {
                "syslog-address": format!("tcp://127.0.0.1:{tcp}"), "tag": "held",
                "mode": "blocking"}},
        }],
    });
    let td = c.register(&td.to_string());
    let arn = c.run_task(&td);
    let spool = c.container_spool(&arn, "main", "stdout");
    let fifo = spool.with_file_name("main.stdout.fifo");
    wait_for("the container's pipe to fill", T, || {
        (berth_tests::pending_in_fifo(&fifo) >= pipe).then_some(())
    });
    let held = std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0);
    assert!(held <= bound / 2, "the spool grew past its bound: {held}");
    assert_eq!(c.task(&arn)["lastStatus"], "RUNNING", "the container waits");
    let rsyslog = Rsyslog::start_on(udp, tcp);
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(task["containers"][0]["exitCode"], 0, "{task}");
    let got = wait_for("every line in rsyslog's file", T, || {
        let m: Vec<String> = rsyslog
            .messages()
            .into_iter()
            .filter(|m| m.app_name == "held")
            .map(|m| m.msg)
            .collect();
        m.last().is_some_and(|l| *l == n.to_string()).then_some(m)
    });
    let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    same_lines(&got, &want, "blocking mode: every line once, in order");
    drop(c);
    drop(rsyslog);
}
