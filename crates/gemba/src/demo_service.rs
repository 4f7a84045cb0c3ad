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

fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let l = TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 1024];
        let _ = c.read(&mut buf);
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
    }
    Ok(())
}

/// Starts the service in the background and returns its pid once it listens.
pub fn start_detached(listen: SocketAddr, pidfile: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the gemba executable")?;
    let child = std::process::Command::new(exe)
        .args([
            "demo-service",
            "--listen",
            &listen.to_string(),
            "--pidfile",
            &pidfile.display().to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the demo service")?;
    let pid = child.id();
    std::fs::write(pidfile, pid.to_string())
        .with_context(|| format!("cannot write {}", pidfile.display()))?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        if TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
            return Ok(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the demo service (pid {pid}) does not listen on {listen} after 3 s")
}

pub fn run(args: &DemoServiceArgs) -> anyhow::Result<()> {
    if args.detach {
        let pid = start_detached(args.listen, &args.pidfile)?;
        println!("started the demo service, pid {pid}, on {}", args.listen);
        return Ok(());
    }
    serve(args.listen)
}
