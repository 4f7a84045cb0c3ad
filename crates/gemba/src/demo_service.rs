//! `gemba demo-service`: the toy web service `gemba demo` keeps alive with
//! its escalator. It answers every HTTP request with 200 "ok". With
//! `--detach` it starts itself in the background, waits until it listens,
//! writes the pidfile and returns: what a restart action does for a real
//! service.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::cli::DemoServiceArgs;

/// Appends one timestamped line to the service's log, if it has one.
fn log(file: Option<&Path>, text: &str) {
    let Some(path) = file else { return };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(
            f,
            "{} [{}] {text}",
            gemba_timeline::event::format_ms(now),
            std::process::id()
        );
    }
}

/// The bad release: while `flag` exists, open connections to a backend of
/// this process and keep both ends, 4 a second (at most 20,000), and say
/// so in the log every 40 connections, as a connection pool would.
fn leak(listen: SocketAddr, flag: std::path::PathBuf, log_file: Option<std::path::PathBuf>) {
    let Ok(backend) = TcpListener::bind(SocketAddr::new(listen.ip(), 0)) else {
        return;
    };
    let Ok(addr) = backend.local_addr() else {
        return;
    };
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = held.clone();
    std::thread::spawn(move || {
        for c in backend.incoming().flatten() {
            if let Ok(mut h) = accepted.lock() {
                h.push(c);
            }
        }
    });
    let mut clients = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if flag.exists() && clients.len() < 20_000 {
            if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                clients.push(c);
                if clients.len() % 40 == 0 {
                    log(
                        log_file.as_deref(),
                        &format!(
                            "WARN backend pool: {} connections open, 0 released since start",
                            clients.len()
                        ),
                    );
                }
            }
        }
    }
}

fn serve(
    listen: SocketAddr,
    pidfile: &Path,
    exit_with: Option<u32>,
    leak_flag: Option<std::path::PathBuf>,
    log_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    if let Some(owner) = exit_with {
        // The demo may be killed without a chance to clean up; its service
        // must not outlive it.
        std::thread::spawn(move || loop {
            if !alive(owner) {
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(500));
        });
    }
    let l = TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    log(
        log_file.as_deref(),
        &format!(
            "INFO started, listening on {listen}{}",
            match &leak_flag {
                Some(f) if f.exists() => " (release with the pooled backend client)",
                _ => "",
            }
        ),
    );
    if let Some(flag) = leak_flag {
        let log_file = log_file.clone();
        std::thread::spawn(move || leak(listen, flag, log_file));
    }
    // Written only once listening: the pidfile names a working service.
    std::fs::write(pidfile, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", pidfile.display()))?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let _ = c.read(&mut buf);
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            !st.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// How the demo service is started.
#[derive(Clone, Debug, Default)]
pub struct Start {
    pub exit_with: Option<u32>,
    /// Stop a running service first.
    pub restart: bool,
    pub leak_flag: Option<std::path::PathBuf>,
    /// Where the service writes its log.
    pub log: Option<std::path::PathBuf>,
}

/// Starts the service in the background and returns its pid once it
/// listens. If the pidfile names a live service that answers, it is left
/// alone, as a start by most init scripts does; `restart` stops it first.
pub fn start_detached(listen: SocketAddr, pidfile: &Path, how: &Start) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let exit_with = how.exit_with;
    let answers = || TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok();
    if let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    {
        if alive(pid) && how.restart {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            let stopping = Instant::now();
            while alive(pid) && stopping.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
        } else if alive(pid) && answers() {
            return Ok(pid);
        }
    }
    let exe = std::env::current_exe().context("cannot find the gemba executable")?;
    let mut args = vec![
        "demo-service".to_string(),
        "--listen".into(),
        listen.to_string(),
        "--pidfile".into(),
        pidfile.display().to_string(),
    ];
    if let Some(owner) = exit_with {
        args.push(format!("--exit-with={owner}"));
    }
    if let Some(flag) = &how.leak_flag {
        args.push("--leak-flag".into());
        args.push(flag.display().to_string());
    }
    if let Some(l) = &how.log {
        args.push("--log".into());
        args.push(l.display().to_string());
    }
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the demo service")?;
    let pid = child.id();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("the demo service exited at start ({status}); is {listen} taken by another process?");
        }
        let written = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if written == Some(pid) {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    bail!("the demo service (pid {pid}) does not listen on {listen} after 3 s")
}

pub fn run(args: &DemoServiceArgs) -> anyhow::Result<()> {
    if args.detach {
        let how = Start {
            exit_with: args.exit_with,
            restart: args.restart,
            leak_flag: args.leak_flag.clone(),
            log: args.log.clone(),
        };
        let pid = start_detached(args.listen, &args.pidfile, &how)?;
        println!("started the demo service, pid {pid}, on {}", args.listen);
        return Ok(());
    }
    serve(
        args.listen,
        &args.pidfile,
        args.exit_with,
        args.leak_flag.clone(),
        args.log.clone(),
    )
}
