//! The syslog driver: RFC 5424 messages as Docker's `rfc5424` format writes them
//! (`<PRI>1 TIMESTAMP HOSTNAME TAG PID TAG - MESSAGE`, the timestamp in milliseconds, or
//! microseconds with syslog-format `rfc5424micro`), or with `rfc3164` the BSD format
//! (`<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MESSAGE`, UTC); stdout at severity info, stderr
//! at err, to syslog-address: one datagram per message over udp:// and unix:// datagram
//! sockets, octet-counted (RFC 6587) over tcp:// and unix:// stream sockets. Every socket
//! operation is bounded by a timeout; a failed send is retried from the same event.

use super::config::{self, SyslogAddress, SyslogFormat};
use super::stream::NumberedEvent;
use super::Stream;
use std::io::Write;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

enum Conn {
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpStream),
    UnixDgram(std::os::unix::net::UnixDatagram),
    UnixStream(std::os::unix::net::UnixStream),
}

/// A container's syslog destination.
pub struct Syslog {
    cfg: config::Syslog,
    tag: String,
    hostname: String,
    conn: Option<Conn>,
}

impl Syslog {
    /// Sends the output of the container `runtime_id` (the default tag is its first 12
    /// characters, as Docker's container ID is).
    pub fn new(cfg: config::Syslog, runtime_id: &str) -> Self {
        let tag = cfg
            .tag
            .clone()
            .unwrap_or_else(|| runtime_id.chars().take(12).collect());
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "-".into());
        Self {
            cfg,
            tag,
            hostname,
            conn: None,
        }
    }

    fn connect(&self) -> std::io::Result<Conn> {
        Ok(match &self.cfg.address {
            SyslogAddress::Udp(a) => {
                let s = std::net::UdpSocket::bind(if a.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                s.connect(a)?;
                Conn::Udp(s)
            }
            SyslogAddress::Tcp(a) => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(a)?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("{a}: no address")))?;
                let s = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Conn::Tcp(s)
            }
            SyslogAddress::Unix(p) => {
                let d = std::os::unix::net::UnixDatagram::unbound()?;
                match d.connect(p) {
                    Ok(()) => {
                        d.set_write_timeout(Some(IO_TIMEOUT))?;
                        Conn::UnixDgram(d)
                    }
                    Err(_) => {
                        let s = std::os::unix::net::UnixStream::connect(p)?;
                        s.set_write_timeout(Some(IO_TIMEOUT))?;
                        Conn::UnixStream(s)
                    }
                }
            }
        })
    }

    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let sent = match self.conn.as_mut() {
            Some(Conn::Udp(s)) => s.send(msg).map(|_| ()),
            Some(Conn::UnixDgram(s)) => s.send(msg).map(|_| ()),
            Some(Conn::Tcp(s)) => s.write_all(&framed(msg)),
            Some(Conn::UnixStream(s)) => s.write_all(&framed(msg)),
            None => Ok(()),
        };
        if sent.is_err() {
            self.conn = None;
        }
        sent
    }
}

/// RFC 6587 octet counting: `LEN SP MSG`.
fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg);
    out
}

/// The fields of a message besides the event's own.
pub struct Header<'a> {
    /// syslog-format.
    pub format: SyslogFormat,
    /// syslog-facility's number.
    pub facility: u8,
    /// HOSTNAME: the host's name.
    pub hostname: &'a str,
    /// APP-NAME (and MSGID, as Docker sends it): the tag.
    pub tag: &'a str,
    /// PROCID: the agent's pid (Docker sends dockerd's).
    pub pid: u32,
}

/// One event as a syslog message (Docker's severities: LOG_INFO for stdout, LOG_ERR for
/// stderr; the agent's own events, such as the drop marker, at warning).
pub fn format(e: &NumberedEvent, h: &Header) -> String {
    let severity = match e.stream {
        Some(Stream::Stdout) => 6,
        Some(Stream::Stderr) => 3,
        None => 4,
    };
    let pri = u32::from(h.facility) * 8 + severity;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(e.timestamp_ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (host, tag, pid) = (h.hostname, h.tag, h.pid);
    let date = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    );
    match h.format {
        SyslogFormat::Rfc5424 => format!(
            "<{pri}>1 {date}.{:03}Z {host} {tag} {pid} {tag} - {}",
            t.millisecond(),
            e.message
        ),
        SyslogFormat::Rfc5424Micro => format!(
            "<{pri}>1 {date}.{:06}Z {host} {tag} {pid} {tag} - {}",
            t.microsecond(),
            e.message
        ),
        SyslogFormat::Rfc3164 => {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            format!(
                "<{pri}>{} {:>2} {:02}:{:02}:{:02} {host} {tag}[{pid}]: {}",
                MONTHS[usize::from(u8::from(t.month())) - 1],
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                e.message
            )
        }
    }
}

