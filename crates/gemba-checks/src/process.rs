//! The `process` check: is a process running (by name or pidfile), and are
//! its resident memory, open file descriptors and threads under limits.

use gemba_core::CheckKind;

use crate::nagios::{Perf, Status};

struct Found {
    pid: i32,
    rss_mb: f64,
    fds: Option<u64>,
    threads: i64,
}

fn inspect(p: &procfs::process::Process) -> Option<Found> {
    let stat = p.stat().ok()?;
    if stat.state == 'Z' {
        return None;
    }
    let page = procfs::page_size() as f64;
    Some(Found {
        pid: p.pid,
        rss_mb: stat.rss as f64 * page / (1024.0 * 1024.0),
        fds: p.fd_count().ok().map(|n| n as u64),
        threads: stat.num_threads,
    })
}

fn matches_name(p: &procfs::process::Process, name: &str) -> bool {
    if p.stat().map(|s| s.comm == name).unwrap_or(false) {
        return true;
    }
    // comm is cut at 15 bytes; the command line's program name is not.
    p.cmdline()
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|arg0| arg0.rsplit('/').next() == Some(name))
        .unwrap_or(false)
}

fn find(name: Option<&str>, pidfile: Option<&str>) -> Result<Vec<Found>, String> {
    if let Some(pf) = pidfile {
        let text =
            std::fs::read_to_string(pf).map_err(|e| format!("cannot read pidfile {pf}: {e}"))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("pidfile {pf} does not hold a pid: {:?}", text.trim()))?;
        let p = procfs::process::Process::new(pid)
            .map_err(|_| format!("pid {pid} from {pf} is not running"))?;
        if let Some(n) = name {
            if !matches_name(&p, n) {
                return Err(format!("pid {pid} from {pf} is not {n}"));
            }
        }
        return inspect(&p)
            .map(|f| vec![f])
            .ok_or_else(|| format!("pid {pid} from {pf} is not running"));
    }
    let name = name.unwrap_or_default();
    let all =
        procfs::process::all_processes().map_err(|e| format!("cannot list processes: {e}"))?;
    let own = std::process::id() as i32;
    Ok(all
        .filter_map(Result::ok)
        .filter(|p| p.pid != own && matches_name(p, name))
        .filter_map(|p| inspect(&p))
        .collect())
}

/// Runs a process check (blocking: it reads /proc).
pub fn check(kind: &CheckKind) -> (Status, String, Vec<Perf>) {
    let CheckKind::Process {
        name,
        pidfile,
        max_rss_mb,
        max_fds,
        max_threads,
    } = kind
    else {
        return (Status::Unknown, "not a process check".into(), vec![]);
    };
    let what = name.clone().or_else(|| pidfile.clone()).unwrap_or_default();
    let found = match find(name.as_deref(), pidfile.as_deref()) {
        Ok(f) => f,
        Err(e) => return (Status::Critical, format!("PROCS CRITICAL - {e}"), vec![]),
    };
    if found.is_empty() {
        return (
            Status::Critical,
            format!("PROCS CRITICAL - no process {what} is running"),
            vec![],
        );
    }
    let rss: f64 = found.iter().map(|f| f.rss_mb).sum();
    let fds: u64 = found.iter().filter_map(|f| f.fds).sum();
    let threads: i64 = found.iter().map(|f| f.threads).sum();
    let mut problems = Vec::new();
    if let Some(m) = max_rss_mb {
        if rss > *m as f64 {
            problems.push(format!("RSS {rss:.1} MB over {m} MB"));
        }
    }
    if let Some(m) = max_fds {
        if fds > *m {
            problems.push(format!("{fds} open fds over {m}"));
        }
    }
    if let Some(m) = max_threads {
        if threads > *m as i64 {
            problems.push(format!("{threads} threads over {m}"));
        }
    }
    let pids: Vec<String> = found.iter().map(|f| f.pid.to_string()).collect();
    let perf = vec![
        Perf {
            label: "procs".into(),
            value: found.len() as f64,
            uom: String::new(),
            warn: None,
            crit: None,
            min: Some(0.0),
            max: None,
        },
        Perf {
            label: "rss".into(),
            value: rss,
            uom: "MB".into(),
            warn: None,
            crit: max_rss_mb.map(|m| m.to_string()),
            min: Some(0.0),
            max: None,
        },
        Perf {
            label: "fds".into(),
            value: fds as f64,
            uom: String::new(),
            warn: None,
            crit: max_fds.map(|m| m.to_string()),
            min: Some(0.0),
            max: None,
        },
        Perf {
            label: "threads".into(),
            value: threads as f64,
            uom: String::new(),
            warn: None,
            crit: max_threads.map(|m| m.to_string()),
            min: Some(0.0),
            max: None,
        },
    ];
    if problems.is_empty() {
        (
            Status::Ok,
            format!("PROCS OK - {what} running (pid {})", pids.join(", ")),
            perf,
        )
    } else {
        (
            Status::Critical,
            format!(
                "PROCS CRITICAL - {what} (pid {}): {}",
                pids.join(", "),
                problems.join("; ")
            ),
            perf,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: Option<&str>, pidfile: Option<&str>, max_threads: Option<u64>) -> CheckKind {
        CheckKind::Process {
            name: name.map(str::to_string),
            pidfile: pidfile.map(str::to_string),
            max_rss_mb: None,
            max_fds: None,
            max_threads,
        }
    }

    #[test]
    fn finds_a_running_process_by_pidfile_and_by_name() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pf = std::env::temp_dir().join(format!("gemba-proc-{}.pid", child.id()));
        std::fs::write(&pf, child.id().to_string()).unwrap();
        let (s, o, perf) = check(&kind(None, Some(pf.to_str().unwrap()), None));
        assert_eq!(s, Status::Ok, "{o}");
        assert!(perf.iter().any(|p| p.label == "rss"));
        let (s, _, _) = check(&kind(Some("sleep"), None, None));
        assert_eq!(s, Status::Ok);
        let (s, o, _) = check(&kind(None, Some(pf.to_str().unwrap()), Some(0)));
        assert_eq!(s, Status::Critical);
        assert!(o.contains("threads over 0"), "{o}");
        child.kill().unwrap();
        child.wait().unwrap();
        let (s, o, _) = check(&kind(None, Some(pf.to_str().unwrap()), None));
        assert_eq!(s, Status::Critical);
        assert!(o.contains("is not running"), "{o}");
        let _ = std::fs::remove_file(pf);
    }

    #[test]
    fn a_missing_process_is_critical_and_named() {
        let (s, o, _) = check(&kind(Some("no-such-daemon-xyz"), None, None));
        assert_eq!(s, Status::Critical);
        assert!(o.contains("no-such-daemon-xyz"), "{o}");
    }
}
