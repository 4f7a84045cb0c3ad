//! The commented example configuration printed by `gemba config example`.
//!
//! It is generated from [`crate::config::defaults`], so the values shown are
//! the values used; a test keeps the committed `gemba.example.toml` equal to
//! this output and checks that it loads to exactly the defaults.

use crate::config::defaults as d;
use crate::market::defaults as gemba_market_defaults;
use crate::metrics::defaults as gemba_metrics_defaults;
use crate::policy::defaults as p;

/// Returns the example configuration as TOML text.
pub fn example_toml() -> String {
    format!(
        r#"# gemba configuration. Every setting is optional; the values shown are the
# defaults. Durations take ms, s, m, h or d ("500ms", "1m30s").

[node]
# Unique name of this node on the grid. Default: the host name.
# id = "web-1"
# Location of this node (datacenter, region); groups nodes in the graph.
site = "{site}"
# Where this node keeps its grid key and local state.
data_dir = "{data_dir}"
# Tiers (groups) this node belongs to; node checks with a `tier` run where it matches.
tags = []
# Whether this node runs the server role besides the agent: the store, server
# checks, the escalator, the market and the timeline. Default: true for a node
# without seeds (on its own, it is its own server), false for a node that joins
# a grid through seeds (an agent: the mesh, its checks and samples, no store).
# server = true

[mesh]
# Nodes only talk to nodes of the same cluster name.
cluster = "{cluster}"
# UDP address for gossip and probes; the same port on TCP answers connect probes.
listen = "{mesh_listen}"
# Address peers use to reach this node. Default: listen (required if listen is 0.0.0.0).
# advertise = "10.0.0.5:7946"
# Any one existing node is enough to join; nodes learn the rest by gossip.
seeds = []
# File holding the shared grid key (at least 32 bytes, mode 0600) that signs every packet.
# Default: <data_dir>/grid.key, created on first start (copy it to the other nodes).
# grid_key_file = "/etc/gemba/grid.key"
# Each node also signs what it publishes with its own key (<data_dir>/node.key,
# created on first start; `gemba node key` prints the public half). Without a
# nodes file a peer's key is pinned when first seen (kept in
# <data_dir>/known_nodes); with one, only the nodes enrolled in it are believed
# (`gemba node enroll ID KEY --nodes-file FILE`, `gemba node revoke ID ...`).
# nodes_file = "/etc/gemba/nodes"
# How often each peer is probed, and how many UDP probes each round sends.
probe_interval = "{probe_interval}"
probes_per_interval = {probes_per_interval}
# Each peer is probed over this many flows, which differ in source port, so
# that probes take every path a router spreads flows over (ECMP): a dead
# path shows as some flows failing ("path" loss) instead of hiding.
probe_flows = {probe_flows}
# A fixed source port range for the flows, for firewalls. Default: ports the
# system picks.
# probe_ports = "40000-40007"
# A probe without a reply after this long counts as lost.
probe_timeout = "{probe_timeout}"
# The second path: a TCP connect to the peer's mesh port.
tcp_probe_interval = "{tcp_probe_interval}"
tcp_timeout = "{tcp_timeout}"
# How often gossip rounds run; sets how fast link changes reach every node.
gossip_interval = "{gossip_interval}"
# RTT percentiles and loss are computed over this window.
window = "{window}"
# Consecutive lost probes that make a link down, and replies that bring it back.
down_after_lost = {down_after_lost}
up_after_replies = {up_after_replies}
# A link is degraded when loss or p99 RTT over the window exceeds these.
degraded_loss_percent = {degraded_loss:.1}
degraded_rtt_p99 = "{degraded_rtt_p99}"
# A node that cannot reach more than this share of its peers is isolated:
# its own observations are not trusted.
isolated_percent = {isolated:.1}
# Packets older than this (or from further in the future) are dropped as replays.
packet_max_age = "{packet_max_age}"
# "full": every node probes every node and gossips with every node. "sites":
# each site gossips its own nodes' full state among its own nodes (seeds then
# name nodes of this node's site); the `representatives` live nodes of each
# site with the lowest ids probe the other sites' representatives and gossip
# in a backbone that carries one summary per site, which they relay into
# their site. For grids of thousands of nodes.
topology = "{topology}"
representatives = {representatives}
# Under "sites": nodes of other sites a representative reaches the backbone
# through at first (any one is enough; their lowest-id nodes are the likely
# representatives).
# backbone_seeds = ["10.1.0.1:7946"]
# Under "sites": the backbone's gossip rounds (`gossip_interval` is then the
# site's). Every round sends a digest of every member (about 50 bytes each)
# to three peers: a site of 100 at "3s" sends a third of what it does at "1s",
# and takes longer to learn its members at start.
backbone_gossip_interval = "{backbone_gossip_interval}"

[http]
# The API, the console and /metrics. Listening beyond loopback requires a token.
listen = "{http_listen}"
# File holding the bearer token for endpoints that change state (or set GEMBA_API_TOKEN).
# token_file = "/etc/gemba/api.token"
# Tokens with one purpose, each in its own file (mode 0600): ingest posts reports
# and events only (what Puppet, Chef and CI hold); operator changes anything and
# reads program output; read only reads program output and log lines. People
# sign in to the console at /signin with one of them.
# ingest_token_file = "/etc/gemba/ingest.token"
# operator_token_file = "/etc/gemba/operator.token"
# read_token_file = "/etc/gemba/read.token"
# Connections served at once; beyond them a reserve of 32 answers only /healthz,
# /metrics and loopback clients, and further connections are closed at once.
# By default half the process's file limit (at most 16384), so that the mesh
# always has descriptors left.
# max_connections = 4096
# A connection must send a request's head within this time, and may stay idle
# between requests no longer.
header_timeout = "10s"

[escalator]
# "act": run escalations. "plan": decide and journal, run nothing.
mode = "{mode}"
# After checks of a scope start failing, wait this long for the picture to settle.
quiet_period = "{quiet}"
# Attempts (chain + verification) before the scope is held for a human;
# attempts are spaced by backoff, doubled each time.
budget = {budget}
backoff = "{backoff}"
# true: each new attempt, and the escalation after a crash loop, starts one
# level more fundamental.
climb = {climb}
# Rate limits: escalations opened per scope per hour (past it the scope is
# held for a human, with one notice), and running at once (past it a scope
# waits for a free slot).
max_per_scope_per_hour = {per_hour}
max_running = {max_running}
# A crash loop: this many failure episodes of one scope within the window.
# It climbs (with climb = true) or holds the scope and tells a human once.
crash_loop_failures = {crash_loop_failures}
crash_loop_window = "{crash_loop_window}"
# Servers sharing a store hold a lease per scope this long (renewed while busy).
lease_ttl = "{lease_ttl}"
# Results older than this many check intervals never trigger anything.
stale_after_intervals = {stale}
# When the node stops, running steps get this long to finish and be journaled.
step_grace = "{step_grace}"

[store]
# Where the server role keeps the journal, escalations, leases, notices,
# reports, events, series and incidents: sqlite:///var/lib/gemba/gemba.db or a
# plain path (default: <data_dir>/gemba.db), or a PostgreSQL database shared by
# servers on several hosts: postgres://gemba@db.example.net:5432/gemba.
# TLS as in libpq: ?sslmode=prefer (default: encrypt when offered), require,
# verify-ca or verify-full, with &sslrootcert=/etc/gemba/db-ca.pem (or system).
# Servers sharing an SQLite file must run on one host (WAL needs shared memory).
# url = "sqlite:///var/lib/gemba/gemba.db"
# PostgreSQL's password: in a file only gemba can read (else the URL's, else
# the PGPASSWORD environment variable).
# password_file = "/etc/gemba/pg.password"
# Journal lines and closed escalations older than this are removed (hourly).
journal_retention = "{journal_retention}"

# Escalation levels, 1 = most fundamental; failing checks run their level and
# every level after it. Each level: run (a command, no shell), timeout
# (default {level_timeout}), quiesce (default {level_quiesce}), approve (default false).
# [[level]]
# level = 6
# name = "redeploy"
# run = ["/opt/ops/redeploy", "{{node}}"]

# Checks: kind tcp, http, command (a Nagios plugin), process, mesh-node or
# mesh-link; scope node (default), tier or global; interval (default {interval}),
# timeout ({timeout}), fall ({fall}), rise ({rise}), level (what to run when failing).
# Flapping checks never act. A check flaps over results (Nagios' weighted
# percent state change over 21 results, flap_high {flap_high} / flap_low {flap_low}) or
# over time (hard-state changes within flap_window {flap_window}: flap_changes_high
# {flap_changes_high} starts it, flap_changes_low {flap_changes_low} or fewer ends it).
# [[check]]
# name = "web"
# kind = "command"
# command = ["/usr/lib/nagios/plugins/check_http", "-H", "{{node_addr}}"]
# level = 6

# Where notices go (step failed, gave up, approval needed, resolved, held
# for flapping, rate limit or crash loop). Each is stored and retried with
# backoff until delivered, for up to a day.
# [[notify]]
# kind = "webhook"
# url = "http://chat.internal/hooks/ops"

[incidents]
# What opens an incident: an escalation held for a human (hold: a crash
# loop, a rate limit, a spent budget, an approval waiting longer than
# approval_wait), every escalation when it starts (start), only a spent
# budget (give-up), or nothing (never). A restart that worked at once is
# on the node's timeline and charts, not an incident. Incidents can
# always be opened by hand (`gemba incident open "title"`).
open_on = "{open_on}"
# An escalation starting within this long of an open incident's newest
# one joins that incident (one outage, one incident); one on a scope an
# incident covers reopens it within this long of its closing.
group_within = "{group_within}"
# An incident stays open this long after its escalations end; any
# escalation on its scopes in that time joins it.
cool_down = "{cool_down}"
approval_wait = "{approval_wait}"

[market]
# Puppet (reports = http, reporturl = http://HOST:8777/api/v1/reports/puppet)
# and chef-client (data_collector.server_url = .../api/v1/chef/data-collector)
# report here; the morning market shows yesterday's rejects as problems.
# Largest report accepted (413 above it).
max_report_size = "{max_report_size}"
# The daily market covers the 24 hours up to this local time.
market_at = "{market_at}"
timezone = "{timezone}"
# Environments whose problems weigh more.
production = ["production", "prod"]
# Runs without the problem on every affected node that resolve it.
clean_runs = {clean_runs}
# Stored runs older than this are removed (problems stay).
run_retention = "{run_retention}"
# Where readers reach the console: the links of an exported market
# (`gemba market --format html`) are absolute from it. Default: this
# node's HTTP address.
# base_url = "https://gemba.example.net"
# What a team already knows: a pattern over a problem's signature or message
# sets its category, cause and/or severity.
# [[market.rule]]
# pattern = "git fetch"
# category = "scm"
# cause = "the Git mirror is rebooted on Sundays at 03:00"
# severity = "low"
# Where the market goes every day at market_at, as Markdown: webhook, smtp or
# command, as [[notify]].
# [[market.publish]]
# kind = "smtp"
# smtp_server = "localhost:25"
# from = "gemba@example.net"
# to = ["ops@example.net"]
# Pull runs from a PuppetDB instead of (or beside) Puppet's http processor:
# its v4 query API over http (PuppetDB's https port wants Puppet client
# certificates, which gemba does not send), every interval, page reports at
# a time, from where the last pull stopped.
# [[market.source]]
# kind = "puppetdb"
# url = "http://puppetdb.example.net:8080"
# interval = "60s"
# page = 100

[metrics]
# Every agent samples its host (load, memory, swap, TCP connections by state,
# ephemeral ports, file handles) and each [[process]] from /proc this often,
# publishes the samples in gossip and on /metrics; servers store them.
interval = "{metrics_interval}"
# Servers keep raw samples, 1-minute and 1-hour averages this long.
raw_retention = "{raw_retention}"
minute_retention = "{minute_retention}"
hour_retention = "{hour_retention}"
# Caps: processes an agent samples, series a server stores (over either is
# logged and counted, not silent).
max_processes = {max_processes}
max_series = {max_series}
# Lines an agent keeps of each [[process]] log file (newest; in memory).
log_lines = {log_lines}

# A process to sample, found by its program name, or by pidfile, cgroup (v2)
# or systemd unit: RSS, open fds and their limit, threads, CPU, context
# switches, TCP connections by state, ephemeral ports, restarts.
# `logs` names files whose newest lines the agent keeps, to show and send
# the lines around an event or an escalation (not indexed: use a log system
# for search).
# [[process]]
# name = "shop"
# unit = "shop.service"
# logs = ["/var/log/shop/app.log"]

# A check on a sampled metric: restart the shop when its connections stay
# over 500 for 5 minutes (node scope: it reads the node's own samples).
# [[check]]
# name = "shop-connections"
# kind = "metric"
# tier = "shop"
# process = "shop"
# metric = "tcp_established"
# warn = 400
# crit = 500
# for = "5m"
# level = 2
"#,
        metrics_interval = gemba_metrics_defaults::INTERVAL,
        raw_retention = gemba_metrics_defaults::RAW_RETENTION,
        minute_retention = gemba_metrics_defaults::MINUTE_RETENTION,
        hour_retention = gemba_metrics_defaults::HOUR_RETENTION,
        max_processes = gemba_metrics_defaults::MAX_PROCESSES,
        max_series = gemba_metrics_defaults::MAX_SERIES,
        log_lines = gemba_metrics_defaults::LOG_LINES,
        open_on = crate::incidents::defaults::OPEN_ON,
        group_within = crate::incidents::defaults::GROUP_WITHIN,
        cool_down = crate::incidents::defaults::COOL_DOWN,
        approval_wait = crate::incidents::defaults::APPROVAL_WAIT,
        max_report_size = gemba_market_defaults::MAX_REPORT_SIZE,
        market_at = gemba_market_defaults::MARKET_AT,
        timezone = gemba_market_defaults::TIMEZONE,
        clean_runs = gemba_market_defaults::CLEAN_RUNS,
        run_retention = gemba_market_defaults::RUN_RETENTION,
        site = d::SITE,
        data_dir = d::DATA_DIR,
        cluster = d::CLUSTER,
        mesh_listen = d::MESH_LISTEN,
        probe_interval = d::PROBE_INTERVAL,
        probes_per_interval = d::PROBES_PER_INTERVAL,
        probe_flows = d::PROBE_FLOWS,
        probe_timeout = d::PROBE_TIMEOUT,
        tcp_probe_interval = d::TCP_PROBE_INTERVAL,
        tcp_timeout = d::TCP_TIMEOUT,
        gossip_interval = d::GOSSIP_INTERVAL,
        backbone_gossip_interval = d::BACKBONE_GOSSIP_INTERVAL,
        window = d::WINDOW,
        down_after_lost = d::DOWN_AFTER_LOST,
        up_after_replies = d::UP_AFTER_REPLIES,
        degraded_loss = d::DEGRADED_LOSS_PERCENT,
        degraded_rtt_p99 = d::DEGRADED_RTT_P99,
        isolated = d::ISOLATED_PERCENT,
        packet_max_age = d::PACKET_MAX_AGE,
        topology = d::TOPOLOGY,
        representatives = d::REPRESENTATIVES,
        http_listen = d::HTTP_LISTEN,
        mode = p::MODE,
        quiet = p::QUIET_PERIOD,
        budget = p::BUDGET,
        backoff = p::BACKOFF,
        climb = p::CLIMB,
        per_hour = p::MAX_PER_SCOPE_PER_HOUR,
        max_running = p::MAX_RUNNING,
        lease_ttl = p::LEASE_TTL,
        stale = p::STALE_AFTER_INTERVALS,
        crash_loop_failures = p::CRASH_LOOP_FAILURES,
        crash_loop_window = p::CRASH_LOOP_WINDOW,
        step_grace = p::STEP_GRACE,
        journal_retention = d::JOURNAL_RETENTION,
        level_timeout = p::LEVEL_TIMEOUT,
        level_quiesce = p::LEVEL_QUIESCE,
        interval = p::CHECK_INTERVAL,
        timeout = p::CHECK_TIMEOUT,
        fall = p::FALL,
        rise = p::RISE,
        flap_high = p::FLAP_HIGH,
        flap_low = p::FLAP_LOW,
        flap_window = p::FLAP_WINDOW,
        flap_changes_high = p::FLAP_CHANGES_HIGH,
        flap_changes_low = p::FLAP_CHANGES_LOW,
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigFile, Overrides};

    const COMMITTED: &str = include_str!("../../../gemba.example.toml");

    #[test]
    fn committed_example_matches_generated_one() {
        assert!(
            COMMITTED == example_toml(),
            "gemba.example.toml is out of date: regenerate it with `cargo run -- config example > gemba.example.toml`"
        );
    }

    #[test]
    fn example_loads_to_exactly_the_defaults() {
        let o = Overrides {
            node_id: Some("n".into()),
            ..Default::default()
        };
        let from_example = Config::from_file(
            ConfigFile::parse(Path::new("ex"), &example_toml()).unwrap(),
            &o,
            "ex",
        )
        .unwrap();
        let from_nothing = Config::from_file(ConfigFile::default(), &o, "none").unwrap();
        assert_eq!(format!("{from_example:?}"), format!("{from_nothing:?}"));
    }
}

#[cfg(test)]
mod readme {
    use std::path::Path;

    use crate::config::{Config, ConfigFile, Overrides};

    const README: &str = include_str!("../../../README.md");

    /// Every ```toml block of the README is a valid config.
    #[test]
    fn readme_configs_are_valid() {
        let mut blocks = 0;
        for (i, part) in README.split("```toml\n").enumerate().skip(1) {
            let text = part.split("```").next().unwrap();
            let o = Overrides {
                node_id: Some("n".into()),
                grid_key_file: None,
                token: Some("a-token-of-enough-length".into()),
                ..Default::default()
            };
            let mut file = ConfigFile::parse(Path::new("README.md"), text)
                .unwrap_or_else(|e| panic!("README toml block {i}: {e}"));
            // Paths in examples point at a production machine.
            if let Some(m) = file.mesh.as_mut() {
                m.grid_key_file = None;
                m.nodes_file = None;
            }
            if let Some(h) = file.http.as_mut() {
                h.token_file = None;
            }
            Config::from_file(file, &o, "README.md")
                .unwrap_or_else(|e| panic!("README toml block {i}: {e}"));
            blocks += 1;
        }
        assert!(blocks >= 2, "found {blocks} toml blocks");
    }
}
