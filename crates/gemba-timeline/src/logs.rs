//! Log excerpts: the newest lines of the log files a `[[process]]` names,
//! kept by every agent in memory, so that the lines around an event or an
//! escalation can be shown beside its chart and sent with its notice.
//!
//! This is not a log system: nothing is indexed or stored. Each file keeps
//! its newest `[metrics] log_lines` lines (500 by default), each cut at
//! [`LINE_BYTES`]. The agent polls the files every second, as `tail -F`
//! does: it follows a file by name, reads what a rotated file still held
//! before it opens the new one, and starts over when a file is truncated.
//! A line is stamped with the time gemba read it (within the poll of when
//! it was written); the lines a file already held when gemba first opened
//! it (its last [`FIRST_READ`] bytes) carry the file's modification time.
//! A file that cannot be read shows as unavailable, with the reason.
//!
//! A server asks the agent of a node for lines over HTTP
//! (`GET /api/v1/logs` on the node's published address, with the server's
//! own API token); the answer is checked like any other input.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemba_core::metrics::MetricsConfig;
use gemba_exec::Clock;
use serde::{Deserialize, Serialize};

/// A longer line is cut here (on a character boundary) and ends with `…`.
pub const LINE_BYTES: usize = 1024;
/// What is read of a file that already has content when first opened.
pub const FIRST_READ: u64 = 64 * 1024;
/// The most read of one file in one poll; a file growing faster is
/// skipped ahead, and the skip is written as a line.
pub const READ_PER_POLL: u64 = 4 << 20;
/// How often files are polled.
pub const POLL: Duration = Duration::from_secs(1);
/// The most lines one answer carries per file.
pub const MAX_LIMIT: usize = 1000;
/// The most excerpts (files) one answer carries.
pub const MAX_EXCERPTS: usize = 256 * gemba_core::metrics::LOGS_PER_PROCESS;
/// The most bytes a server reads of an agent's answer.
const MAX_ANSWER: u64 = 8 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub text: String,
}

/// The lines of one file in a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excerpt {
    pub node: String,
    pub process: String,
    pub file: String,
    pub lines: Vec<LogLine>,
    /// Lines of the window left out (the oldest), over the limit.
    #[serde(default)]
    pub more: usize,
    /// Why the file cannot be read now (its kept lines are still given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Which lines: of one process (or all), in `[since_ms, until_ms]`, the
/// newest `limit` per file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogQuery {
    pub process: Option<String>,
    pub since_ms: u64,
    pub until_ms: u64,
    pub limit: usize,
}

impl LogQuery {
    /// The lines within `before` and `after` of `at_ms`.
    pub fn around(process: Option<String>, at_ms: u64, before: Duration, after: Duration) -> Self {
        LogQuery {
            process,
            since_ms: at_ms.saturating_sub(before.as_millis() as u64),
            until_ms: at_ms.saturating_add(after.as_millis() as u64),
            limit: 30,
        }
    }
}

struct Tail {
    process: String,
    path: String,
    keep: usize,
    lines: VecDeque<LogLine>,
    /// The open file, its (device, inode) and how far it was read.
    open: Option<(File, (u64, u64), u64)>,
    /// The start of a line whose end has not been written yet.
    partial: Vec<u8>,
    /// A line longer than the cut is being dropped up to its end.
    dropping: bool,
    unavailable: Option<String>,
}

impl Tail {
    fn push(&mut self, at_ms: u64, raw: &[u8]) {
        let text = clean(raw);
        self.lines.push_back(LogLine { at_ms, text });
        while self.lines.len() > self.keep {
            self.lines.pop_front();
        }
    }

    /// Splits `bytes` into lines; the unfinished end waits for the next
    /// read. A line is cut at [`LINE_BYTES`] and its rest dropped.
    fn feed(&mut self, at_ms: u64, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = (&rest[..i], &rest[i + 1..]);
            if self.dropping {
                self.dropping = false;
            } else if self.partial.is_empty() {
                self.push(at_ms, line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(&line[..line.len().min(LINE_BYTES + 4 - whole.len())]);
                self.push(at_ms, &whole);
            }
            rest = after;
        }
        if self.dropping || rest.is_empty() {
            return;
        }
        let room = (LINE_BYTES + 4).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
        if self.partial.len() > LINE_BYTES {
            // Longer than any kept line: keep its start now, drop the rest.
            let start = std::mem::take(&mut self.partial);
            self.push(at_ms, &start);
            self.dropping = true;
        }
    }

