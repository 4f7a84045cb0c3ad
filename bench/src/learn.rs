//! The learn stage's benchmarks.
//!
//! - `sampling`: the agent's sampler over N real processes (children of
//!   this program, each holding a few files and TCP connections), one
//!   sample of all of them after another: wall and CPU time per sample,
//!   and the share of one core that costs at a 10 s interval.
//! - `series`: raw points written into SQLite in batches, as the server's
//!   writer does (points/s); then a year of retention policy run over a
//!   generated history (roll-ups and pruning every simulated hour) and
//!   the bytes per stored point and per series once it stops growing.
//! - `logs`: the agent's log excerpts: F files growing by L lines a
//!   second each, polled once a simulated second: time per poll, the
//!   share of one core, the bytes kept, and the time to answer a query.
//! - `charts`: 7 days of 1-minute data, 10 series, 50 markers to SVG and
//!   to PNG (`GEMBA_BENCH_CHART_PNG=file` keeps the picture).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gemba_core::metrics::{ProcessDef, Selector};
use gemba_store::{SeriesKey, SeriesStore, SqliteStore};
use gemba_timeline::chart::{Chart, Line, Marker};
use gemba_timeline::sample::Sampler;
use gemba_timeline::series::{roll_once, Retention};

fn cpu_of_this_thread() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

const CHILD: &str = r#"
import socket, sys, time
port = int(sys.argv[1])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
files = [open("/dev/null") for _ in range(20)]
print("ready", flush=True)
time.sleep(3600)
"#;

pub fn sampling(processes: usize, samples: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("gemba-bench-sampling-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    let mut children = Vec::new();
    let mut defs = Vec::new();
    for i in 0..processes {
        let mut c = std::process::Command::new("python3")
            .args(["-c", CHILD, &port.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line)?;
        let pidfile = dir.join(format!("p{i}.pid"));
        std::fs::write(&pidfile, c.id().to_string())?;
        defs.push(ProcessDef {
            name: format!("p{i}"),
            selector: Selector::Pidfile(pidfile.display().to_string()),
            logs: Vec::new(),
        });
        children.push(c);
    }
    let mut sampler = Sampler::new(&defs, processes);
    // One to warm caches and set the rate baselines.
    let first = sampler.sample(0);
    let unavailable = first.iter().filter(|s| s.unavailable.is_some()).count();
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for i in 0..samples {
        let (t0, c0) = (Instant::now(), cpu_of_this_thread());
        let s = sampler.sample((i as u64 + 1) * 10_000);
        wall.push(t0.elapsed().as_secs_f64() * 1000.0);
        cpu.push((cpu_of_this_thread() - c0).as_secs_f64() * 1000.0);
        assert_eq!(s.len(), processes + 1);
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (w, c) = (median(&mut wall), median(&mut cpu));
    println!("processes sampled        {processes} (+ the host), {unavailable} unavailable");
    println!("samples                  {samples}");
    println!("wall per sample          {w:.2} ms (median)");
    println!("CPU per sample           {c:.2} ms (median)");
    println!(
        "CPU per process          {:.1} µs",
        c * 1000.0 / processes as f64
    );
    println!(
        "share of one core @ 10s  {:.3} %  (target <= 1 %)",
        c / 10_000.0 * 100.0
    );
    Ok(())
}

pub fn series(points: usize, batch: usize, series_n: usize, days: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("gemba-bench-series-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // Writes: `points` raw points over 1,000 series, in batches.
        let path = dir.join("writes.db");
        let store = Arc::new(SqliteStore::open(&path)?);
        store.tune_for_series().await?;
        let keys: Vec<SeriesKey> = (0..1000)
            .map(|i| SeriesKey {
                node: format!("web-{}", i / 20),
                process: "shop".into(),
                metric: format!("m{}", i % 20),
            })
            .collect();
        let ids: Vec<i64> = store
            .series_ids(keys, 10_000)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let t0 = 1_795_000_000u64;
        let started = Instant::now();
        let mut written = 0usize;
        let mut step = 0u64;
        while written < points {
            let mut b = Vec::with_capacity(batch);
            while b.len() < batch {
                for id in &ids {
                    b.push((*id, t0 + step * 10, (step % 500) as f64));
                }
                step += 1;
            }
            written += b.len();
            store.write_points(b).await?;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "raw points written       {written} in batches of {batch} (whole rounds of 1,000 series)"
        );
        println!(
            "write rate (head)        {:.0} points/s  (target >= 200,000)",
            written as f64 / secs
        );
        // Compaction in 10-minute spans, as the server runs it.
        let started = Instant::now();
        let mut moved = 0;
        let mut until = t0 + 600;
        while until <= t0 + step * 10 + 600 {
            moved += store.compact(until).await?;
            until += 600;
        }
        let csecs = started.elapsed().as_secs_f64();
        println!(
            "compaction into raw      {moved} points, {:.0} points/s; write + compaction {:.0} points/s",
            moved as f64 / csecs,
            written as f64 / (secs + csecs)
        );
        drop(store);

        // Retention: series_n series every 10 s for `days` days, rolled and
        // pruned every simulated hour with the default tiers.
        let path = dir.join("retention.db");
        let store = Arc::new(SqliteStore::open(&path)?);
        store.tune_for_series().await?;
        let keys: Vec<SeriesKey> = (0..series_n)
            .map(|i| SeriesKey {
                node: format!("web-{i}"),
                process: "shop".into(),
                metric: "tcp_established".into(),
            })
            .collect();
        let ids: Vec<i64> = store
            .series_ids(keys, 10_000)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let retention = Retention::of(&Default::default());
        let mut now = t0;
        for _hour in 0..days * 24 {
            let mut b = Vec::with_capacity(ids.len() * 360);
            for i in 0..360u64 {
                for id in &ids {
                    b.push((*id, now + i * 10, (i % 60) as f64));
                }
            }
            store.write_points(b).await?;
            now += 3600;
            roll_once(&*store, retention, now).await?;
        }
        let counts = store.point_counts().await?;
        drop(store);
        let c = rusqlite_free_size(&path)?;
        let rows = counts.raw + counts.minute + counts.hour;
        println!(
            "history                  {series_n} series x {days} days every 10 s, default tiers (raw 2 d, 1 min 30 d, 1 h 365 d)"
        );
        println!(
            "rows kept                raw {} · minute {} · hour {}",
            counts.raw, counts.minute, counts.hour
        );
        println!("database after VACUUM    {:.1} MB", c as f64 / 1e6);
        println!("bytes per stored point   {:.1}", c as f64 / rows as f64);
        println!(
            "bytes per series         {:.0} kB (at {days} days; raw and minute tiers are full, the hour tier grows by 24 rows a day)",
            c as f64 / series_n as f64 / 1000.0
        );
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::Ok(())
    })
}

/// The file's size after VACUUM (free pages dropped).
fn rusqlite_free_size(path: &std::path::Path) -> anyhow::Result<u64> {
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.execute('VACUUM'); c.close()",
            &path.display().to_string(),
        ])
        .status()?;
    anyhow::ensure!(status.success(), "VACUUM failed");
    Ok(std::fs::metadata(path)?.len())
}

