//! What every agent measures of its machine and of the processes named by
//! `[[process]]`, read from /proc. One [`Sampler::sample`] call reads the
//! TCP tables once per network namespace, every selected process once, and
//! the host's load, memory and file handles; rates (CPU, context
//! switches) come from the difference with the previous sample.
//!
//! A process that is gone, or that gemba may not read, becomes a sample
//! with a reason and no values, never an error: the next sample tries
//! again. A part that cannot be read (the fds of a process owned by
//! another user when gemba is not root) leaves those metrics out and
//! says so in `partial`.

use std::collections::{BTreeMap, HashMap, HashSet};

use gemba_core::metrics::{ProcessDef, Selector};
use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::{FDTarget, Process};
use procfs::Current;

pub use gemba_core::metrics::{HOST, HOST_METRICS, PROCESS_METRICS};

/// Whether `metric` is one a sample of `process` may carry.
pub fn known_metric(process: &str, metric: &str) -> bool {
    if process == HOST {
        HOST_METRICS.contains(&metric)
    } else {
        PROCESS_METRICS.contains(&metric)
    }
}

fn state_metric(s: &TcpState) -> &'static str {
    match s {
        TcpState::Established => "tcp_established",
        TcpState::SynSent => "tcp_syn_sent",
        TcpState::SynRecv | TcpState::NewSynRecv => "tcp_syn_recv",
        TcpState::FinWait1 => "tcp_fin_wait1",
        TcpState::FinWait2 => "tcp_fin_wait2",
        TcpState::TimeWait => "tcp_time_wait",
        TcpState::Close => "tcp_close",
        TcpState::CloseWait => "tcp_close_wait",
        TcpState::LastAck => "tcp_last_ack",
        TcpState::Listen => "tcp_listen",
        TcpState::Closing => "tcp_closing",
    }
}

/// One sample of the host or of one process.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// `host` or the `[[process]]` name.
    pub name: String,
    pub at_ms: u64,
    /// Metric → value, in a stable order.
    pub values: BTreeMap<&'static str, f64>,
    /// Why there are no values (the process is not running, ...).
    pub unavailable: Option<String>,
    /// Parts that could not be read, with why.
    pub partial: Vec<String>,
}

impl Sample {
    fn new(name: &str, at_ms: u64) -> Sample {
        Sample {
            name: name.to_string(),
            at_ms,
            values: BTreeMap::new(),
            unavailable: None,
            partial: Vec::new(),
        }
    }
}

/// A socket as the TCP tables show it.
#[derive(Clone, Copy)]
struct Socket {
    state: &'static str,
    local_port: u16,
    /// Outgoing or accepted, not listening, with a peer.
    connected: bool,
}

/// The TCP tables of one network namespace, by socket inode.
#[derive(Default)]
struct Table {
    by_inode: HashMap<u64, Socket>,
    all: Vec<Socket>,
}

impl Table {
    fn read(tcp: Vec<TcpNetEntry>, tcp6: Vec<TcpNetEntry>) -> Table {
        let mut t = Table::default();
        for e in tcp.into_iter().chain(tcp6) {
            let s = Socket {
                state: state_metric(&e.state),
                local_port: e.local_address.port(),
                connected: !matches!(e.state, TcpState::Listen) && e.remote_address.port() != 0,
            };
            t.all.push(s);
            if e.inode != 0 {
                t.by_inode.insert(e.inode, s);
            }
        }
        t
    }
}

/// Counts connections by state and the ephemeral ports they hold.
fn count_sockets<'a>(
    values: &mut BTreeMap<&'static str, f64>,
    sockets: impl Iterator<Item = &'a Socket>,
    range: (u16, u16),
) {
    for m in PROCESS_METRICS.iter().filter(|m| m.starts_with("tcp_")) {
        values.insert(m, 0.0);
    }
    let mut ports = HashSet::new();
    for s in sockets {
        *values.entry(s.state).or_insert(0.0) += 1.0;
        if s.connected && (range.0..=range.1).contains(&s.local_port) {
            ports.insert(s.local_port);
        }
    }
    values.insert("ephemeral_ports", ports.len() as f64);
}

/// What the previous sample of a process left for rates and restarts.
#[derive(Clone, Copy, Debug, Default)]
struct Previous {
    at_ms: u64,
    cpu_ticks: u64,
    ctx_voluntary: u64,
    ctx_involuntary: u64,
    /// The earliest start time (ticks since boot) of its processes.
    started: Option<u64>,
}

/// Samples the host and the configured processes; keeps what rates and
/// restart counts need between calls.
pub struct Sampler {
    defs: Vec<ProcessDef>,
    /// Processes past the cap: named, not sampled.
    skipped: Vec<String>,
    previous: HashMap<String, Previous>,
    restarts: HashMap<String, u64>,
    ticks_per_s: f64,
    page: f64,
    own_pid: i32,
}

