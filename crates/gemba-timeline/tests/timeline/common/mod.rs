//! A process that leaks on command: a Python child that opens TCP
//! connections (to a listener the test holds) and files, and releases
//! them, answering "ok" after each command so tests need no sleeps.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const CHILD: &str = r#"
import socket, sys
port = int(sys.argv[1])
held = []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "open":
        for _ in range(int(cmd[1])):
            held.append(socket.create_connection(("127.0.0.1", port)))
            held.append(open("/dev/null"))
    elif cmd[0] == "close":
        for h in held:
            h.close()
        held = []
    print("ok", flush=True)
"#;

pub struct Leaky {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Leaky {
    pub fn start(port: u16, pidfile: &std::path::Path) -> Leaky {
        let mut child = Command::new("python3")
            .args(["-c", CHILD, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        std::fs::write(pidfile, child.id().to_string()).unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Leaky {
            child,
            stdin,
            stdout,
        }
    }

    pub fn command(&mut self, c: &str) {
        writeln!(self.stdin, "{c}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A listener on 127.0.0.1 that accepts and holds every connection.
pub fn holding_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    port
}