pub fn charts(rounds: usize) -> anyhow::Result<()> {
    let t0 = 1_795_000_000u64;
    let minutes = 7 * 24 * 60;
    let lines: Vec<Line> = (0..10)
        .map(|s| Line {
            label: format!("web-{s} shop"),
            points: (0..minutes)
                .map(|i| {
                    (
                        t0 + i * 60,
                        100.0
                            + s as f64 * 10.0
                            + ((i * 7 + s) % 97) as f64
                            + (i % 1440) as f64 / 20.0,
                    )
                })
                .collect(),
        })
        .collect();
    let markers: Vec<Marker> = (0..50)
        .map(|i| Marker {
            at_ms: (t0 + i * (minutes * 60 / 50)) * 1000,
            end_ms: if i % 5 == 0 {
                Some((t0 + i * (minutes * 60 / 50) + 1800) * 1000)
            } else {
                None
            },
            kind: ["deploy", "escalation", "git", "note"][i as usize % 4].into(),
            label: format!("deploy shop v2.3.{i} released"),
        })
        .collect();
    let chart = Chart {
        title: "tcp_established of shop · 7 days".into(),
        metric: "tcp_established".into(),
        since_ms: t0 * 1000,
        until_ms: (t0 + minutes * 60) * 1000,
        width: 900,
        height: 320,
        lines,
        markers,
    };
    let mut svg_ms = Vec::new();
    let mut png_ms = Vec::new();
    let mut size = (0, 0);
    for _ in 0..rounds {
        let t = Instant::now();
        let svg = chart.svg();
        svg_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let png = gemba_timeline::chart::svg_to_png(&svg).map_err(anyhow::Error::msg)?;
        png_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        size = (svg.len(), png.len());
        if let Ok(out) = std::env::var("GEMBA_BENCH_CHART_PNG") {
            std::fs::write(out, &png)?;
        }
    }
    let steps = gemba_timeline::chart::png_steps(&chart.svg()).map_err(anyhow::Error::msg)?;
    println!(
        "PNG steps                parse + text layout {:.1} ms · render {:.1} ms · encode {:.1} ms",
        steps[0].as_secs_f64() * 1000.0,
        steps[1].as_secs_f64() * 1000.0,
        steps[2].as_secs_f64() * 1000.0
    );
    // The PNG from scratch includes the SVG; say both.
    let (s, p) = (median(&mut svg_ms), median(&mut png_ms));
    println!("chart                    10 series x 10,080 points (7 days of 1-minute data), 50 markers, 900x320");
    println!(
        "to SVG                   {s:.2} ms (median of {rounds})  (target <= 50 ms), {} bytes",
        size.0
    );
    println!(
        "SVG to PNG               {p:.2} ms (median of {rounds}); data to PNG {:.2} ms  (target <= 200 ms), {} bytes",
        s + p,
        size.1
    );
    let _ = std::io::stdout().flush();
    Ok(())
}

