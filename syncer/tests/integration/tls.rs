//! TLS to MySQL (`mysql_ssl_mode`, `mysql_ssl_ca`) against a real MariaDB: a second,
//! throwaway server started by the test (its own datadir, socket and loopback port, a
//! certificate from a CA made here), never the running one. The syncer's own pool options
//! (`store::mysql_opts`) connect, and `SHOW STATUS LIKE 'Ssl_cipher'` says whether the
//! session is encrypted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use strata_syncer::config::{MysqlTls, SslMode};
use strata_syncer::store::{mysql_opts, Store, StoreError};

/// Most time the throwaway server gets to start or stop.
const SERVER_WAIT: Duration = Duration::from_secs(90);

fn first_of(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// A certificate authority made for one test.
fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A throwaway MariaDB with TLS on a loopback port; stopped and removed when dropped.
struct TlsServer {
    dir: PathBuf,
    child: Child,
    port: u16,
    client: PathBuf,
    admin_user: String,
}

impl TlsServer {
    /// Starts one whose certificate names `names` and is signed by `ca`; `None` (the test
    /// says so and passes) where no MariaDB server is installed.
    fn start(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> Option<TlsServer> {
        let (Some(server), Some(install), Some(client)) = (
            first_of(&["mariadbd", "mysqld"]),
            first_of(&["mariadb-install-db", "mysql_install_db"]),
            first_of(&["mariadb", "mysql"]),
        ) else {
            eprintln!("no MariaDB server installed: TLS test skipped");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("strata-mysql-tls-{}-{}", std::process::id(), names[0]));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("datadir");
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, ca)
            .expect("sign");
        std::fs::write(dir.join("server.pem"), cert.pem()).expect("cert");
        std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("key");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let d = dir.display();
        std::fs::write(
            dir.join("my.cnf"),
            format!(
                "[mysqld]\ndatadir={d}/data\nsocket={d}/mysqld.sock\npid-file={d}/mysqld.pid\n\
                 log-error={d}/error.log\nport={port}\nbind-address=127.0.0.1\nskip-log-bin\n\
                 ssl_cert={d}/server.pem\nssl_key={d}/server.key\ninnodb_buffer_pool_size=16M\n\
                 performance_schema=OFF\n"
            ),
        )
        .expect("my.cnf");
        // As root the server must run as the mysql account (it refuses root).
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let (run_as, admin_user) = if root {
            let _ = Command::new("chown").args(["-R", "mysql:mysql"]).arg(&dir).status();
            ("mysql".to_string(), "root".to_string())
        } else {
            let me = std::env::var("USER").unwrap_or_else(|_| "nobody".into());
            (me.clone(), me)
        };
        let cnf = format!("--defaults-file={d}/my.cnf");
        let installed = Command::new(install)
            .args([cnf.as_str(), &format!("--user={run_as}"), "--skip-test-db"])
            .arg("--auth-root-authentication-method=socket")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db");
        assert!(installed.success(), "mariadb-install-db failed in {d}");
        let child = Command::new(server)
            .args([cnf.as_str(), &format!("--user={run_as}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        let s = TlsServer {
            dir,
            child,
            port,
            client,
            admin_user,
        };
        let until = Instant::now() + SERVER_WAIT;
        while !s.sql("SELECT 1") {
            assert!(
                Instant::now() < until,
                "the throwaway MariaDB did not start: {}",
                std::fs::read_to_string(s.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let users = ["'strata'@'%'", "'strata'@'localhost'", "'strata'@'127.0.0.1'"];
        for u in users {
            assert!(
                s.sql(&format!(
                    "CREATE USER {u} IDENTIFIED BY 'tls-test'; GRANT ALL ON *.* TO {u}"
                )),
                "create {u}"
            );
        }
        Some(s)
    }

    /// Runs SQL as the administrator over the server's socket; whether it succeeded.
    fn sql(&self, sql: &str) -> bool {
        Command::new(&self.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("mysqld.sock").display()))
            .args(["-u", &self.admin_user, "-e", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The `mysql` URL of the test user, by `host`.
    fn url(&self, host: &str) -> String {
        format!("mysql://strata:tls-test@{host}:{}/mysql", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let until = Instant::now() + SERVER_WAIT;
        while Instant::now() < until && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The session's `Ssl_cipher` through the syncer's pool options (empty: not encrypted), or
/// why there is no session, as the syncer says it.
async fn cipher(url: &str, tls: &MysqlTls) -> Result<String, String> {
    let pool = mysql_async::Pool::new(mysql_opts(url, tls).await.map_err(|e| e.to_string())?);
    let result = async {
        let mut c = pool.get_conn().await?;
        let row: Option<(String, String)> = c.query_first("SHOW STATUS LIKE 'Ssl_cipher'").await?;
        Ok::<_, mysql_async::Error>(row.map(|(_, v)| v).unwrap_or_default())
    }
    .await
    .map_err(|e| strata_syncer::store::tls::explain(&e, tls).unwrap_or_else(|| e.to_string()));
    let _ = pool.disconnect().await;
    result
}

fn write_ca(dir: &Path, ca: &CertifiedIssuer<'static, KeyPair>, file: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, ca.pem()).expect("CA file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_over_tls_encrypts_and_checks_the_certificate_as_the_mode_says() {
    let good = ca();
    let Some(server) = TlsServer::start(&good, &["localhost"]) else {
        return;
    };
    let files = std::env::temp_dir().join(format!("strata-mysql-tls-cas-{}", std::process::id()));
    std::fs::create_dir_all(&files).expect("dir");
    let right = write_ca(&files, &good, "right-ca.pem");
    let wrong = write_ca(&files, &ca(), "wrong-ca.pem");
    let url = server.url("127.0.0.1");
    let tls = |mode, ca: Option<&PathBuf>| MysqlTls { mode, ca: ca.cloned() };

    // disabled: the session is in the clear.
    let plain = cipher(&url, &tls(SslMode::Disabled, None))
        .await
        .expect("plain connects");
    assert_eq!(plain, "", "no TLS when disabled");

    // required: encrypted, whoever signed the certificate.
    let c = cipher(&url, &tls(SslMode::Required, None))
        .await
        .expect("required connects");
    assert!(!c.is_empty(), "required: Ssl_cipher is empty");

    // verify_ca: the right CA, any name (the certificate names localhost, the URL 127.0.0.1).
    let c = cipher(&url, &tls(SslMode::VerifyCa, Some(&right)))
        .await
        .expect("verify_ca with its CA");
    assert!(!c.is_empty(), "verify_ca: Ssl_cipher is empty");

    // verify_ca with another CA: refused, and the syncer says why.
    let wrong_tls = tls(SslMode::VerifyCa, Some(&wrong));
    let why = cipher(&url, &wrong_tls).await.expect_err("a CA that did not sign it");
    assert!(
        why.starts_with("mysql: TLS to MySQL refused (mysql_ssl_mode = verify_ca): the server's certificate is not signed by a CA in mysql_ssl_ca"),
        "{why}"
    );
    assert!(why.contains("wrong-ca.pem"), "{why}");
    // The store's own connection gives the same words.
    let store = Store::with_tls(&url, "wp_", "strata-tls-test:", &wrong_tls).expect("store");
    match store.load_cursor().await {
        Err(e @ StoreError::Tls(_)) => assert_eq!(e.to_string(), why),
        other => panic!("expected a TLS refusal, got {other:?}"),
    }

    // verify_identity: the name must be the certificate's.
    let identity = tls(SslMode::VerifyIdentity, Some(&right));
    let why = cipher(&url, &identity)
        .await
        .expect_err("127.0.0.1 is not a name of the certificate");
    assert!(why.contains("does not name the host of the mysql URL"), "{why}");
    let c = cipher(&server.url("localhost"), &identity)
        .await
        .expect("verify_identity by the certificate's name");
    assert!(!c.is_empty());

    let _ = std::fs::remove_dir_all(files);
}