    fn reason(e: &std::io::Error) -> String {
        match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".into(),
            std::io::ErrorKind::PermissionDenied => "permission denied".into(),
            _ => e.to_string(),
        }
    }

    /// Reads what was appended since the last poll.
    fn poll(&mut self, now_ms: u64) {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                // Rotated away and not recreated yet: finish the old file.
                self.drain_open(now_ms);
                self.unavailable = Some(Self::reason(&e));
                return;
            }
        };
        if !meta.is_file() {
            self.unavailable = Some("not a regular file".into());
            self.open = None;
            return;
        }
        let id = (meta.dev(), meta.ino());
        if self.open.as_ref().is_some_and(|(_, held, _)| *held != id) {
            // Rotated: read what the old file still held, then the new one
            // from its start.
            self.drain_open(now_ms);
            self.open = None;
            self.partial.clear();
            self.dropping = false;
            match File::open(&self.path) {
                Ok(f) => self.open = Some((f, id, 0)),
                Err(e) => {
                    self.unavailable = Some(Self::reason(&e));
                    return;
                }
            }
        }
        if self.open.is_none() {
            let f = match File::open(&self.path) {
                Ok(f) => f,
                Err(e) => {
                    self.unavailable = Some(Self::reason(&e));
                    return;
                }
            };
            // First sight: the file's last lines, stamped with its mtime.
            let start = meta.len().saturating_sub(FIRST_READ);
            self.open = Some((f, id, start));
            let mtime_ms = (meta.mtime().max(0) as u64) * 1000;
            self.dropping = start > 0;
            self.read(mtime_ms.min(now_ms), meta.len());
        } else {
            self.read(now_ms, meta.len());
        }
        if self.unavailable.is_some() && self.open.is_some() {
            self.unavailable = None;
        }
    }

    fn drain_open(&mut self, now_ms: u64) {
        if let Some((f, _, _)) = &self.open {
            if let Ok(m) = f.metadata() {
                self.read(now_ms, m.len());
            }
        }
    }

    /// Reads the open file from where it was left up to `len`.
    fn read(&mut self, at_ms: u64, len: u64) {
        let Some((f, _, offset)) = self.open.as_mut() else {
            return;
        };
        if len < *offset {
            // Truncated (copytruncate rotation): from the start again.
            *offset = 0;
            self.partial.clear();
            self.dropping = false;
        }
        let mut from = *offset;
        let skipped = len.saturating_sub(from).saturating_sub(READ_PER_POLL);
        if skipped > 0 {
            from += skipped;
        }
        if from == len {
            return;
        }
        let mut buf = Vec::with_capacity((len - from) as usize);
        let read = f
            .seek(SeekFrom::Start(from))
            .and_then(|_| f.by_ref().take(len - from).read_to_end(&mut buf));
        match read {
            Ok(n) => *offset = from + n as u64,
            Err(e) => {
                self.unavailable = Some(Self::reason(&e));
                self.open = None;
                return;
            }
        }
        if skipped > 0 {
            self.partial.clear();
            self.push(
                at_ms,
                format!(
                    "[gemba: {skipped} bytes not read: the file grew faster than they are kept]"
                )
                .as_bytes(),
            );
            self.dropping = true;
        }
        self.feed(at_ms, &buf);
    }
}

/// A line as shown: UTF-8 (invalid bytes replaced), no trailing `\r`, no
/// control characters but tab (a terminal escape in a log must not reach
/// a reader's terminal or page), at most [`LINE_BYTES`] bytes.
fn clean(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let cut = raw.len() > LINE_BYTES;
    let text = String::from_utf8_lossy(&raw[..raw.len().min(LINE_BYTES)]);
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if cut {
        // The cut may have split a character: from_utf8_lossy made it a
        // replacement character, which is dropped.
        if out.ends_with('\u{fffd}') {
            out.pop();
        }
        out.push('…');
    }
    out
}

/// The newest lines of every `[[process]]` log file on this node.
#[derive(Clone)]
pub struct LogBook {
    node: String,
    tails: Arc<Vec<Mutex<Tail>>>,
}