impl super::service::SinkImpl for Syslog {
    fn deliver(&mut self, events: &[NumberedEvent]) -> Result<(), String> {
        // Whole batches are retried: a message may then arrive twice, never not at all.
        for e in events {
            let header = Header {
                format: self.cfg.format,
                facility: self.cfg.facility,
                hostname: &self.hostname,
                tag: &self.tag,
                pid: std::process::id(),
            };
            let m = format(e, &header);
            self.send(m.as_bytes())
                .map_err(|err| format!("syslog {:?}: {err}", self.cfg.address))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::SinkImpl;
    use super::*;

    fn ev(stream: Option<Stream>, msg: &str) -> NumberedEvent {
        NumberedEvent {
            sequence: 1,
            timestamp_ms: 1_700_000_000_123,
            message: msg.into(),
            stream,
            partial: false,
        }
    }

    fn header<'a>(
        format: SyslogFormat,
        facility: u8,
        hostname: &'a str,
        tag: &'a str,
    ) -> Header<'a> {
        Header {
            format,
            facility,
            hostname,
            tag,
            pid: 42,
        }
    }

    #[test]
    fn messages_are_rfc_5424_with_facility_and_severity() {
        let h = header(SyslogFormat::Rfc5424, 3, "host1", "web");
        assert_eq!(
            format(&ev(Some(Stream::Stdout), "hello"), &h),
            "<30>1 2023-11-14T22:13:20.123Z host1 web 42 web - hello"
        );
        // local0 (16) * 8 + err (3)
        let h = header(SyslogFormat::Rfc5424, 16, "h", "t");
        assert_eq!(
            format(&ev(Some(Stream::Stderr), "oops"), &h),
            "<131>1 2023-11-14T22:13:20.123Z h t 42 t - oops"
        );
        assert_eq!(framed(b"abc"), b"3 abc");
    }

    #[test]
    fn syslog_format_rfc5424micro_and_rfc3164_are_written_as_docker_writes_them() {
        let h = header(SyslogFormat::Rfc5424Micro, 3, "host1", "web");
        assert_eq!(
            format(&ev(Some(Stream::Stdout), "hello"), &h),
            "<30>1 2023-11-14T22:13:20.123000Z host1 web 42 web - hello"
        );
        // srslog's RFC3164Formatter: time.Stamp ("Jan _2 15:04:05", the day space-padded).
        let h = header(SyslogFormat::Rfc3164, 16, "host1", "web");
        assert_eq!(
            format(&ev(Some(Stream::Stderr), "oops"), &h),
            "<131>Nov 14 22:13:20 host1 web[42]: oops"
        );
        let mut e = ev(Some(Stream::Stdout), "x");
        e.timestamp_ms = 1_704_164_645_000; // 2024-01-02T03:04:05Z
        assert_eq!(format(&e, &h), "<134>Jan  2 03:04:05 host1 web[42]: x");
    }

    #[test]
    fn messages_reach_a_unix_datagram_socket() {
        let d =
            std::env::temp_dir().join(format!("berth-syslog-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        let sock = d.join("log.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut s = Syslog::new(
            config::Syslog {
                address: SyslogAddress::Unix(sock.clone()),
                facility: 3,
                tag: None,
                format: SyslogFormat::Rfc5424,
                mode: config::Mode::NonBlocking,
            },
            "0123456789abcdef",
        );
        s.deliver(&[
            ev(Some(Stream::Stdout), "one"),
            ev(Some(Stream::Stderr), "two"),
        ])
        .unwrap();
        let mut buf = [0u8; 512];
        let n = server.recv(&mut buf).unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            m.starts_with("<30>1 ") && m.contains(" 0123456789ab ") && m.ends_with(" - one"),
            "{m}"
        );
        let n = server.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with(" - two"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
