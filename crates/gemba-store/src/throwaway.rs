//! A throwaway PostgreSQL server for tests and benchmarks (never for
//! production): `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port (and a private socket
//! directory), one fresh database per call of [`Cluster::database`], and
//! `pg_ctl stop` plus the directory removed when dropped. As root the
//! server runs as the `postgres` user (PostgreSQL refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
    next: AtomicUsize,
}

/// Where PostgreSQL's server programs are, if installed.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    // Our own uid, from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Makes `paths` (and what is under them) the `postgres` user's: the
/// server, run as that user, reads and writes them.
fn give_to_postgres(paths: &[&Path]) -> Result<(), String> {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .args(paths)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("chown: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Cluster {
    /// Starts one, or says why not (the caller skips with that message).
    pub fn start(name: &str) -> Result<Cluster, String> {
        let bin = bin_dir().ok_or("PostgreSQL is not installed (apt-get install postgresql)")?;
        let dir = std::env::temp_dir().join(format!("gemba-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).map_err(|e| e.to_string())?;
        let as_postgres = is_root();
        if as_postgres {
            give_to_postgres(&[&dir])?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let c = Cluster {
            dir,
            bin,
            port,
            as_postgres,
            next: AtomicUsize::new(0),
        };
        c.run(
            "initdb",
            &[
                "-D",
                &c.data().display().to_string(),
                "-U",
                "gemba",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        c.start_again()?;
        Ok(c)
    }

    /// Starts the server (after [`Cluster::stop`]) on the same port.
    pub fn start_again(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.join("server.log").display().to_string(),
                "-o",
                &format!(
                    "-h 127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
                    self.port,
                    self.dir.join("sock").display()
                ),
                "-w",
                "start",
            ],
        )
    }

    /// Stops the server at once, as a crash would: connections drop and
    /// nothing answers until [`Cluster::start_again`].
    pub fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    /// Turns TLS on with this certificate and key (PEM files), and with
    /// `only_tls` refuses unencrypted TCP connections (pg_hba `hostssl`);
    /// the server is restarted. Called again, it swaps the certificate.
    pub fn enable_tls(&self, cert: &Path, key: &Path, only_tls: bool) -> Result<(), String> {
        let data = self.data();
        let copy = |from: &Path, to: &str| -> Result<(), String> {
            std::fs::copy(from, data.join(to)).map_err(|e| format!("{}: {e}", from.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data.join(to), std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())
        };
        copy(cert, "server.crt")?;
        copy(key, "server.key")?;
        if self.as_postgres {
            give_to_postgres(&[&data.join("server.crt"), &data.join("server.key")])?;
        }
        // postgresql.auto.conf is read last: its settings win, and it can
        // be rewritten whole each time.
        std::fs::write(
            data.join("postgresql.auto.conf"),
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .map_err(|e| e.to_string())?;
        let hba = if only_tls {
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        };
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        self.restart()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let out = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&path)
                .args(args)
                .output()
        } else {
            Command::new(&path).args(args).output()
        }
        .map_err(|e| format!("{program}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The server's `postgres` database over its private Unix socket
    /// (which needs no TLS even when TCP does).
    pub fn admin_url(&self) -> String {
        format!(
            "host={} port={} user=gemba dbname=postgres",
            self.dir.join("sock").display(),
            self.port
        )
    }

    /// A new, empty database; its URL.
    pub async fn database(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{n}");
        let (client, conn) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .expect("the test server answers");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        format!("postgres://gemba@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server at once (as a crash would) and starts it again.
    /// (Not `pg_ctl restart`: it would start the server without the log
    /// file, writing to this process's pipes, which then never close.)
    pub fn restart(&self) -> Result<(), String> {
        self.stop()?;
        self.start_again()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