impl LogBook {
    pub fn new(node: &str, config: &MetricsConfig) -> LogBook {
        let tails = config
            .processes
            .iter()
            .flat_map(|p| {
                p.logs.iter().map(|f| {
                    Mutex::new(Tail {
                        process: p.name.clone(),
                        path: f.clone(),
                        keep: config.log_lines as usize,
                        lines: VecDeque::new(),
                        open: None,
                        partial: Vec::new(),
                        dropping: false,
                        unavailable: None,
                    })
                })
            })
            .collect();
        LogBook {
            node: node.to_string(),
            tails: Arc::new(tails),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tails.is_empty()
    }

    /// Reads every file once (blocking: call from a blocking thread).
    pub fn poll(&self, now_ms: u64) {
        for t in self.tails.iter() {
            if let Ok(mut t) = t.lock() {
                t.poll(now_ms);
            }
        }
    }

    /// Polls every [`POLL`] until dropped.
    pub async fn run(self, clock: Clock) {
        if self.is_empty() {
            return;
        }
        let mut every = tokio::time::interval(POLL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let book = self.clone();
            let now = clock.now_ms();
            if tokio::task::spawn_blocking(move || book.poll(now))
                .await
                .is_err()
            {
                tracing::error!("reading log files failed; log excerpts stop on this node");
                return;
            }
        }
    }

    /// The lines `q` asks for, file by file.
    pub fn excerpts(&self, q: &LogQuery) -> Vec<Excerpt> {
        let limit = q.limit.clamp(1, MAX_LIMIT);
        self.tails
            .iter()
            .filter_map(|t| t.lock().ok())
            .filter(|t| q.process.as_ref().is_none_or(|p| *p == t.process))
            .map(|t| {
                let inside: Vec<&LogLine> = t
                    .lines
                    .iter()
                    .filter(|l| l.at_ms >= q.since_ms && l.at_ms <= q.until_ms)
                    .collect();
                let more = inside.len().saturating_sub(limit);
                Excerpt {
                    node: self.node.clone(),
                    process: t.process.clone(),
                    file: t.path.clone(),
                    lines: inside[more..].iter().map(|l| (*l).clone()).collect(),
                    more,
                    unavailable: t.unavailable.clone(),
                }
            })
            .collect()
    }
}

/// Finds the HTTP address of a node's agent (from gossip), or says why
/// it may not be asked.
pub type Resolve = Arc<
    dyn Fn(
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<SocketAddr, String>> + Send>,
        > + Send
        + Sync,
>;

/// Where excerpts come from: this node's own book, or another node's
/// agent over HTTP.
#[derive(Clone)]
pub struct LogSource {
    node: String,
    local: Option<LogBook>,
    token: Option<String>,
    resolve: Resolve,
}

impl LogSource {
    pub fn new(
        node: &str,
        local: Option<LogBook>,
        token: Option<String>,
        resolve: Resolve,
    ) -> Self {
        LogSource {
            node: node.to_string(),
            local,
            token,
            resolve,
        }
    }

    /// The excerpts of `node`, or why there are none.
    pub async fn excerpts(&self, node: &str, q: &LogQuery) -> Result<Vec<Excerpt>, String> {
        if node == self.node {
            return Ok(self
                .local
                .as_ref()
                .map(|b| b.excerpts(q))
                .unwrap_or_default());
        }
        if !gemba_core::ids::is_name(node) {
            return Err("not a node name".into());
        }
        let addr = (self.resolve)(node.to_string()).await?;
        let (node, q, token) = (node.to_string(), q.clone(), self.token.clone());
        tokio::task::spawn_blocking(move || fetch(addr, token.as_deref(), &node, &q))
            .await
            .map_err(|e| e.to_string())?
    }

    /// The excerpts of several nodes, fetched at once; each with its own
    /// outcome, in the order given.
    pub async fn of_nodes(
        &self,
        nodes: &[String],
        q: &LogQuery,
    ) -> Vec<(String, Result<Vec<Excerpt>, String>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, n) in nodes.iter().take(16).enumerate() {
            let (me, n, q) = (self.clone(), n.clone(), q.clone());
            set.spawn(async move {
                let r = me.excerpts(&n, &q).await;
                (i, n, r)
            });
        }
        let mut out = Vec::new();
        while let Some(done) = set.join_next().await {
            if let Ok(r) = done {
                out.push(r);
            }
        }
        out.sort_by_key(|(i, _, _)| *i);
        out.into_iter().map(|(_, n, r)| (n, r)).collect()
    }
}

/// Excerpts as plain text (for mail and commands): a heading per file,
/// then its lines with their times; files without lines are left out.
pub fn text(excerpts: &[Excerpt]) -> String {
    let mut out = String::new();
    for e in excerpts.iter().filter(|e| !e.lines.is_empty()) {
        out.push_str(&format!(
            "log lines ({}, {} on {}):\n",
            e.process, e.file, e.node
        ));
        for l in &e.lines {
            out.push_str(&format!(
                "  {}  {}\n",
                crate::event::format_ms(l.at_ms),
                l.text
            ));
        }
    }
    out
}

/// The query string of a [`LogQuery`] (`GET /api/v1/logs?...`).
pub fn query_string(q: &LogQuery) -> String {
    // Unix seconds, as every gemba query takes them; the answer is cut to
    // the exact window when it is checked.
    let mut s = format!(
        "since={}&until={}&limit={}",
        q.since_ms / 1000,
        q.until_ms / 1000,
        q.limit
    );
    if let Some(p) = &q.process {
        s.push_str(&format!("&process={p}"));
    }
    s
}

/// Asks the agent at `addr` (node `node`) for its lines; the answer is
/// checked: sizes, names, the node it is about.
pub fn fetch(
    addr: SocketAddr,
    token: Option<&str>,
    node: &str,
    q: &LogQuery,
) -> Result<Vec<Excerpt>, String> {
    let url = format!("http://{addr}/api/v1/logs?{}", query_string(q));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut req = agent.get(&url).header("accept", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut answer = req
        .call()
        .map_err(|e| format!("cannot reach {node}: {e}"))?;
    let status = answer.status();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_vec()
        .map_err(|e| format!("{node}: reading the answer: {e}"))?;
    if !status.is_success() {
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        let why: String = why.chars().take(200).collect();
        return Err(format!("{node} answered HTTP {}: {why}", status.as_u16()));
    }
    checked(node, q, &body).map_err(|e| format!("{node} answered what an agent does not: {e}"))
}

/// An agent's answer, believed only within the bounds gemba sets.
pub fn checked(node: &str, q: &LogQuery, body: &[u8]) -> Result<Vec<Excerpt>, String> {
    #[derive(Deserialize)]
    struct Answer {
        excerpts: Vec<Excerpt>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if a.excerpts.len() > MAX_EXCERPTS {
        return Err(format!("{} excerpts", a.excerpts.len()));
    }
    let limit = q.limit.clamp(1, MAX_LIMIT);
    let mut out = Vec::with_capacity(a.excerpts.len());
    for mut e in a.excerpts {
        if !gemba_core::ids::is_name(&e.process)
            || q.process.as_ref().is_some_and(|p| *p != e.process)
        {
            return Err("an excerpt of a process not asked for".into());
        }
        if e.file.len() > 4096 || !e.file.starts_with('/') {
            return Err("a file that is not an absolute path".into());
        }
        if e.lines.len() > limit {
            return Err(format!("{} lines; {limit} were asked for", e.lines.len()));
        }
        e.node = node.to_string();
        e.file = clean(e.file.as_bytes());
        e.unavailable = e.unavailable.map(|u| clean(u.as_bytes()));
        for l in &mut e.lines {
            l.text = clean(l.text.as_bytes());
        }
        e.lines
            .retain(|l| l.at_ms >= q.since_ms && l.at_ms <= q.until_ms);
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gemba_core::metrics::{ProcessDef, Selector};
    use std::io::Write;

    fn book(dir: &std::path::Path, keep: u32) -> (LogBook, std::path::PathBuf) {
        let file = dir.join("shop.log");
        let config = MetricsConfig {
            log_lines: keep,
            processes: vec![ProcessDef {
                name: "shop".into(),
                selector: Selector::Program("shop".into()),
                logs: vec![file.display().to_string()],
            }],
            ..MetricsConfig::default()
        };
        (LogBook::new("web-1", &config), file)
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn all(b: &LogBook) -> Excerpt {
        b.excerpts(&LogQuery {
            process: None,
            since_ms: 0,
            until_ms: u64::MAX,
            limit: MAX_LIMIT,
        })
        .remove(0)
    }

    fn texts(e: &Excerpt) -> Vec<&str> {
        e.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_are_kept_newest_last_bounded_and_stamped_when_read() {
        let dir = tempdir();
        let (b, file) = book(&dir, 3);
        b.poll(1_000);
        assert_eq!(all(&b).unavailable.as_deref(), Some("no such file"));
        append(&file, "one\ntwo\n");
        b.poll(2_000);
        let e = all(&b);
        assert_eq!(e.unavailable, None, "readable again");
        assert_eq!(texts(&e), ["one", "two"]);
        append(&file, "three\nfour\nfi");
        b.poll(3_000);
        append(&file, "ve\n");
        b.poll(4_000);
        let e = all(&b);
        assert_eq!(
            texts(&e),
            ["three", "four", "five"],
            "3 kept, the half line joined"
        );
        assert_eq!(
            e.lines.iter().map(|l| l.at_ms).collect::<Vec<_>>(),
            [3_000, 3_000, 4_000]
        );
        let window = b.excerpts(&LogQuery {
            process: Some("shop".into()),
            since_ms: 3_500,
            until_ms: 5_000,
            limit: 10,
        });
        assert_eq!(texts(&window[0]), ["five"]);
        let limited = b.excerpts(&LogQuery {
            process: None,
            since_ms: 0,
            until_ms: 5_000,
            limit: 1,
        });
        assert_eq!((texts(&limited[0]), limited[0].more), (vec!["five"], 2));
        assert!(b
            .excerpts(&LogQuery {
                process: Some("other".into()),
                since_ms: 0,
                until_ms: 5_000,
                limit: 1
            })
            .is_empty());
    }

    #[test]
    fn rotation_and_truncation_lose_nothing_written() {
        let dir = tempdir();
        let (b, file) = book(&dir, 100);
        append(&file, "before\n");
        b.poll(1_000);
        append(&file, "last of the old file\n");
        std::fs::rename(&file, dir.join("shop.log.1")).unwrap();
        append(&file, "first of the new file\n");
        b.poll(2_000);
        assert_eq!(
            texts(&all(&b)),
            ["before", "last of the old file", "first of the new file"]
        );
        // copytruncate: the same file, emptied and written again.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .unwrap();
        append(&file, "after truncation\n");
        b.poll(3_000);
        assert_eq!(texts(&all(&b)).last(), Some(&"after truncation"));
    }

    #[test]
    fn a_big_file_is_read_from_its_tail_and_lines_are_cut_and_cleaned() {
        let dir = tempdir();
        let (b, file) = book(&dir, 10_000);
        let old: String = (0..20_000).map(|i| format!("old line {i}\n")).collect();
        append(&file, &old);
        b.poll(4_000_000_000_000);
        let e = all(&b);
        assert!(e.lines.len() < 10_000, "only the tail: {}", e.lines.len());
        assert_eq!(e.lines.last().unwrap().text, "old line 19999");
        assert!(
            e.lines[0].text.starts_with("old line "),
            "no half line first"
        );
        assert!(
            e.lines[0].at_ms < 4_000_000_000_000,
            "stamped with the mtime"
        );
        let long = "x".repeat(5000);
        append(
            &file,
            &format!("{long}\n\u{1b}[31mred\u{1b}[0m\tok\r\nnext\n"),
        );
        b.poll(4_000_000_000_001);
        let e = all(&b);
        let n = e.lines.len();
        assert_eq!(e.lines[n - 3].text.len(), LINE_BYTES + '…'.len_utf8());
        assert_eq!(e.lines[n - 2].text, "\u{fffd}[31mred\u{fffd}[0m\tok");
        assert_eq!(e.lines[n - 1].text, "next");
    }

    #[test]
    fn a_file_growing_faster_than_a_poll_reads_is_skipped_ahead_and_says_so() {
        let dir = tempdir();
        let (b, file) = book(&dir, 100_000);
        append(&file, "start\n");
        b.poll(1);
        let big = "y".repeat(100) + "\n";
        append(
            &file,
            &big.repeat((READ_PER_POLL as usize / big.len()) + 1000),
        );
        append(&file, "end\n");
        b.poll(2);
        let kept = b.tails[0].lock().unwrap().lines.clone();
        assert_eq!(kept[0].text, "start");
        assert!(
            kept[1].text.contains("bytes not read"),
            "the skip is a line: {:?}",
            kept[1].text
        );
        assert!(kept.len() < 50_000, "at most a poll's bytes read");
        assert_eq!(kept.back().unwrap().text, "end");
    }

    #[test]
    fn an_answer_is_believed_only_within_bounds() {
        let q = LogQuery {
            process: Some("shop".into()),
            since_ms: 10,
            until_ms: 20,
            limit: 2,
        };
        let ok = br#"{"excerpts":[{"node":"elsewhere","process":"shop","file":"/var/log/shop.log","lines":[{"at_ms":5,"text":"early"},{"at_ms":15,"text":"in \u001b[2J"}]}]}"#;
        let e = checked("web-1", &q, ok).unwrap();
        assert_eq!(e[0].node, "web-1", "the node is the one asked");
        assert_eq!(
            texts(&e[0]),
            ["in \u{fffd}[2J"],
            "outside the window and escapes dropped"
        );
        for bad in [
            &br#"{"excerpts":[{"node":"x","process":"db","file":"/a","lines":[]}]}"#[..],
            br#"{"excerpts":[{"node":"x","process":"shop","file":"a","lines":[]}]}"#,
            br#"{"excerpts":[{"node":"x","process":"shop","file":"/a","lines":[{"at_ms":1,"text":"a"},{"at_ms":1,"text":"a"},{"at_ms":1,"text":"a"}]}]}"#,
            b"[]",
        ] {
            assert!(checked("web-1", &q, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn tempdir() -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "gemba-logs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
