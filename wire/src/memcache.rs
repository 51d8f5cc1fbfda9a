//! A small memcached client (ASCII protocol) for the comment queue: the handful of commands
//! the proxy and the syncer need, over one connection, with a timeout on every exchange.
//!
//! One [`Conn`] is one TCP connection used by one task at a time; a failed or timed-out
//! exchange leaves the connection in an unknown state, so the caller drops it and dials
//! again ([`Error::is_connection`]).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest value read (memcached's default item limit is 1 MiB).
const MAX_VALUE: usize = 1 << 20;

/// Why a memcached command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, reading or writing failed.
    #[error("memcached {addr}: {source}")]
    Io {
        /// The server.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("memcached {0}: no answer in time")]
    Timeout(String),
    /// The server answered something this client does not understand, or an error.
    #[error("memcached {addr}: unexpected answer {line:?}")]
    Protocol {
        /// The server.
        addr: String,
        /// What it said.
        line: String,
    },
    /// A key with spaces or control characters, or longer than 250 bytes.
    #[error("invalid memcached key {0:?}")]
    BadKey(String),
    /// The server has no room for the value: out of memory while it may not evict (run with
    /// `-M`), or the value is larger than its item size limit (`-I`). Nothing was stored;
    /// the connection is still in step.
    #[error("memcached {addr}: no room for the value ({line:?})")]
    NoRoom {
        /// The server.
        addr: String,
        /// What it said.
        line: String,
    },
}

impl Error {
    /// Whether the connection must be dropped (every error but a bad key and no room).
    pub fn is_connection(&self) -> bool {
        !matches!(self, Error::BadKey(_) | Error::NoRoom { .. })
    }

    /// Whether memcached refused the value for lack of room ([`Error::NoRoom`]).
    pub fn is_no_room(&self) -> bool {
        matches!(self, Error::NoRoom { .. })
    }
}

/// What memcached did with one value of [`Conn::add_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Stored.
    Stored,
    /// Not stored: the key exists.
    Exists,
    /// Not stored: no room for it (see [`Error::NoRoom`]).
    NoRoom,
}

/// Whether a storage command's answer says there is no room for the value: memcached's
/// `SERVER_ERROR out of memory storing object` (under `-M`) or `SERVER_ERROR object too
/// large for cache`. The value's bytes were read (and dropped) by the server either way.
fn is_no_room(line: &str) -> bool {
    line.starts_with("SERVER_ERROR out of memory") || line.starts_with("SERVER_ERROR object too large")
}

/// One connection to a memcached server.
pub struct Conn {
    addr: String,
    stream: BufReader<TcpStream>,
    timeout: Duration,
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 250 || key.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Error::BadKey(key.to_string()));
    }
    Ok(())
}

