//! The json-file driver: Docker's line format (`{"log":"text\n","stream":"stdout",
//! "time":"RFC 3339, nanoseconds"}`) in `<container>-json.log` beside the spool, rotated at
//! max-size into `-json.log.1`, `.2`... keeping max-file files (the current one included; with
//! one file it is emptied when full, as Docker does).

use super::config;
use super::stream::NumberedEvent;
use super::{ContainerLogPaths, Stream};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// A container's json-file log.
pub struct JsonFile {
    path: PathBuf,
    opts: config::JsonFile,
    file: Option<(File, u64)>,
}

impl JsonFile {
    /// The json-file log of the container whose files are `paths`.
    pub fn new(paths: &ContainerLogPaths, opts: config::JsonFile) -> Self {
        Self {
            path: paths.json_log(),
            opts,
            file: None,
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        p.into()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        if self.opts.max_file <= 1 {
            File::create(&self.path)?;
            return Ok(());
        }
        for n in (1..self.opts.max_file - 1).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if let (Some(max), Some((_, size))) = (self.opts.max_size, &self.file) {
            if *size > 0 && size + line.len() as u64 > max {
                self.rotate()?;
            }
        }
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let size = f.metadata()?.len();
            self.file = Some((f, size));
            // A file reopened already full (after a restart) rotates first.
            if let (Some(max), Some((_, size))) = (self.opts.max_size, &self.file) {
                if *size > 0 && size + line.len() as u64 > max {
                    return self.write_line_after_rotation(line);
                }
            }
        }
        if let Some((f, size)) = &mut self.file {
            f.write_all(line)?;
            *size += line.len() as u64;
        }
        Ok(())
    }

    fn write_line_after_rotation(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.rotate()?;
        self.write_line(line)
    }
}

/// One event as Docker's json-file writes it.
pub fn line(e: &NumberedEvent) -> Vec<u8> {
    let mut log = e.message.clone();
    if !e.partial {
        log.push('\n');
    }
    let stream = match e.stream {
        Some(Stream::Stderr) | None => "stderr",
        Some(Stream::Stdout) => "stdout",
    };
    let v = serde_json::json!({"log": log, "stream": stream, "time": rfc3339_nano(e.timestamp_ms)});
    let mut out = v.to_string().into_bytes();
    out.push(b'\n');
    out
}

/// A time in ms since the epoch as RFC 3339 with Go's RFC3339Nano (trailing zeros cut).
pub fn rfc3339_nano(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let frac = format!("{:09}", t.nanosecond());
    let frac = frac.trim_end_matches('0');
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        if frac.is_empty() { "" } else { "." },
        frac
    )
}

impl super::service::SinkImpl for JsonFile {
    fn deliver(&mut self, events: &[NumberedEvent]) -> Result<(), String> {
        for e in events {
            self.write_line(&line(e))
                .map_err(|err| format!("{}: {err}", self.path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::SinkImpl;
    use super::*;

    fn ev(seq: u64, msg: &str) -> NumberedEvent {
        NumberedEvent {
            sequence: seq,
            timestamp_ms: 1_700_000_000_123,
            message: msg.into(),
            stream: Some(Stream::Stdout),
            partial: false,
        }
    }

    #[test]
    fn lines_are_in_dockers_format() {
        let l = String::from_utf8(line(&ev(1, "hello \"you\""))).unwrap();
        assert_eq!(
            l,
            "{\"log\":\"hello \\\"you\\\"\\n\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20.123Z\"}\n"
        );
        assert_eq!(rfc3339_nano(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn the_file_rotates_at_max_size_keeping_max_file_files() {
        let d = std::env::temp_dir().join(format!("berth-json-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        let paths = ContainerLogPaths::new(&d.join("main.log"));
        let mut j = JsonFile::new(
            &paths,
            config::JsonFile {
                max_size: Some(200),
                max_file: 3,
            },
        );
        // Each line is 71 bytes: two fit in 200, three do not.
        let events: Vec<NumberedEvent> = (0..9).map(|i| ev(i + 1, &format!("line {i}"))).collect();
        j.deliver(&events).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let count = |p: PathBuf| read(p).lines().count();
        assert_eq!(count(paths.json_log()), 1);
        assert_eq!(count(j.rotated(1)), 2);
        assert_eq!(count(j.rotated(2)), 2);
        assert!(
            !j.rotated(3).exists(),
            "max-file 3: the current file and two more"
        );
        assert!(read(j.rotated(1)).contains("line 6") && read(paths.json_log()).contains("line 8"));
        for p in [paths.json_log(), j.rotated(1), j.rotated(2)] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
