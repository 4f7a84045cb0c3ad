//! Running external programs (Nagios plugins, escalation actions,
//! notification commands) safely:
//! no shell unless asked, arguments passed as arguments, a timeout that
//! kills the whole process group, and output kept up to a cap.
//!
//! Output is read concurrently with the wait and keeps being drained past
//! the cap, so a program that prints megabytes neither blocks on a full
//! pipe nor fills our memory. When the program exits, its output is taken
//! after a short grace: a daemon it started may hold the pipe open forever.

pub mod clock;

use std::sync::{Arc, Mutex};

pub use clock::Clock;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::Instant;

/// The environment variable that carries the API token to the node; it is
/// removed from the environment of every program the node runs.
pub const API_TOKEN_ENV: &str = "GEMBA_API_TOKEN";

/// How much of stdout and of stderr is kept.
pub const OUTPUT_CAP: usize = 64 * 1024;
/// How long output is still read after the program exits.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Bytes fed to stdin (then closed).
    pub stdin: Option<Vec<u8>>,
}

/// How a program ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecEnd {
    /// It exited with this code.
    Exited(i32),
    /// A signal ended it (not ours).
    Signalled(i32),
    /// It ran past its timeout; its process group was killed.
    TimedOut,
    /// It could not be started at all.
    NotStarted(String),
}

#[derive(Clone, Debug)]
pub struct ExecOutcome {
    pub end: ExecEnd,
    pub stdout: String,
    pub stderr: String,
    /// Whether output was cut at [`OUTPUT_CAP`].
    pub truncated: bool,
    pub duration: Duration,
}

impl ExecOutcome {
    pub fn success(&self) -> bool {
        self.end == ExecEnd::Exited(0)
    }

    /// stdout, then stderr, as one text for journals and consoles.
    pub fn combined(&self) -> String {
        let mut s = self.stdout.clone();
        if !self.stderr.is_empty() {
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&self.stderr);
        }
        if self.truncated {
            s.push_str("\n[output truncated]");
        }
        s
    }

    pub fn describe_end(&self) -> String {
        match &self.end {
            ExecEnd::Exited(c) => format!("exit {c}"),
            ExecEnd::Signalled(s) => format!("killed by signal {s}"),
            ExecEnd::TimedOut => format!(
                "timed out after {:.1} s and was killed",
                self.duration.as_secs_f64()
            ),
            ExecEnd::NotStarted(e) => e.clone(),
        }
    }
}

#[derive(Default)]
struct Capture {
    buf: Vec<u8>,
    truncated: bool,
}

fn reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    mut r: R,
    into: Arc<Mutex<Capture>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut c = into.lock().expect("capture lock");
                    let room = OUTPUT_CAP.saturating_sub(c.buf.len());
                    if n > room {
                        c.truncated = true;
                    }
                    let take = n.min(room);
                    c.buf.extend_from_slice(&chunk[..take]);
                }
            }
        }
    })
}

fn kill_group(pid: u32) {
    // The child leads its own process group (see `process_group(0)`), so
    // the negative pid reaches everything it started.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// Kills the program's process group if the run is dropped before the
/// program ended (a cancelled check, a stopping node): `kill_on_drop`
/// alone reaches only the direct child, not what it started.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            kill_group(pid);
        }
    }
}