pub fn logs(files: usize, lines_per_s: usize, seconds: usize) -> anyhow::Result<()> {
    use gemba_timeline::logs::{LogBook, LogQuery};
    let dir = std::env::temp_dir().join(format!("gemba-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let paths: Vec<std::path::PathBuf> =
        (0..files).map(|i| dir.join(format!("f{i}.log"))).collect();
    for p in &paths {
        std::fs::write(p, "")?;
    }
    let config = gemba_core::metrics::MetricsConfig {
        processes: paths
            .chunks(8)
            .enumerate()
            .map(|(i, chunk)| ProcessDef {
                name: format!("p{i}"),
                selector: Selector::Program(format!("p{i}")),
                logs: chunk.iter().map(|p| p.display().to_string()).collect(),
            })
            .collect(),
        ..Default::default()
    };
    let book = LogBook::new("bench", &config);
    book.poll(0);
    let mut handles: Vec<std::fs::File> = paths
        .iter()
        .map(|p| std::fs::OpenOptions::new().append(true).open(p))
        .collect::<Result<_, _>>()?;
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    let mut n = 0u64;
    for s in 0..seconds {
        for f in handles.iter_mut() {
            let mut chunk = String::with_capacity(lines_per_s * 130);
            for _ in 0..lines_per_s {
                n += 1;
                chunk.push_str(&format!(
                    "2026-11-23T10:00:00.000Z INFO request {n} served in 12 ms: GET /cart/items?page=3 200 user=u{n}\n"
                ));
            }
            f.write_all(chunk.as_bytes())?;
        }
        // Wall time: one thread reading from the page cache, and finer
        // than the CPU clock's ticks.
        let t0 = Instant::now();
        book.poll(1_000 + s as u64 * 1000);
        busy.push(t0.elapsed().as_secs_f64() * 1000.0);
        let t0 = Instant::now();
        book.poll(1_000 + s as u64 * 1000 + 500);
        idle.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let q = LogQuery {
        process: None,
        since_ms: 0,
        until_ms: u64::MAX,
        limit: 40,
    };
    let t0 = Instant::now();
    let rounds = 100;
    let mut kept = 0usize;
    for _ in 0..rounds {
        kept = book
            .excerpts(&LogQuery {
                limit: 1000,
                ..q.clone()
            })
            .iter()
            .map(|e| e.lines.iter().map(|l| l.text.len() + 8).sum::<usize>())
            .sum();
    }
    let query_ms = t0.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let t0 = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(book.excerpts(&q));
    }
    let page_ms = t0.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let _ = std::fs::remove_dir_all(&dir);
    let (b, i) = (median(&mut busy), median(&mut idle));
    println!("files                    {files}, {lines_per_s} lines/s each (~110 B a line), {seconds} polls");
    println!("time per poll, growing   {b:.3} ms (median, wall, one thread)");
    println!("time per poll, idle      {i:.3} ms (median)");
    println!("share of one core @ 1s   {:.2} %", b / 1000.0 * 100.0);
    println!(
        "kept (500 lines a file)  {:.1} KiB of text",
        kept as f64 / 1024.0
    );
    println!("query, every line        {query_ms:.3} ms");
    println!("query, 40 lines a file   {page_ms:.3} ms");
    Ok(())
}