/// The processes a selector names now, or why there are none.
fn select(def: &ProcessDef, by_program: &HashMap<String, Vec<i32>>) -> Result<Vec<i32>, String> {
    match &def.selector {
        Selector::Program(name) => match by_program.get(name) {
            Some(p) if !p.is_empty() => Ok(p.clone()),
            _ => Err(format!("no process named {name} is running")),
        },
        Selector::Pidfile(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read pidfile {path}: {e}"))?;
            let text = text.trim();
            let pid: i32 = text
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("pidfile {path} does not hold a pid"))?;
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                Ok(vec![pid])
            } else {
                Err(format!("pid {pid} from {path} is not running"))
            }
        }
        Selector::Cgroup(dir) => pids_of_cgroup(dir),
        Selector::Unit(unit) => pids_of_cgroup(&format!("/sys/fs/cgroup/system.slice/{unit}"))
            .map_err(|e| {
                format!("unit {unit}: {e} (not running, or the machine does not use cgroup v2)")
            }),
    }
}

fn pids_of_cgroup(dir: &str) -> Result<Vec<i32>, String> {
    let path = format!("{dir}/cgroup.procs");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let pids: Vec<i32> = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .take(10_000)
        .collect();
    if pids.is_empty() {
        Err(format!("no process in {dir}"))
    } else {
        Ok(pids)
    }
}

/// The ephemeral port range of this machine.
fn port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

fn netns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

impl Sampler {
    /// A sampler for `defs`; past `max_processes`, processes are named in
    /// [`Sampler::skipped`] and not sampled.
    pub fn new(defs: &[ProcessDef], max_processes: usize) -> Sampler {
        let keep = defs.len().min(max_processes);
        Sampler {
            defs: defs[..keep].to_vec(),
            skipped: defs[keep..].iter().map(|d| d.name.clone()).collect(),
            previous: HashMap::new(),
            restarts: HashMap::new(),
            ticks_per_s: procfs::ticks_per_second() as f64,
            page: procfs::page_size() as f64,
            own_pid: std::process::id() as i32,
        }
    }

