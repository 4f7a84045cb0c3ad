//! `gemba`: parse the command line, start tracing, run the command, pick the
//! exit code (0 ok, 1 failure, 2 usage, 64 bad configuration).

/// mimalloc instead of glibc's malloc: parsing reports allocates a value
/// per YAML or JSON node, and glibc's allocator took about a third of the
/// parse time in profiles (BENCHMARKS.md, report ingestion).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod check_once;
mod cli;
mod client;
mod converge_cmd;
mod demo;
mod demo_market;
mod demo_service;
mod event_cmd;
mod graph_cmd;
mod incident_cmd;
mod market_cmd;
mod node;
mod node_cmd;
mod postmortem_cmd;
mod repeats;
mod store_cmd;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, ConfigCommand};

/// Exit code for invalid configuration (EX_USAGE in sysexits.h).
const EXIT_CONFIG: u8 = 64;

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(repeats::Repeats::new(tracing_subscriber::fmt::format()))
        .init();
}

/// A command whose output goes to a pipe that closes early (`gemba
/// incident show 4 | head`) ends as other tools do: quietly, killed by
/// SIGPIPE (141 in a shell), instead of panicking on the failed write.
/// Not for the long-running commands (a node, the demo), which keep the
/// runtime's default of ignoring it.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called once at start, before any thread exists; only sets
    // the signal's disposition back to the kernel's default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Demo(_) | Command::DemoService(_)
    ) {
        end_quietly_on_a_closed_pipe();
    }
    // A node is a few light I/O tasks: one thread avoids the cross-thread
    // wake-ups that dominate its CPU time when a machine runs many nodes.
    // The demo runs many nodes in one process and uses every core.
    let runtime = |threads: bool| {
        let mut b = if threads {
            tokio::runtime::Builder::new_multi_thread()
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        b.enable_all().build().expect("tokio runtime")
    };
    let result = match cli.command {
        Command::Run(args) => {
            init_tracing("info");
            match args.load_config() {
                Ok(config) => runtime(false).block_on(node::run(config, args.config.is_none())),
                Err(e) => {
                    eprintln!("gemba: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        Command::Demo(args) => {
            init_tracing("warn");
            runtime(true).block_on(demo::run(args))
        }
        Command::Graph(args) => graph_cmd::run(&args),
        Command::Check(args) => {
            init_tracing("warn");
            return converge_cmd::check(&args);
        }
        Command::DemoService(args) => demo_service::run(&args),
        Command::Plan(args) => converge_cmd::plan(&args),
        Command::Simulate(args) => match converge_cmd::simulate(&args) {
            Err(e) if e.downcast_ref::<gemba_core::ConfigError>().is_some() => {
                eprintln!("gemba: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            other => other,
        },
        Command::Escalations(args) => converge_cmd::escalations(&args),
        Command::Approve(args) => converge_cmd::approve(&args),
        Command::Ack(args) => converge_cmd::ack(&args),
        Command::Import(args) => market_cmd::import(&args),
        Command::Problem { command } => market_cmd::problem(command),
        Command::Market(args) => market_cmd::market(&args),
        Command::Event { command } => event_cmd::event(command),
        Command::Chart(args) => event_cmd::chart(&args),
        Command::SendChart(args) => event_cmd::send_chart(&args),
        Command::Logs(args) => event_cmd::logs(&args),
        Command::Incident { command } => incident_cmd::run(command),
        Command::Postmortem { command } => postmortem_cmd::run(command),
        Command::Actions { command } => postmortem_cmd::actions(command),
        Command::Store { command } => store_cmd::run(command),
        Command::Config { command } => match command {
            ConfigCommand::Example => {
                print!("{}", gemba_core::example::example_toml());
                Ok(())
            }
            ConfigCommand::Check(args) => match args.load_config() {
                Ok(c) => {
                    println!(
                        "configuration is valid: node {} in site {}, mesh on {}, http on {}; {} check(s), {} level(s), escalator mode {}",
                        c.node.id,
                        c.node.site,
                        c.mesh.listen,
                        c.http.listen,
                        c.policy.checks.len(),
                        c.policy.levels.len(),
                        match c.policy.escalator.mode {
                            gemba_core::Mode::Act => "act",
                            gemba_core::Mode::Plan => "plan",
                        }
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("gemba: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
        },
        Command::Node { command } => match node_cmd::run(command) {
            Err(node_cmd::Failure::Config(e)) => {
                eprintln!("gemba: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(node_cmd::Failure::Other(e)) => Err(e),
            Ok(()) => Ok(()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gemba: {e:#}");
            ExitCode::FAILURE
        }
    }
}
