//! The review stage on a server: the market task on the store, its
//! sources (PuppetDB), and the morning edition published every day.

use super::*;

/// The review stage: its own connection to the store, its task, and the
/// hourly removal of runs past `[market] run_retention`. A market that
/// cannot start leaves the rest of the server running.
pub(super) async fn start_market(
    config: &Config,
    stages: &mut Stages<'_>,
    clock: Clock,
    timeline: Option<gemba_timeline::TimelineHandle>,
) -> Option<gemba_market::service::MarketHandle> {
    let store = match gemba_store::open_market(&config.store.location).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "the market's tables cannot be opened; reports are refused");
            return None;
        }
    };
    let thresholds = gemba_market::detect::Thresholds::from_config(&config.market);
    let (handle, task) = match gemba_market::service::start(store.clone(), thresholds, clock).await
    {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "the market cannot load its problems; reports are refused");
            return None;
        }
    };
    stages.drain().spawn(Phase::Store, "market", task);
    let schedule = gemba_market::publish::Schedule {
        at: config.market.market_at,
        timezone: config.market.timezone.clone(),
    };
    stages.drain().spawn(
        Phase::Store,
        "market-record",
        gemba_market::publish::record_daily(handle.clone(), schedule, clock),
    );
    if !config.market.publish.is_empty() {
        let targets = config.market.publish.clone();
        let schedule = gemba_market::publish::Schedule {
            at: config.market.market_at,
            timezone: config.market.timezone.clone(),
        };
        let publisher = gemba_market::publish::run(
            handle.clone(),
            schedule,
            config.node.id.to_string(),
            clock,
            move |ed| {
                let targets = targets.clone();
                let timeline = timeline.clone();
                async move { publish_edition(&targets, timeline.as_ref(), clock.now_ms(), ed).await }
            },
        );
        stages
            .drain()
            .spawn(Phase::Store, "market-publish", publisher);
    }
    for src in &config.market.sources {
        let gemba_core::market::SourceDef::PuppetDb {
            url,
            interval,
            page,
        } = src;
        let source = gemba_market::puppetdb::Source {
            url: url.clone(),
            interval: *interval,
            page: *page,
            max_bytes: (config.market.max_report_bytes as u64).saturating_mul(*page as u64),
        };
        stages.drain().spawn_in(
            Phase::Store,
            "market-puppetdb",
            tracing::info_span!("source", url = %url),
            gemba_market::puppetdb::run(handle.clone(), source, clock),
        );
    }
    let retention = config.market.run_retention;
    stages
        .drain()
        .spawn(Phase::Store, "market-retention", async move {
            let mut every = tokio::time::interval(RETENTION_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let before = clock.now_ms().saturating_sub(retention.as_millis() as u64);
                match store.prune_runs(before).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(runs = n, "removed runs past the market's retention")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune the market's runs"),
                }
            }
        });
    Some(handle)
}

/// Sends a day's market to every target. Action items stay on the market
/// until done: what goes out is the edition the market's page shows.
pub(super) async fn publish_edition(
    targets: &[gemba_core::policy::NotifyDef],
    timeline: Option<&gemba_timeline::TimelineHandle>,
    now_ms: u64,
    ed: gemba_market::publish::Edition,
) -> (usize, Vec<String>) {
    let view = gemba_views::edition::Edition::with_actions_of(ed.market, timeline, now_ms).await;
    let m = gemba_views::edition::outgoing(&view, &ed.date, &ed.subject);
    gemba_notify::fan_out(targets, &m).await
}