/// Runs `spec` to its end.
pub async fn run(spec: &ExecSpec) -> ExecOutcome {
    let started = Instant::now();
    let not_started = |e: String| ExecOutcome {
        end: ExecEnd::NotStarted(e),
        stdout: String::new(),
        stderr: String::new(),
        truncated: false,
        duration: started.elapsed(),
    };
    let Some((program, args)) = spec.argv.split_first() else {
        return not_started("no command given".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        // The node's API token stays with the node: plugins, actions and
        // notification commands do not need it to do their work.
        .env_remove(API_TOKEN_ENV)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(if spec.stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return not_started(format!("cannot execute {program}: {e}")),
    };
    let pid = child.id().unwrap_or(0);
    let mut group = GroupGuard((pid != 0).then_some(pid));
    let writer = match (child.stdin.take(), spec.stdin.clone()) {
        (Some(mut stdin), Some(data)) => Some(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = stdin.write_all(&data).await;
        })),
        _ => None,
    };
    let out = Arc::new(Mutex::new(Capture::default()));
    let err = Arc::new(Mutex::new(Capture::default()));
    let readers = [
        reader(child.stdout.take().expect("piped stdout"), out.clone()),
        reader(child.stderr.take().expect("piped stderr"), err.clone()),
    ];
    let end = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(c), _) => ExecEnd::Exited(c),
                (None, Some(s)) => ExecEnd::Signalled(s),
                (None, None) => ExecEnd::Exited(-1),
            }
        }
        Ok(Err(e)) => ExecEnd::NotStarted(format!("cannot wait for {program}: {e}")),
        Err(_) => {
            if pid != 0 {
                kill_group(pid);
            }
            let _ = child.wait().await;
            ExecEnd::TimedOut
        }
    };
    // The program ended: what it started on purpose (a daemon) lives on.
    group.0 = None;
    let duration = started.elapsed();
    let grace = tokio::time::sleep(DRAIN_GRACE);
    tokio::pin!(grace);
    for mut r in readers {
        tokio::select! {
            _ = &mut r => {}
            _ = &mut grace => {
                // A daemon child still holds the pipe: stop reading it, or
                // this reader would live as long as the daemon.
                r.abort();
            }
        }
    }
    if let Some(w) = writer {
        // A program that exited without reading all of its stdin.
        w.abort();
    }
    let take = |c: &Arc<Mutex<Capture>>| {
        let c = c.lock().expect("capture lock");
        (String::from_utf8_lossy(&c.buf).into_owned(), c.truncated)
    };
    let (stdout, t1) = take(&out);
    let (stderr, t2) = take(&err);
    ExecOutcome {
        end,
        stdout,
        stderr,
        truncated: t1 || t2,
        duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], timeout_ms: u64) -> ExecSpec {
        ExecSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_millis(timeout_ms),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn programs_do_not_inherit_the_api_token() {
        // std serializes its own environment reads and writes, and every
        // program here is spawned through std.
        std::env::set_var(API_TOKEN_ENV, "inherited-token-0123456789");
        std::env::set_var("GEMBA_EXEC_TEST_MARK", "kept");
        let o = run(&spec(&["/bin/sh", "-c", "env"], 5_000)).await;
        std::env::remove_var(API_TOKEN_ENV);
        assert_eq!(o.end, ExecEnd::Exited(0));
        assert!(
            o.stdout.contains("GEMBA_EXEC_TEST_MARK=kept"),
            "{}",
            o.stdout
        );
        assert!(!o.stdout.contains(API_TOKEN_ENV), "{}", o.stdout);
    }

    #[tokio::test]
    async fn a_hung_program_and_its_children_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("gemba-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("child.pid");
        // The shell starts a grandchild that would outlive a plain kill.
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let o = run(&spec(&["/bin/sh", "-c", &script], 300)).await;
        assert_eq!(o.end, ExecEnd::TimedOut);
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got SIGKILL with its group; give the kernel a moment to reap.
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "grandchild {pid} survived the timeout");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn reaped(pid: i32) -> bool {
        for _ in 0..100 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gemba-exec-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_cancelled_run_kills_everything_the_program_started() {
        let dir = temp("cancel");
        let marker = dir.join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let s = spec(&["/bin/sh", "-c", &script], 60_000);
        let task = tokio::spawn(async move { run(&s).await });
        while !marker.exists() || std::fs::read_to_string(&marker).unwrap().trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // A check cancelled by its runner (removed from the policy, or the
        // node stopping): the future is dropped mid-run.
        task.abort();
        let _ = task.await;
        assert!(reaped(pid), "grandchild {pid} survived the cancelled run");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_daemon_holding_the_pipe_leaves_no_reader_behind() {
        let dir = temp("daemon");
        let marker = dir.join("daemon.pid");
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        // The program exits at once; its background child keeps stdout open.
        let script = format!("sleep 30 & echo $! > {}; echo started", marker.display());
        let o = run(&spec(&["/bin/sh", "-c", &script], 5_000)).await;
        assert_eq!(o.end, ExecEnd::Exited(0));
        assert_eq!(o.stdout.trim(), "started");
        let mut alive = metrics.num_alive_tasks();
        for _ in 0..50 {
            if alive <= before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            alive = metrics.num_alive_tasks();
        }
        assert!(
            alive <= before,
            "{} output reader(s) still running",
            alive - before
        );
        // The daemon itself was started on purpose and is left alone.
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn megabytes_of_output_are_truncated_not_kept() {
        let o = run(&spec(
            &[
                "/bin/sh",
                "-c",
                "head -c 5000000 /dev/zero | tr '\\0' x; exit 2",
            ],
            10_000,
        ))
        .await;
        assert_eq!(o.end, ExecEnd::Exited(2));
        assert!(o.truncated);
        assert_eq!(o.stdout.len(), OUTPUT_CAP);
        assert!(o.combined().ends_with("[output truncated]"));
    }

    #[tokio::test]
    async fn a_missing_program_says_which() {
        let o = run(&spec(&["/nonexistent/check_thing", "-H", "x"], 1000)).await;
        match &o.end {
            ExecEnd::NotStarted(e) => assert!(e.contains("/nonexistent/check_thing"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_daemon_holding_the_pipe_does_not_hold_us() {
        let o = run(&spec(
            &["/bin/sh", "-c", "echo started; (sleep 5 &) ; exit 0"],
            3000,
        ))
        .await;
        assert!(o.success());
        assert_eq!(o.stdout.trim(), "started");
        assert!(o.duration < Duration::from_secs(2));
    }
}