    /// Processes configured past the cap, not sampled.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Programs by name (comm and argv[0]'s file name), for the
    /// selectors that name a program; only read when one does.
    fn programs(&self) -> HashMap<String, Vec<i32>> {
        let wanted: HashSet<&str> = self
            .defs
            .iter()
            .filter_map(|d| match &d.selector {
                Selector::Program(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        let mut out: HashMap<String, Vec<i32>> = HashMap::new();
        if wanted.is_empty() {
            return out;
        }
        let Ok(all) = procfs::process::all_processes() else {
            return out;
        };
        for p in all.filter_map(Result::ok) {
            if p.pid == self.own_pid {
                continue;
            }
            let Ok(stat) = p.stat() else { continue };
            if stat.state == 'Z' {
                continue;
            }
            if wanted.contains(stat.comm.as_str()) {
                out.entry(stat.comm.clone()).or_default().push(p.pid);
                continue;
            }
            // comm is cut at 15 bytes; argv[0] is not (read only then).
            if stat.comm.len() >= 15 || wanted.iter().any(|w| w.len() > 15) {
                if let Some(arg0) = p.cmdline().ok().and_then(|c| c.into_iter().next()) {
                    let base = arg0.rsplit('/').next().unwrap_or("").to_string();
                    if wanted.contains(base.as_str()) {
                        out.entry(base).or_default().push(p.pid);
                    }
                }
            }
        }
        out
    }

    /// One sample of the host and of every configured process.
    pub fn sample(&mut self, at_ms: u64) -> Vec<Sample> {
        let range = port_range();
        let own_ns = netns(self.own_pid).unwrap_or_default();
        let mut tables: HashMap<String, Option<Table>> = HashMap::new();
        let host_table = Table::read(
            procfs::net::tcp().unwrap_or_default(),
            procfs::net::tcp6().unwrap_or_default(),
        );
        let mut out = Vec::with_capacity(self.defs.len() + 1);
        out.push(self.host(at_ms, &host_table, range));
        tables.insert(own_ns.clone(), Some(host_table));
        let programs = self.programs();
        for i in 0..self.defs.len() {
            let def = self.defs[i].clone();
            let s = match select(&def, &programs) {
                Ok(pids) => self.process(&def.name, &pids, at_ms, range, &own_ns, &mut tables),
                Err(why) => {
                    self.gone(&def.name);
                    let mut s = Sample::new(&def.name, at_ms);
                    s.unavailable = Some(why);
                    s
                }
            };
            out.push(s);
        }
        out
    }

    /// A process that is not running: the next start counts as a restart.
    fn gone(&mut self, name: &str) {
        if let Some(p) = self.previous.get_mut(name) {
            p.started = None;
            p.cpu_ticks = 0;
        }
    }

    fn host(&self, at_ms: u64, table: &Table, range: (u16, u16)) -> Sample {
        let mut s = Sample::new(HOST, at_ms);
        match procfs::LoadAverage::current() {
            Ok(l) => {
                s.values.insert("load1", l.one as f64);
                s.values.insert("load5", l.five as f64);
                s.values.insert("load15", l.fifteen as f64);
            }
            Err(e) => s.partial.push(format!("load: {e}")),
        }
        match procfs::Meminfo::current() {
            Ok(m) => {
                s.values.insert("mem_total_bytes", m.mem_total as f64);
                if let Some(a) = m.mem_available {
                    s.values.insert("mem_available_bytes", a as f64);
                }
                s.values.insert("swap_total_bytes", m.swap_total as f64);
                s.values.insert(
                    "swap_used_bytes",
                    m.swap_total.saturating_sub(m.swap_free) as f64,
                );
            }
            Err(e) => s.partial.push(format!("memory: {e}")),
        }
        match std::fs::read_to_string("/proc/sys/fs/file-nr") {
            Ok(t) => {
                let n: Vec<f64> = t
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                if n.len() == 3 {
                    s.values.insert("file_handles", n[0] - n[1]);
                    s.values.insert("file_handles_max", n[2]);
                }
            }
            Err(e) => s.partial.push(format!("file handles: {e}")),
        }
        count_sockets(&mut s.values, table.all.iter(), range);
        s.values.insert(
            "ephemeral_range",
            (range.1 as f64 - range.0 as f64 + 1.0).max(0.0),
        );
        s
    }

    fn process(
        &mut self,
        name: &str,
        pids: &[i32],
        at_ms: u64,
        range: (u16, u16),
        own_ns: &str,
        tables: &mut HashMap<String, Option<Table>>,
    ) -> Sample {
        let mut s = Sample::new(name, at_ms);
        let mut rss = 0.0;
        let mut threads = 0.0;
        let mut fds = 0.0;
        let mut fd_limit: Option<f64> = None;
        let mut cpu_ticks = 0u64;
        let mut ctx = (0u64, 0u64);
        let mut started: Option<u64> = None;
        let mut alive = 0usize;
        let mut sockets: Vec<Socket> = Vec::new();
        let mut fd_error: Option<String> = None;
        for &pid in pids.iter().take(1000) {
            let Ok(p) = Process::new(pid) else { continue };
            let Ok(stat) = p.stat() else { continue };
            if stat.state == 'Z' {
                continue;
            }
            alive += 1;
            rss += stat.rss as f64 * self.page;
            threads += stat.num_threads as f64;
            cpu_ticks += stat.utime + stat.stime;
            started = Some(started.map_or(stat.starttime, |s: u64| s.min(stat.starttime)));
            if fd_limit.is_none() {
                if let Ok(l) = p.limits() {
                    if let procfs::process::LimitValue::Value(v) = l.max_open_files.soft_limit {
                        fd_limit = Some(v as f64);
                    }
                }
            }
            // Context switches are counted per thread.
            match p.tasks() {
                Ok(tasks) => {
                    for t in tasks.filter_map(Result::ok).take(4096) {
                        if let Ok(st) = t.status() {
                            ctx.0 += st.voluntary_ctxt_switches.unwrap_or(0);
                            ctx.1 += st.nonvoluntary_ctxt_switches.unwrap_or(0);
                        }
                    }
                }
                Err(e) => s.partial.push(format!("threads of {pid}: {e}")),
            }
            match p.fd() {
                Ok(iter) => {
                    let ns = netns(pid).unwrap_or_else(|| own_ns.to_string());
                    let table = tables.entry(ns.clone()).or_insert_with(|| {
                        if ns == own_ns {
                            None
                        } else {
                            Some(Table::read(
                                p.tcp().unwrap_or_default(),
                                p.tcp6().unwrap_or_default(),
                            ))
                        }
                    });
                    for fd in iter.filter_map(Result::ok) {
                        fds += 1.0;
                        if let (FDTarget::Socket(inode), Some(t)) = (&fd.target, table.as_ref()) {
                            if let Some(sock) = t.by_inode.get(inode) {
                                sockets.push(*sock);
                            }
                        }
                    }
                }
                Err(e) => {
                    fd_error.get_or_insert_with(|| format!("fds of {pid}: {e}"));
                }
            }
        }
        if alive == 0 {
            self.gone(name);
            s.unavailable = Some(format!(
                "no process running (pids {})",
                pids.iter()
                    .take(5)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            return s;
        }
        s.values.insert("up", 1.0);
        s.values.insert("processes", alive as f64);
        s.values.insert("rss_bytes", rss);
        s.values.insert("threads", threads);
        if let Some(l) = fd_limit {
            s.values.insert("fd_limit", l);
        }
        match fd_error {
            Some(why) if fds == 0.0 => s.partial.push(why),
            _ => {
                s.values.insert("fds", fds);
                count_sockets(&mut s.values, sockets.iter(), range);
            }
        }
        let prev = self.previous.get(name).copied();
        let restarts = self.restarts.entry(name.to_string()).or_insert(0);
        if let Some(p) = prev {
            if p.started.is_none() || p.started != started {
                *restarts += 1;
            }
            let secs = at_ms.saturating_sub(p.at_ms) as f64 / 1000.0;
            if secs > 0.0 && p.started == started {
                let cpu = cpu_ticks.saturating_sub(p.cpu_ticks) as f64 / self.ticks_per_s;
                s.values.insert("cpu_percent", 100.0 * cpu / secs);
                s.values.insert(
                    "ctx_voluntary_per_s",
                    ctx.0.saturating_sub(p.ctx_voluntary) as f64 / secs,
                );
                s.values.insert(
                    "ctx_involuntary_per_s",
                    ctx.1.saturating_sub(p.ctx_involuntary) as f64 / secs,
                );
            }
        }
        s.values.insert("restarts", *restarts as f64);
        // Cumulative since the process started, for Prometheus counters
        // (`rate()` there; the rates above are for gemba's own charts).
        s.values
            .insert("cpu_seconds", cpu_ticks as f64 / self.ticks_per_s);
        s.values.insert("ctx_voluntary", ctx.0 as f64);
        s.values.insert("ctx_involuntary", ctx.1 as f64);
        self.previous.insert(
            name.to_string(),
            Previous {
                at_ms,
                cpu_ticks,
                ctx_voluntary: ctx.0,
                ctx_involuntary: ctx.1,
                started,
            },
        );
        s
    }
}

/// The longest sample value a server accepts from an agent.
pub const MAX_SAMPLE_VALUE: usize = 2048;
/// The longest reason carried for an unavailable process.
const MAX_REASON: usize = 200;

/// A sample as it travels from an agent to the servers: `<at_ms> k=v k=v ...`, or `<at_ms> !
/// <reason>` for an unavailable process. Values are printed with as few
/// digits as read back exactly.
pub fn encode(s: &Sample) -> String {
    use std::fmt::Write;
    let mut out = s.at_ms.to_string();
    match &s.unavailable {
        Some(why) => {
            let why: String = why
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON)
                .collect();
            let _ = write!(out, " ! {why}");
        }
        None => {
            for (k, v) in &s.values {
                // Whole numbers print without a fraction.
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    let _ = write!(out, " {k}={}", *v as i64);
                } else if v.abs() >= 1e15 {
                    // Short enough for the decoder's 24 characters, whatever
                    // the magnitude (the events fuzz target found 1e250
                    // printed in full).
                    let _ = write!(out, " {k}={:e}", v);
                } else {
                    let _ = write!(out, " {k}={:.3}", v);
                }
            }
        }
    }
    out
}

/// A sample read back from what an agent sent: every field checked
/// (known metric names only, finite values, bounded sizes).
pub fn decode(name: &str, value: &str) -> Result<Sample, String> {
    if value.len() > MAX_SAMPLE_VALUE {
        return Err(format!("sample of {} bytes", value.len()));
    }
    if name != HOST && !gemba_core::ids::is_name(name) {
        return Err("not a process name".into());
    }
    let (at, rest) = value.split_once(' ').unwrap_or((value, ""));
    let at_ms: u64 = at.parse().map_err(|_| "no time".to_string())?;
    let mut s = Sample::new(name, at_ms);
    if let Some(why) = rest.strip_prefix("! ") {
        if why.chars().count() > MAX_REASON || why.chars().any(char::is_control) {
            return Err("bad reason".into());
        }
        s.unavailable = Some(why.to_string());
        return Ok(s);
    }
    for pair in rest.split(' ').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or("not key=value")?;
        let list = if name == HOST {
            HOST_METRICS
        } else {
            PROCESS_METRICS
        };
        let metric = list.iter().find(|m| **m == k).ok_or_else(|| {
            format!(
                "unknown metric {:?}",
                k.chars().take(40).collect::<String>()
            )
        })?;
        if v.len() > 24 {
            return Err("value too long".into());
        }
        let n: f64 = v.parse().map_err(|_| "not a number".to_string())?;
        if !n.is_finite() {
            return Err("not a finite number".into());
        }
        if s.values.insert(metric, n).is_some() {
            return Err(format!("{k} twice"));
        }
    }
    Ok(s)
}
