//! `gemba store migrate` and `gemba store copy`: bring a store to this
//! gemba's schema without starting a server, and move an installation from
//! its SQLite file into PostgreSQL.

use anyhow::{bail, Context};
use gemba_core::{Config, Overrides, StoreLocation};

use crate::cli::{StoreArgs, StoreCommand};

pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match command {
        StoreCommand::Migrate(args) => rt.block_on(migrate(&args)),
        StoreCommand::Check { store, full } => rt.block_on(check(&store, full)),
        StoreCommand::Copy {
            from,
            to,
            password_file,
        } => rt.block_on(copy(&from, &to, password_file)),
    }
}

/// Where `--url` (or the config's `[store]`) says the store is.
fn location(args: &StoreArgs) -> anyhow::Result<StoreLocation> {
    let mut location = match &args.url {
        Some(url) => StoreLocation::parse(url).map_err(|e| anyhow::anyhow!("--url: {e}"))?,
        None => {
            let overrides = Overrides {
                data_dir: args.data_dir.clone(),
                ..Default::default()
            };
            Config::load(args.config.as_deref(), &overrides)?
                .store
                .location
        }
    };
    if let (Some(file), StoreLocation::Postgres { password_file, .. }) =
        (&args.password_file, &mut location)
    {
        *password_file = Some(file.clone());
    }
    Ok(location)
}

async fn migrate(args: &StoreArgs) -> anyhow::Result<()> {
    let location = location(args)?;
    if let StoreLocation::Sqlite(path) = &location {
        // A typo should not leave a new empty store behind.
        if !path.is_file() {
            bail!(
                "no store at {} (a server creates it at its first start)",
                path.display()
            );
        }
    }
    let store = gemba_store::open_any(&location)
        .await
        .with_context(|| format!("store {location}"))?;
    let stages: Vec<String> = store
        .schema()
        .await?
        .iter()
        .map(|(stage, v)| format!("{stage} {v}"))
        .collect();
    println!(
        "store {location} is at this gemba's schema: {}",
        stages.join(", ")
    );
    if let Some(c) = store.connection_security() {
        println!("connection: {}", c.text);
    }
    Ok(())
}

async fn check(args: &StoreArgs, full: bool) -> anyhow::Result<()> {
    use gemba_store::sqlite_check::{check_file, Damage, Depth};
    let location = location(args)?;
    let path = match &location {
        StoreLocation::Sqlite(path) => path.clone(),
        StoreLocation::Postgres { .. } => bail!(
            "store check reads SQLite files; PostgreSQL checks its own pages (data checksums, and its amcheck extension for indexes)"
        ),
    };
    let depth = if full { Depth::Full } else { Depth::Quick };
    let what = if full {
        "integrity_check"
    } else {
        "quick_check"
    };
    let shown = path.display().to_string();
    let found = tokio::task::spawn_blocking(move || check_file(&path, depth))
        .await?
        .map_err(|e| anyhow::anyhow!(e))?;
    match found {
        None => {
            println!("store {shown}: no damage found ({what})");
            Ok(())
        }
        Some(damage) => bail!(
            "store {shown} is damaged: {} ({what}). To recover: {}",
            damage.describe(),
            Damage::recovery(&shown)
        ),
    }
}

async fn copy(
    from: &str,
    to: &str,
    password_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let StoreLocation::Sqlite(source) =
        StoreLocation::parse(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?
    else {
        bail!("--from: give the SQLite store (sqlite:///var/lib/gemba/gemba.db or a path)");
    };
    let mut target = StoreLocation::parse(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    match &mut target {
        StoreLocation::Postgres {
            password_file: p, ..
        } => *p = password_file,
        StoreLocation::Sqlite(_) => {
            bail!("--to: give the PostgreSQL database (postgres://user@host:port/db)")
        }
    }
    let dest = gemba_store::open_postgres(&target)
        .await
        .with_context(|| format!("--to {target}"))?;
    println!("connection: {}", dest.connection().text);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows · {msg}")
            .expect("progress template"),
    );
    let copied = gemba_store::copy::sqlite_to_postgres(&source, &dest, |table, done, total| {
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(table.to_string());
    })
    .await
    .with_context(|| format!("copying {} into {target}", source.display()))?;
    bar.finish_and_clear();
    for (table, rows) in &copied.tables {
        if *rows > 0 {
            println!("{table:>24} {rows}");
        }
    }
    println!(
        "copied {} rows of {} into {target}; point the servers' [store] url at it",
        copied.rows(),
        source.display()
    );
    Ok(())
}
