//! `gemba`: parse the command line, start tracing, run the command, pick the
//! exit code (0 ok, 1 failure, 2 usage, 64 bad configuration).

mod cli;
mod demo;
mod graph_cmd;
mod node;

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
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Config { command } => match command {
            ConfigCommand::Example => {
                print!("{}", gemba_core::example::example_toml());
                Ok(())
            }
            ConfigCommand::Check(args) => match args.load_config() {
                Ok(c) => {
                    println!(
                        "configuration is valid: node {} in site {}, mesh on {}, http on {}",
                        c.node.id, c.node.site, c.mesh.listen, c.http.listen
                    );
                    Ok(())
                }
                Err(e) => {
                    eprintln!("gemba: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            },
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
