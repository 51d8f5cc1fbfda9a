//! The access log: one line per request, as a log event (`text`, target `strata::access`),
//! in the combined format log tools read (`combined`), or as a JSON object (`json`); the
//! last two are written to `server.access_log_file` (or stdout) by a thread of their own,
//! so a request never waits on the disk.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// `server.access_log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A log event with fields, on stderr with the other logs.
    #[default]
    Text,
    /// NCSA combined: `client - - [time] "request" status bytes "referer" "user-agent"`.
    Combined,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// Parses the config value.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "text" => Some(Format::Text),
            "combined" => Some(Format::Combined),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// What one line says about a request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address.
    pub client: IpAddr,
    /// Request method.
    pub method: http::Method,
    /// Request target as the client sent it (logged as its path and query: an HTTP/2
    /// request's scheme and authority are in `host`).
    pub uri: http::Uri,
    /// HTTP version of the request.
    pub version: http::Version,
    /// `Host` (or the target's authority).
    pub host: Option<String>,
    /// `Referer`.
    pub referer: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Response status.
    pub status: u16,
    /// Body bytes the response declares (0 for `HEAD`, `204`, `304`); `None` when streamed
    /// without a length.
    pub bytes: Option<u64>,
    /// `X-Cache` outcome (`hit`, `miss`, …).
    pub outcome: &'static str,
    /// Time to the response head.
    pub elapsed: Duration,
}

