//! Node health: the fall/rise state machine and the HTTP probe that feeds it.
//!
//! A node starts `Down` and must pass `rise` checks in a row to come up; an up node must fail
//! `fall` checks in a row to go down. A node whose MAC is not resolved fails its check
//! whatever HTTP says. The asymmetry (rise 5 > fall 3 by default) is the hysteresis that
//! stops a flapping node from bouncing in and out of the Maglev table: with the default
//! 200 ms interval a dead node is out within 3 × 200 ms plus one timeout, and a recovered
//! one is back after a full second of good answers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Health of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Gets new flows (if its weight is above 0).
    Up,
    /// Gets nothing; its flows are purged.
    Down,
}

impl State {
    /// Lower-case name for logs, metrics and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
        }
    }
}

/// The fall/rise counter of one node.
#[derive(Debug, Clone)]
pub struct Checker {
    state: State,
    /// Consecutive results contrary to `state`.
    streak: u32,
    fall: u32,
    rise: u32,
}

impl Checker {
    /// A new checker; nodes start down until they prove themselves.
    pub fn new(fall: u32, rise: u32) -> Checker {
        Checker {
            state: State::Down,
            streak: 0,
            fall: fall.max(1),
            rise: rise.max(1),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Takes new thresholds (on reload) keeping the state.
    pub fn retune(&mut self, fall: u32, rise: u32) {
        self.fall = fall.max(1);
        self.rise = rise.max(1);
    }

    /// Records one check result; returns the new state if it changed.
    pub fn record(&mut self, ok: bool) -> Option<State> {
        let contrary = match self.state {
            State::Up => !ok,
            State::Down => ok,
        };
        if !contrary {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let (limit, next) = match self.state {
            State::Up => (self.fall, State::Down),
            State::Down => (self.rise, State::Up),
        };
        if self.streak >= limit {
            self.state = next;
            self.streak = 0;
            Some(next)
        } else {
            None
        }
    }
}

/// Where and how to probe one node, parsed from its `health_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Address connected to.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path and query requested.
    pub path: String,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Connect, write or read failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The answer was not a 2xx HTTP response.
    #[error("answered {0:?}")]
    Status(String),
}

impl Probe {
    /// Parses `http://IP:PORT/path` (an IP literal: probes must not depend on DNS).
    pub fn parse(url: &str) -> Result<Probe, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{url:?}: only http:// health URLs are supported"));
        }
        let auth = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| format!("{url:?}: the host must be an IP address, not a name"))?;
        let addr = SocketAddr::new(ip, auth.port_u16().unwrap_or(80));
        Ok(Probe {
            addr,
            host: auth.as_str().to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    /// One check: GET the URL, succeed on a 2xx status line within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), ProbeError> {
        tokio::time::timeout(timeout, self.exchange())
            .await
            .map_err(|_| ProbeError::Timeout)?
    }

    async fn exchange(&self) -> Result<(), ProbeError> {
        let mut s = tokio::net::TcpStream::connect(self.addr).await?;
        s.set_nodelay(true)?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: strata-director\r\nConnection: close\r\n\r\n",
            self.path, self.host
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let r = s.read(&mut buf[n..]).await?;
            if r == 0 {
                break;
            }
            n += r;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let status = head.lines().next().unwrap_or("").to_string();
        let mut parts = status.split(' ');
        match (parts.next(), parts.next()) {
            (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.starts_with('2') && code.len() == 3 => Ok(()),
            _ => Err(ProbeError::Status(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut c = Checker::new(3, 5);
        assert_eq!(c.state(), State::Down);
        for _ in 0..4 {
            assert_eq!(c.record(true), None);
        }
        assert_eq!(c.record(true), Some(State::Up));
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), Some(State::Down));
    }

    #[test]
    fn flapping_never_changes_state() {
        let mut c = Checker::new(3, 5);
        for _ in 0..5 {
            c.record(true);
        }
        assert_eq!(c.state(), State::Up);
        // fail, fail, ok, fail, fail, ok ...: never three failures in a row.
        for i in 0..30 {
            assert_eq!(c.record(i % 3 == 2), None);
        }
        assert_eq!(c.state(), State::Up);
        let mut d = Checker::new(3, 5);
        for i in 0..30 {
            assert_eq!(d.record(i % 5 != 4), None);
        }
        assert_eq!(d.state(), State::Down);
    }

    #[test]
    fn parses_health_urls() {
        let p = Probe::parse("http://192.0.2.11:9080/healthz").unwrap();
        assert_eq!(p.addr, "192.0.2.11:9080".parse().unwrap());
        assert_eq!((p.host.as_str(), p.path.as_str()), ("192.0.2.11:9080", "/healthz"));
        assert_eq!(Probe::parse("http://192.0.2.11").unwrap().addr.port(), 80);
        assert!(Probe::parse("https://192.0.2.11/").is_err());
        assert!(Probe::parse("http://node1.example/").is_err());
        assert!(Probe::parse("not a url").is_err());
    }

    #[tokio::test]
    async fn probe_accepts_2xx_and_refuses_the_rest() {
        use tokio::net::TcpListener;
        async fn serve(answer: &'static str) -> Probe {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            });
            Probe::parse(&format!("http://{addr}/healthz")).unwrap()
        }
        let t = Duration::from_secs(2);
        assert!(serve("HTTP/1.1 200 OK\r\n\r\nok").await.check(t).await.is_ok());
        assert!(serve("HTTP/1.1 503 Busy\r\n\r\n").await.check(t).await.is_err());
        let dead = Probe::parse("http://127.0.0.1:1/").unwrap();
        assert!(dead.check(t).await.is_err());
    }
}
