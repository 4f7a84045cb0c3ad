//! gemba's benchmarks. Each prints a table; the figures go into
//! BENCHMARKS.md with the command that produced them.
//!
//! - `grid`: N real `gemba run` processes on 127.0.8.x (N = 5, 20, 50 by
//!   default): time to a full green graph on every node, time until every
//!   node shows a black-holed link down (nftables drop rule on loopback;
//!   needs root), time until every survivor marks a SIGKILLed node down,
//!   per-node RSS, CPU and gossip bytes per second in steady state.
//! - `grid-sites`: 100 real `gemba run` processes on loopback in 10 sites
//!   (sites topology): wall time until every node sees its site and every
//!   site's summary green, CPU, RSS and gossip bytes per node.
//! - `sim`: an in-process grid of 10,000 nodes in 100 sites (sites
//!   topology: site clusters and a backbone of representatives) over the
//!   in-memory network, in virtual time: convergence, a black hole between
//!   sites, a kill, gossip state and bytes per node, peak RSS. With
//!   `--full-sites K`, only K sites have all their nodes; the others run
//!   their representatives alone.
//! - `console`: one console page rendered for N nodes, every pair probed.
//! - `identity`: signing and verifying published gossip values.
//! - `ingest`: Puppet and Chef reports per second into a server over HTTP.
//! - `market`: the morning market over 10,000 nodes × 48 runs/day × 7 days.
//! - `sampling`, `series`, `logs`, `charts`: the learn stage (learn.rs).

/// mimalloc instead of glibc's malloc: parsing reports allocates a value
/// per YAML or JSON node, and glibc's allocator took about a third of the
/// parse time in profiles (BENCHMARKS.md, report ingestion).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod console;
mod escalator;
mod grid;
mod grid_sites;
mod identity;
mod ingest;
mod learn;
mod market;
mod sim;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    match args.first().map(String::as_str) {
        Some("grid") => {
            let sizes: Vec<usize> = flag("--sizes")
                .unwrap_or_else(|| "5,20,50".into())
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<_, _>>()?;
            let bin = flag("--gemba").unwrap_or_else(|| "target/release/gemba".into());
            grid::run(&bin, &sizes)
        }
        Some("console") => {
            let sizes: Vec<usize> = flag("--sizes")
                .unwrap_or_else(|| "50,100,300".into())
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<_, _>>()?;
            let rounds = flag("--rounds")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(5);
            console::run(&sizes, rounds)
        }
        Some("identity") => {
            let ops = flag("--ops")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(20_000);
            identity::run(ops)
        }
        Some("planner") => {
            let nodes = flag("--nodes")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1000);
            let rounds = flag("--rounds")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(2000);
            escalator::planner(nodes, rounds)
        }
        Some("plugins") => {
            let runs = flag("--runs")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(3000);
            let conc = flag("--concurrency")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(32);
            escalator::plugins(runs, conc)
        }
        Some("reaction") => {
            let rounds = flag("--rounds")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(5);
            let bin = flag("--gemba").unwrap_or_else(|| "target/release/gemba".into());
            escalator::reaction(&bin, rounds)
        }
        Some("ingest") => {
            let count = flag("--reports")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(20_000);
            let clients = flag("--clients")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(4);
            let bin = flag("--gemba").unwrap_or_else(|| "target/release/gemba".into());
            let fixtures = flag("--fixtures").unwrap_or_else(|| "../shared/fixtures".into());
            let fixtures = std::path::Path::new(&fixtures);
            if args.iter().any(|a| a == "--stages") {
                return ingest::stages(fixtures, count);
            }
            let postgres = args.iter().any(|a| a == "--postgres");
            ingest::run(&bin, fixtures, count, clients, postgres)
        }
        Some("market") => {
            let nodes = flag("--nodes")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000);
            let per_day = flag("--per-day")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(48);
            let days = flag("--days").map(|s| s.parse()).transpose()?.unwrap_or(7);
            let postgres = args.iter().any(|a| a == "--postgres");
            market::run_bench(nodes, per_day, days, postgres)
        }
        Some("sampling") => {
            let n = flag("--processes")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(50);
            let samples = flag("--samples")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(30);
            learn::sampling(n, samples)
        }
        Some("series") => {
            let points = flag("--points")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(2_000_000);
            let batch = flag("--batch")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000);
            let series = flag("--series")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(20);
            let days = flag("--days").map(|s| s.parse()).transpose()?.unwrap_or(40);
            learn::series(points, batch, series, days)
        }
        Some("logs") => {
            let files = flag("--files")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(16);
            let lines = flag("--lines-per-s")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(200);
            let seconds = flag("--seconds")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(60);
            learn::logs(files, lines, seconds)
        }
        Some("charts") => {
            let rounds = flag("--rounds")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(20);
            learn::charts(rounds)
        }
        Some("grid-sites") => {
            let nodes = flag("--nodes")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(100);
            let sites = flag("--sites")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10);
            let bin = flag("--gemba").unwrap_or_else(|| "target/release/gemba".into());
            grid_sites::run(&bin, nodes, sites)
        }
        Some("sim") => {
            let nodes = flag("--nodes")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(10_000);
            let sites = flag("--sites")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(100);
            let reps = flag("--representatives")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(3);
            let gossip = flag("--gossip-ms")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1000);
            let backbone_gossip = flag("--backbone-gossip-ms")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1000);
            let full = flag("--full-sites")
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(sites);
            sim::run(
                nodes,
                sites,
                reps,
                std::time::Duration::from_millis(gossip),
                std::time::Duration::from_millis(backbone_gossip),
                full,
            )
        }
        _ => {
            eprintln!("usage: gemba-bench grid [--sizes 5,20,50] [--gemba target/release/gemba]\n       gemba-bench grid-sites [--nodes 100] [--sites 10] [--gemba target/release/gemba]\n       gemba-bench sim [--nodes 10000] [--sites 100] [--representatives 3] [--gossip-ms 1000] [--backbone-gossip-ms 1000] [--full-sites 100]\n       gemba-bench console [--sizes 50,100,300] [--rounds 5]\n       gemba-bench identity [--ops 20000]\n       gemba-bench planner [--nodes 1000] [--rounds 2000]\n       gemba-bench plugins [--runs 3000] [--concurrency 32]\n       gemba-bench reaction [--rounds 5] [--gemba target/release/gemba]   (needs monit)\n       gemba-bench ingest [--reports 20000] [--clients 4] [--gemba target/release/gemba] [--fixtures ../shared/fixtures] [--stages] [--postgres]\n       gemba-bench market [--nodes 10000] [--per-day 48] [--days 7] [--postgres]\n       gemba-bench sampling [--processes 50] [--samples 30]\n       gemba-bench series [--points 2000000] [--batch 10000] [--series 20] [--days 40]\n       gemba-bench logs [--files 16] [--lines-per-s 200] [--seconds 60]\n       gemba-bench charts [--rounds 20]");
            std::process::exit(2);
        }
    }
}