/// The protocol as a request line names it.
fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Appends `s` as the combined format quotes it: `"` and `\` escaped with a backslash,
/// control and non-ASCII bytes as `\xHH` (as nginx and Apache write them), so a line never
/// breaks and a field never ends early.
fn push_escaped(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
}

/// The path and query of the target, as an HTTP/1.1 request line has them.
fn target(uri: &http::Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// A quoted field; `-` when absent or empty.
fn push_quoted(out: &mut String, s: Option<&str>) {
    out.push('"');
    match s.filter(|s| !s.is_empty()) {
        Some(s) => push_escaped(out, s),
        None => out.push('-'),
    }
    out.push('"');
}

/// Appends `e` as one combined-format line (with its newline).
pub fn combined(out: &mut String, e: &Entry) {
    let time = chrono::DateTime::<chrono::Utc>::from(e.time);
    let _ = write!(
        out,
        "{} - - [{}] \"",
        e.client.to_canonical(),
        time.format("%d/%b/%Y:%H:%M:%S %z")
    );
    push_escaped(out, e.method.as_str());
    out.push(' ');
    push_escaped(out, target(&e.uri));
    let _ = write!(out, " {}\" {} ", protocol(e.version), e.status);
    match e.bytes {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push('-'),
    }
    out.push(' ');
    push_quoted(out, e.referer.as_deref());
    out.push(' ');
    push_quoted(out, e.user_agent.as_deref());
    out.push('\n');
}

/// Appends `e` as one JSON object (with its newline).
pub fn json(out: &mut String, e: &Entry) {
    let time = chrono::DateTime::<chrono::Utc>::from(e.time);
    let v = serde_json::json!({
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "client": e.client.to_canonical().to_string(),
        "method": e.method.as_str(),
        "uri": target(&e.uri),
        "protocol": protocol(e.version),
        "host": e.host,
        "status": e.status,
        "bytes": e.bytes,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "cache": e.outcome,
        "duration_us": e.elapsed.as_micros() as u64,
    });
    let _ = write!(out, "{v}");
    out.push('\n');
}

/// Lines waiting for the writer at most; beyond, lines are dropped and counted rather than
/// holding requests up.
const QUEUE: usize = 65_536;
/// How often the writer flushes when lines trickle in.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The writer of `combined` and `json` lines: a thread that owns the file.
pub struct Writer {
    tx: SyncSender<String>,
    /// Set by SIGHUP: the thread opens the file again (after logrotate moved it).
    reopen: Arc<AtomicBool>,
    /// Lines dropped because the writer fell behind (`strata_proxy_access_log_dropped_total`).
    dropped: prometheus_client::metrics::counter::Counter,
}

impl Writer {
    /// Starts the writing thread for `path` (stdout when `None`). The file is opened
    /// (created, appended to) before this returns, so an error is the caller's to report.
    pub fn start(
        path: Option<PathBuf>,
        dropped: prometheus_client::metrics::counter::Counter,
    ) -> std::io::Result<Writer> {
        let first = open(path.as_ref())?;
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, path, first, flag))?;
        Ok(Writer { tx, reopen, dropped })
    }

    /// Queues one line; never blocks.
    pub fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(line) {
            self.dropped.inc();
        }
    }

    /// Asks the thread to open the file again before its next write.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

fn open(path: Option<&PathBuf>) -> std::io::Result<Box<dyn std::io::Write + Send>> {
    Ok(match path {
        Some(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        None => Box::new(std::io::stdout()),
    })
}

/// The writer thread: lines in, buffered writes out, a flush at least every
/// [`FLUSH_EVERY`] while lines come; ends when the proxy drops its [`Writer`].
fn write_lines(
    rx: Receiver<String>,
    path: Option<PathBuf>,
    first: Box<dyn std::io::Write + Send>,
    reopen: Arc<AtomicBool>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, first);
    loop {
        let line = rx.recv_timeout(FLUSH_EVERY);
        if reopen.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            match open(path.as_ref()) {
                Ok(f) => out = std::io::BufWriter::with_capacity(64 * 1024, f),
                Err(e) => {
                    tracing::error!(error = %e, path = ?path, "access log: could not open the file again; writing on to the old one")
                }
            }
        }
        let result = match line {
            Ok(line) => out.write_all(line.as_bytes()),
            Err(RecvTimeoutError::Timeout) => out.flush(),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, path = ?path, "access log: write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            // 2026-12-07 13:40:02 UTC
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_650_802),
            client: "::ffff:192.0.2.7".parse().unwrap(),
            method: http::Method::GET,
            uri: "/hello/?p=5".parse().unwrap(),
            version: http::Version::HTTP_11,
            host: Some("example.test".into()),
            referer: Some("https://example.test/".into()),
            user_agent: Some("curl/8.5.0".into()),
            status: 200,
            bytes: Some(5120),
            outcome: "hit",
            elapsed: Duration::from_micros(153),
        }
    }

    #[test]
    fn combined_lines_are_what_log_tools_read() {
        let mut out = String::new();
        combined(&mut out, &entry());
        assert_eq!(
            out,
            "192.0.2.7 - - [07/Dec/2026:13:40:02 +0000] \"GET /hello/?p=5 HTTP/1.1\" 200 5120 \
             \"https://example.test/\" \"curl/8.5.0\"\n"
        );
    }

    #[test]
    fn an_http2_target_is_logged_as_its_path() {
        let e = Entry {
            uri: "https://example.test/hello/?p=5".parse().unwrap(),
            version: http::Version::HTTP_2,
            ..entry()
        };
        let mut out = String::new();
        combined(&mut out, &e);
        assert!(out.contains("\"GET /hello/?p=5 HTTP/2.0\""), "{out}");
        out.clear();
        json(&mut out, &e);
        assert!(out.contains("\"uri\":\"/hello/?p=5\""), "{out}");
    }

    #[test]
    fn absent_fields_are_dashes_and_quotes_never_end_a_field() {
        let e = Entry {
            referer: None,
            user_agent: Some("a \"quoted\" \\ agent\r\nX-Injected: 1 é".into()),
            bytes: None,
            version: http::Version::HTTP_2,
            status: 404,
            ..entry()
        };
        let mut out = String::new();
        combined(&mut out, &e);
        assert_eq!(
            out,
            "192.0.2.7 - - [07/Dec/2026:13:40:02 +0000] \"GET /hello/?p=5 HTTP/2.0\" 404 - \"-\" \
             \"a \\\"quoted\\\" \\\\ agent\\x0D\\x0AX-Injected: 1 \\xC3\\xA9\"\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut out = String::new();
        json(&mut out, &entry());
        assert!(out.ends_with('\n') && out.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["time"], "2026-12-07T13:40:02.000Z");
        assert_eq!(v["client"], "192.0.2.7");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["uri"], "/hello/?p=5");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["host"], "example.test");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 5120);
        assert_eq!(v["referer"], "https://example.test/");
        assert_eq!(v["user_agent"], "curl/8.5.0");
        assert_eq!(v["cache"], "hit");
        assert_eq!(v["duration_us"], 153);
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::parse("combined"), Some(Format::Combined));
        assert_eq!(Format::parse("json"), Some(Format::Json));
        assert_eq!(Format::parse("text"), Some(Format::Text));
        assert_eq!(Format::parse("common"), None);
    }

    #[test]
    fn the_writer_appends_lines_and_opens_the_file_again_when_asked() {
        let dir = std::env::temp_dir().join(format!("strata-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let w = Writer::start(Some(path.clone()), Default::default()).unwrap();
        w.send("one\n".into());
        let read = |p: &PathBuf, want: &str| {
            // The writer flushes within FLUSH_EVERY; give it a bounded while.
            for _ in 0..100 {
                if std::fs::read_to_string(p).is_ok_and(|t| t == want) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        assert!(read(&path, "one\n"));
        // logrotate: the file is moved away, then the proxy is told (SIGHUP).
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        w.reopen();
        w.send("two\n".into());
        assert!(read(&path, "two\n"), "{:?}", std::fs::read_to_string(&path));
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "one\n");
        drop(w);
        let _ = std::fs::remove_dir_all(dir);
    }
}