/// Appends a storage command (`set`, `add`…) with its data block to `out`.
fn storage_command(out: &mut Vec<u8>, verb: &str, key: &str, value: &[u8], exptime: u32) {
    out.extend_from_slice(format!("{verb} {key} 0 {exptime} {}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `get` of `keys` (at least one) to `out`.
fn get_command(out: &mut Vec<u8>, keys: &[&str]) {
    out.extend_from_slice(b"get");
    for k in keys {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

impl Conn {
    /// Connects to `addr` (`host:port`); every later exchange must finish within `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, Error> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout(addr.to_string()))?
            .map_err(|source| Error::Io {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            addr: addr.to_string(),
            stream: BufReader::new(stream),
            timeout,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    fn protocol(&self, line: &str) -> Error {
        Error::Protocol {
            addr: self.addr.clone(),
            line: line.trim_end().to_string(),
        }
    }

    async fn exchange<T>(&mut self, f: impl AsyncFnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        let timeout = self.timeout;
        let addr = self.addr.clone();
        tokio::time::timeout(timeout, f(self))
            .await
            .map_err(|_| Error::Timeout(addr))?
    }

    async fn line(&mut self) -> Result<String, Error> {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).await.map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(line)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let addr = &self.addr;
        self.stream
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|source| Error::Io {
                addr: addr.clone(),
                source,
            })
    }

    async fn store(&mut self, verb: &str, key: &str, value: &[u8], exptime: u32) -> Result<bool, Error> {
        check_key(key)?;
        self.exchange(async |c| {
            let mut msg = Vec::new();
            storage_command(&mut msg, verb, key, value, exptime);
            c.send(&msg).await?;
            c.stored_answer().await
        })
        .await
    }

    /// The answer to a storage command: whether it stored. Errors: [`Error::NoRoom`] when
    /// the server had no room for the value.
    async fn stored_answer(&mut self) -> Result<bool, Error> {
        let line = self.line().await?;
        match line.trim_end() {
            "STORED" => Ok(true),
            "NOT_STORED" | "EXISTS" | "NOT_FOUND" => Ok(false),
            t if is_no_room(t) => Err(Error::NoRoom {
                addr: self.addr.clone(),
                line: t.to_string(),
            }),
            _ => Err(self.protocol(&line)),
        }
    }

    /// `set`: stores the value; `exptime` 0 = no expiry.
    pub async fn set(&mut self, key: &str, value: &[u8], exptime: u32) -> Result<(), Error> {
        self.store("set", key, value, exptime).await.map(|_| ())
    }

    /// `add`: stores only if the key is absent; true if it stored.
    pub async fn add(&mut self, key: &str, value: &[u8], exptime: u32) -> Result<bool, Error> {
        self.store("add", key, value, exptime).await
    }

    /// `set` of several values (`exptime` 0 = no expiry), then `delete` of several keys, all
    /// in one round trip (the commands pipelined); how many of the deleted keys existed. Errors: any value not
    /// stored (the connection is then unusable, like after any error but a bad key).
    pub async fn set_and_delete(&mut self, items: &[(&str, &[u8], u32)], deletes: &[&str]) -> Result<usize, Error> {
        for k in items.iter().map(|(k, _, _)| *k).chain(deletes.iter().copied()) {
            check_key(k)?;
        }
        if items.is_empty() && deletes.is_empty() {
            return Ok(0);
        }
        self.exchange(async |c| {
            let mut msg = Vec::new();
            for (key, value, exptime) in items {
                storage_command(&mut msg, "set", key, value, *exptime);
            }
            for key in deletes {
                msg.extend_from_slice(b"delete ");
                msg.extend_from_slice(key.as_bytes());
                msg.extend_from_slice(b"\r\n");
            }
            c.send(&msg).await?;
            for _ in items {
                let line = c.line().await?;
                if line.trim_end() != "STORED" {
                    return Err(c.protocol(&line));
                }
            }
            let mut deleted = 0;
            for _ in deletes {
                let line = c.line().await?;
                match line.trim_end() {
                    "DELETED" => deleted += 1,
                    "NOT_FOUND" => {}
                    _ => return Err(c.protocol(&line)),
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// `incr` by `by`: the new value, or `None` when the key is absent.
    pub async fn incr(&mut self, key: &str, by: u64) -> Result<Option<u64>, Error> {
        check_key(key)?;
        self.exchange(async |c| {
            c.send(format!("incr {key} {by}\r\n").as_bytes()).await?;
            c.incr_answer().await
        })
        .await
    }

    /// Reads the answer to an `incr`: the new value, or `None` when the key is absent.
    async fn incr_answer(&mut self) -> Result<Option<u64>, Error> {
        let line = self.line().await?;
        let t = line.trim_end();
        if t == "NOT_FOUND" {
            return Ok(None);
        }
        t.parse().map(Some).map_err(|_| self.protocol(&line))
    }

    /// `delete`: true if the key existed.
    pub async fn delete(&mut self, key: &str) -> Result<bool, Error> {
        check_key(key)?;
        self.exchange(async |c| {
            c.send(format!("delete {key}\r\n").as_bytes()).await?;
            let line = c.line().await?;
            match line.trim_end() {
                "DELETED" => Ok(true),
                "NOT_FOUND" => Ok(false),
                _ => Err(c.protocol(&line)),
            }
        })
        .await
    }

    /// `get` of one key.
    pub async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_many(&[key]).await?.pop().flatten())
    }

    /// `get` of several keys in one round trip; the values in the keys' order.
    pub async fn get_many(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        for k in keys {
            check_key(k)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.exchange(async |c| {
            let mut cmd = Vec::new();
            get_command(&mut cmd, keys);
            c.send(&cmd).await?;
            c.get_answer(keys).await
        })
        .await
    }

    /// Reads the answer to a `get` of `keys`: the values in the keys' order.
    async fn get_answer(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        loop {
            let line = self.line().await?;
            let t = line.trim_end();
            if t == "END" {
                return Ok(out);
            }
            let mut parts = t.split(' ');
            let (Some("VALUE"), Some(key), Some(_flags), Some(len)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(self.protocol(&line));
            };
            let len: usize = len.parse().map_err(|_| self.protocol(&line))?;
            if len > MAX_VALUE {
                return Err(self.protocol(&line));
            }
            let mut data = vec![0u8; len + 2];
            self.stream.read_exact(&mut data).await.map_err(|e| self.io(e))?;
            data.truncate(len);
            if let Some(i) = keys.iter().position(|k| *k == key) {
                out[i] = Some(data);
            }
        }
    }

    /// `get` of `keys`, then `incr` of `key` by `by`, pipelined: one write, one round trip.
    /// The values (in the keys' order) are as they were just before the increment; the
    /// incremented value is `None` when `key` is absent. Errors: as [`Conn::get_many`] and
    /// [`Conn::incr`]; after one, whether the increment happened is unknown.
    pub async fn get_many_and_incr(
        &mut self,
        keys: &[&str],
        key: &str,
        by: u64,
    ) -> Result<(Vec<Option<Vec<u8>>>, Option<u64>), Error> {
        for k in keys.iter().chain([&key]) {
            check_key(k)?;
        }
        if keys.is_empty() {
            return Ok((Vec::new(), self.incr(key, by).await?));
        }
        self.exchange(async |c| {
            let mut cmd = Vec::new();
            get_command(&mut cmd, keys);
            cmd.extend_from_slice(format!("incr {key} {by}\r\n").as_bytes());
            c.send(&cmd).await?;
            let values = c.get_answer(keys).await?;
            Ok((values, c.incr_answer().await?))
        })
        .await
    }

    /// `add` of several values (no expiry), pipelined: one write, one round trip; for each,
    /// what memcached did with it ([`Added`]: a value it has no room for does not stop the
    /// others). Errors: as [`Conn::add`] but for [`Error::NoRoom`]; after one, which values
    /// were stored is unknown.
    pub async fn add_many(&mut self, items: &[(&str, &[u8])]) -> Result<Vec<Added>, Error> {
        for (k, _) in items {
            check_key(k)?;
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.exchange(async |c| {
            let mut msg = Vec::with_capacity(items.iter().map(|(k, v)| k.len() + v.len() + 32).sum());
            for (key, value) in items {
                storage_command(&mut msg, "add", key, value, 0);
            }
            c.send(&msg).await?;
            let mut added = Vec::with_capacity(items.len());
            for _ in items {
                added.push(match c.stored_answer().await {
                    Ok(true) => Added::Stored,
                    Ok(false) => Added::Exists,
                    Err(Error::NoRoom { .. }) => Added::NoRoom,
                    Err(e) => return Err(e),
                });
            }
            Ok(added)
        })
        .await
    }

    /// The server's `version`, to check it is alive.
    pub async fn version(&mut self) -> Result<String, Error> {
        self.exchange(async |c| {
            c.send(b"version\r\n").await?;
            let line = c.line().await?;
            line.trim_end()
                .strip_prefix("VERSION ")
                .map(str::to_string)
                .ok_or_else(|| c.protocol(&line))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("strata:c:1").is_ok());
        assert!(check_key("a b").is_err());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(251)).is_err());
        assert!(check_key("a\nb").is_err());
    }

    /// A server that answers only once both commands arrived: the client must send the
    /// `incr` without waiting for the `get`'s answer. The value holds an `END` line, read by
    /// its length.
    #[tokio::test]
    async fn get_and_incr_go_in_one_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut sock = BufReader::new(sock);
            let mut got = String::new();
            while !got.ends_with("incr q:seq 1\r\n") {
                if sock.read_line(&mut got).await.unwrap() == 0 {
                    break;
                }
            }
            sock.get_mut()
                .write_all(b"VALUE q:applied 0 5\r\nEND\r\n\r\nEND\r\n43\r\n")
                .await
                .unwrap();
            got
        });
        let mut c = Conn::connect(&addr, Duration::from_secs(2)).await.unwrap();
        let (values, next) = c
            .get_many_and_incr(&["q:epoch", "q:applied"], "q:seq", 1)
            .await
            .unwrap();
        assert_eq!(values, vec![None, Some(b"END\r\n".to_vec())]);
        assert_eq!(next, Some(43));
        assert_eq!(server.await.unwrap(), "get q:epoch q:applied\r\nincr q:seq 1\r\n");
        assert!(matches!(
            c.get_many_and_incr(&["q:epoch"], "bad key", 1).await,
            Err(Error::BadKey(_))
        ));
    }

    /// A server out of memory (as memcached under `-M` answers): the value it has no room
    /// for is told apart from the others, the connection stays in step, and a single `add`
    /// says so too.
    #[tokio::test]
    async fn no_room_is_its_own_answer_and_keeps_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut sock = BufReader::new(sock);
            let mut got = String::new();
            while got.matches("\r\n").count() < 6 {
                if sock.read_line(&mut got).await.unwrap() == 0 {
                    break;
                }
            }
            sock.get_mut()
                .write_all(b"STORED\r\nSERVER_ERROR out of memory storing object\r\nNOT_STORED\r\n")
                .await
                .unwrap();
            got.clear();
            while got.matches("\r\n").count() < 2 {
                if sock.read_line(&mut got).await.unwrap() == 0 {
                    break;
                }
            }
            sock.get_mut()
                .write_all(b"SERVER_ERROR object too large for cache\r\nVERSION 1.6\r\n")
                .await
                .unwrap();
            // The version command follows the add.
            let mut rest = String::new();
            let _ = sock.read_line(&mut rest).await;
        });
        let mut c = Conn::connect(&addr, Duration::from_secs(2)).await.unwrap();
        let items: [(&str, &[u8]); 3] = [("a", b"1"), ("b", b"2"), ("c", b"3")];
        assert_eq!(
            c.add_many(&items).await.unwrap(),
            vec![Added::Stored, Added::NoRoom, Added::Exists]
        );
        let e = c.add("d", b"big", 0).await.unwrap_err();
        assert!(e.is_no_room() && !e.is_connection(), "{e}");
        assert_eq!(c.version().await.unwrap(), "1.6");
        server.await.unwrap();
    }

    /// A connection to the real memcached (`STRATA_MEMCACHED`, else 127.0.0.1:11211, as
    /// scripts/memcached.sh runs it); none, and the test is skipped, when none answers.
    async fn real_memcached() -> Option<Conn> {
        let addr = std::env::var("STRATA_MEMCACHED").unwrap_or_else(|_| "127.0.0.1:11211".into());
        let c = Conn::connect(&addr, Duration::from_secs(2)).await;
        if c.is_err() {
            eprintln!("memcached not reachable on {addr}: skipped");
        }
        c.ok()
    }

    /// The pipelined `get` + `incr` against the real memcached (skipped when none answers).
    #[tokio::test]
    async fn get_and_incr_on_a_real_memcached() {
        let Some(mut c) = real_memcached().await else {
            return;
        };
        let k = format!("strata-wire-test:pipe:{}", std::process::id());
        let seq = format!("{k}:seq");
        let other = format!("{k}:other");
        c.delete(&seq).await.unwrap();
        c.set(&other, b"7", 60).await.unwrap();
        // An absent counter is not created by the increment.
        let (values, next) = c.get_many_and_incr(&[&seq, &other], &seq, 1).await.unwrap();
        assert_eq!((values, next), (vec![None, Some(b"7".to_vec())], None));
        assert!(c.add(&seq, b"0", 60).await.unwrap());
        // The values are read before the increment, in the keys' order.
        let (values, next) = c.get_many_and_incr(&[&other, &seq], &seq, 2).await.unwrap();
        assert_eq!(
            (values, next),
            (vec![Some(b"7".to_vec()), Some(b"0".to_vec())], Some(2))
        );
        let (values, next) = c.get_many_and_incr(&[], &seq, 1).await.unwrap();
        assert_eq!((values, next), (Vec::new(), Some(3)));
        // The connection is still in step.
        assert_eq!(c.get(&seq).await.unwrap().as_deref(), Some(&b"3"[..]));
        c.delete(&seq).await.unwrap();
        c.delete(&other).await.unwrap();
    }

    /// Pipelined `add`s against the real memcached (skipped when none answers): each answer
    /// belongs to its own key, and the connection stays in step.
    #[tokio::test]
    async fn add_many_on_a_real_memcached() {
        let Some(mut c) = real_memcached().await else {
            return;
        };
        let k = format!("strata-wire-test:add-many:{}", std::process::id());
        let keys: Vec<String> = (0..3).map(|i| format!("{k}:{i}")).collect();
        for key in &keys {
            c.delete(key).await.unwrap();
        }
        assert!(c.add(&keys[1], b"taken", 60).await.unwrap());
        let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"new\r\nEND"[..])).collect();
        assert_eq!(
            c.add_many(&items).await.unwrap(),
            vec![Added::Stored, Added::Exists, Added::Stored]
        );
        assert_eq!(c.get(&keys[1]).await.unwrap().as_deref(), Some(&b"taken"[..]));
        assert_eq!(c.get(&keys[2]).await.unwrap().as_deref(), Some(&b"new\r\nEND"[..]));
        assert_eq!(c.add_many(&[]).await.unwrap(), Vec::<Added>::new());
        assert!(matches!(c.add_many(&[("bad key", b"v")]).await, Err(Error::BadKey(_))));
        for key in &keys {
            c.delete(key).await.unwrap();
        }
    }

    /// Against the real memcached when one answers on 127.0.0.1:11211 (scripts/memcached.sh).
    #[tokio::test]
    async fn talks_to_a_real_memcached() {
        let Some(mut c) = real_memcached().await else {
            return;
        };
        assert!(!c.version().await.unwrap().is_empty());
        let k = format!("strata-wire-test:{}", std::process::id());
        c.delete(&k).await.unwrap();
        assert_eq!(c.incr(&k, 1).await.unwrap(), None);
        assert!(c.add(&k, b"0", 60).await.unwrap());
        assert!(!c.add(&k, b"5", 60).await.unwrap());
        assert_eq!(c.incr(&k, 1).await.unwrap(), Some(1));
        assert_eq!(c.incr(&k, 2).await.unwrap(), Some(3));
        let k2 = format!("{k}:v");
        c.set(&k2, b"hello\r\nworld", 60).await.unwrap();
        let got = c.get_many(&[&k2, "strata-wire-test:none", &k]).await.unwrap();
        assert_eq!(got[0].as_deref(), Some(&b"hello\r\nworld"[..]));
        assert_eq!(got[1], None);
        assert_eq!(got[2].as_deref(), Some(&b"3"[..]));
        let k3 = format!("{k}:w");
        let items: [(&str, &[u8], u32); 2] = [(&k3, b"one", 60), (&k2, b"two", 60)];
        assert_eq!(
            c.set_and_delete(&items, &[&k, "strata-wire-test:none"]).await.unwrap(),
            1
        );
        let got = c.get_many(&[&k3, &k2, &k]).await.unwrap();
        assert_eq!(got, vec![Some(b"one".to_vec()), Some(b"two".to_vec()), None]);
        assert_eq!(c.set_and_delete(&[], &[&k2, &k3]).await.unwrap(), 2);
        assert!(matches!(c.get("bad key").await, Err(Error::BadKey(_))));
    }
}
