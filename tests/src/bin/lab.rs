//! `lab N`: starts a lab of N hosts (see `berth_tests::lab`) for use by hand, prints how to
//! reach it, then reads commands from stdin until `quit`, Ctrl-C or SIGTERM, and removes it all.
//!
//! `make lab N=3`, or `cargo run -p berth-tests --bin lab -- 3` (as root, after
//! `cargo build --workspace`).

use berth_tests::lab::{Cut, Lab};
use nix::sys::signal::{SigSet, Signal};
use std::io::BufRead;
use std::sync::mpsc;
use std::time::Duration;

const HELP: &str = "commands (host numbers as listed above):
  cut I [link|firewall]   cut host I off (link down, the default; or an nft drop in its namespace)
  reconnect I             undo cut
  stop I | start I        SIGTERM its agent (waiting) | start it again
  kill I                  kill -9 its agent and containerd (shims and containers keep running)
  restart I               start its containerd and agent again
  freeze I | thaw I       SIGSTOP | SIGCONT its agent and containerd
  add                     a new host joins
  controller-kill | controller-start
  status                  the instances as the controller sees them
  quit                    remove everything and exit (Ctrl-C and SIGTERM too)";

enum Event {
    Line(String),
    Eof,
    Signal(Signal),
}

fn print_hosts(lab: &Lab) {
    for (i, h) in lab.hosts().iter().enumerate() {
        println!(
            "  host {i}: netns {} address {} zone {} instance {}",
            h.name,
            h.address,
            h.availability_zone,
            lab.host_instance_arn(i)
        );
    }
}

fn status(lab: &Lab) {
    let mut instances = lab.instances();
    instances.sort_by_key(|ci| {
        ci["containerInstanceArn"]
            .as_str()
            .and_then(|a| lab.host_of_instance(a))
    });
    for ci in instances {
        let host = ci["containerInstanceArn"]
            .as_str()
            .and_then(|a| lab.host_of_instance(a))
            .map_or("?".to_string(), |i| i.to_string());
        println!(
            "  host {host}: {} {} agentConnected={} running={} pending={}{}",
            ci["ec2InstanceId"].as_str().unwrap_or_default(),
            ci["status"].as_str().unwrap_or_default(),
            ci["agentConnected"],
            ci["runningTasksCount"],
            ci["pendingTasksCount"],
            host.parse::<usize>()
                .ok()
                .and_then(|i| lab.host(i).cut())
                .map_or(String::new(), |c| format!(" (cut off: {c:?})")),
        );
    }
}

/// Runs one command; false on `quit`.
fn command(lab: &mut Lab, line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let host = |w: Option<&&str>| -> Option<usize> {
        let i = w?.parse::<usize>().ok()?;
        (i < lab.hosts().len()).then_some(i)
    };
    let i = host(words.get(1));
    match (words.first().copied(), i) {
        (None, _) => {}
        (Some("quit" | "exit" | "q"), _) => return false,
        (Some("help" | "?"), _) => println!("{HELP}"),
        (Some("status"), _) => status(lab),
        (Some("add"), _) => {
            let i = lab.add_host();
            println!("host {i} joined");
            print_hosts(lab);
        }
        (Some("controller-kill"), _) => lab.kill_controller(),
        (Some("controller-start"), _) => lab.start_controller(),
        (Some("cut"), Some(i)) => {
            let how = match words.get(2).copied() {
                None | Some("link") => Cut::Link,
                Some("firewall" | "nft" | "drop") => Cut::Firewall,
                Some(other) => {
                    println!("cut: '{other}' is not link or firewall");
                    return true;
                }
            };
            lab.cut_off(i, how);
            println!("host {i} cut off ({how:?})");
        }
        (Some("reconnect"), Some(i)) => lab.reconnect(i),
        (Some("stop"), Some(i)) => lab.stop_agent(i),
        (Some("start"), Some(i)) => lab.start_agent(i),
        (Some("kill"), Some(i)) => lab.kill9(i),
        (Some("restart"), Some(i)) => lab.restart(i),
        (Some("freeze"), Some(i)) => lab.freeze(i),
        (Some("thaw"), Some(i)) => lab.thaw(i),
        (Some(w), _) => println!("'{w}': unknown command or host; `help` lists them"),
    }
    true
}

fn main() -> anyhow::Result<()> {
    let n: usize = match std::env::args().nth(1) {
        None => 3,
        Some(a) => a
            .parse()
            .map_err(|e| anyhow::anyhow!("lab N: '{a}' is not a number of hosts ({e})"))?,
    };
    if !(1..=200).contains(&n) {
        anyhow::bail!("lab N: between 1 and 200 hosts");
    }
    if !berth_tests::prerequisites() {
        anyhow::bail!("the lab needs root, containerd, runc, ctr and busybox-static");
    }
    // Ctrl-C and SIGTERM become events of the main loop (blocked here, so in every thread; the
    // children start with a clear mask), so the lab is removed on them as on `quit`.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;
    let (tx, rx) = mpsc::channel();
    let stx = tx.clone();
    std::thread::spawn(move || loop {
        if let Ok(sig) = signals.wait() {
            if stx.send(Event::Signal(sig)).is_err() {
                return;
            }
        }
    });
    eprintln!("starting a lab of {n} hosts…");
    let started = std::time::Instant::now();
    let mut lab = Lab::start("lab", n);
    println!(
        "lab of {n} hosts ready in {:.1} s; controller {} (its store and logs in {})",
        started.elapsed().as_secs_f64(),
        lab.cluster.endpoint,
        lab.cluster.dir.display()
    );
    print_hosts(&lab);
    println!("\nthe berth CLI against it (from this machine):");
    for (k, v) in lab.cli_env() {
        println!("  export {k}={v}");
    }
    println!(
        "  {}/berth ecs list-container-instances --cluster {}",
        berth_tests::bin_dir().display(),
        lab.cluster.name
    );
    println!(
        "\na host's shell: nsenter --net=/run/netns/{} sh    (ctr -a {} -n berth tasks ls)",
        lab.host(0).name,
        lab.host(0).socket().display()
    );
    println!("\n{HELP}");
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Event::Line(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(Event::Eof);
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(Event::Line(l)) => {
                // A command that fails (a host that does not come back…) is reported; the lab
                // stays up.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    command(&mut lab, &l)
                })) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => eprintln!("'{l}' failed (see above); the lab is still up"),
                }
            }
            Ok(Event::Eof) => eprintln!("end of input: the lab runs until Ctrl-C or SIGTERM"),
            Ok(Event::Signal(s)) => {
                eprintln!("{s}: removing the lab");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(lab);
    eprintln!("lab removed");
    Ok(())
}
