//! The schema, per stage. Each stage numbers its own migrations from 1;
//! a store records the version each stage has reached, so stages are added
//! and grown independently. Each database has its own list per stage
//! (SQLite's and PostgreSQL's numbers need not match: PostgreSQL started
//! later, from the schema SQLite had then).

/// One stage's migrations, applied in order; never edit a released one,
/// append a new one.
pub struct StageSchema {
    pub name: &'static str,
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

/// Which database a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl StageSchema {
    /// The newest schema version of this stage on `backend`.
    pub fn newest(&self, backend: Backend) -> usize {
        match backend {
            Backend::Sqlite => self.sqlite.len(),
            Backend::Postgres => self.postgres.len(),
        }
    }
}

/// Every stage with tables in the store.
pub const STAGES: &[StageSchema] = &[
    StageSchema {
        name: "escalator",
        sqlite: ESCALATOR,
        postgres: PG_ESCALATOR,
    },
    StageSchema {
        name: "market",
        sqlite: MARKET,
        postgres: PG_MARKET,
    },
    StageSchema {
        name: "timeline",
        sqlite: TIMELINE,
        postgres: PG_TIMELINE,
    },
];

/// The timeline's tables.
const TIMELINE: &[&str] = &[
    // 1: change events, their tags (for queries), named values.
    "CREATE TABLE timeline_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        end_ms INTEGER,
        kind TEXT NOT NULL,
        what TEXT NOT NULL,
        tags TEXT NOT NULL,
        text TEXT NOT NULL,
        author TEXT NOT NULL,
        link TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT UNIQUE
    );
    CREATE INDEX timeline_events_at ON timeline_events(at_ms);
    CREATE TABLE timeline_event_tags (
        tag TEXT NOT NULL,
        event INTEGER NOT NULL,
        PRIMARY KEY (tag, event)
    ) WITHOUT ROWID;
    CREATE TABLE timeline_values (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: metric series (node, process, metric), raw points (unix seconds)
    // and their 1-minute and 1-hour roll-ups.
    "CREATE TABLE timeline_series (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node TEXT NOT NULL,
        process TEXT NOT NULL,
        metric TEXT NOT NULL,
        UNIQUE (node, process, metric)
    );
    CREATE TABLE timeline_raw (
        series INTEGER NOT NULL,
        t INTEGER NOT NULL,
        v REAL NOT NULL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;
    CREATE TABLE timeline_minute (
        series INTEGER NOT NULL,
        t INTEGER NOT NULL,
        avg REAL NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;
    CREATE TABLE timeline_hour (
        series INTEGER NOT NULL,
        t INTEGER NOT NULL,
        avg REAL NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;",
    // 3: the head: new raw points in arrival (time) order, so that a
    // batch appends to a few pages instead of touching a page per series;
    // compaction moves them into timeline_raw ten minutes at a time.
    "CREATE TABLE timeline_head (
        t INTEGER NOT NULL,
        series INTEGER NOT NULL,
        v REAL NOT NULL,
        PRIMARY KEY (t, series)
    ) WITHOUT ROWID;",
    // 4: what changed state (checks, nodes, links), as servers saw it, for
    // incident timelines; incidents (indexed fields, the rest as JSON, a
    // version for updates that must not overwrite each other) and the
    // escalations each one gathers.
    "CREATE TABLE timeline_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        node TEXT NOT NULL,
        peer TEXT NOT NULL,
        state TEXT NOT NULL,
        previous TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX timeline_changes_at ON timeline_changes (at_ms);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        opened_ms INTEGER NOT NULL,
        closed_ms INTEGER,
        version INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE incident_escalations (
        escalation INTEGER PRIMARY KEY,
        incident INTEGER NOT NULL
    );",
    // 5: post-mortems. A participant is known by the hash of their link's
    // token and a public key derived from it; while voting is open their
    // row holds their ballot token sealed to that key. Ballots are keyed by the hash of the
    // ballot token alone (stored in hash order, with no time and no
    // participant), so the tables never tie a ballot to a person. Action
    // items come from the winning proposals.
    "CREATE TABLE postmortems (
        incident INTEGER PRIMARY KEY,
        phase TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE pm_participants (
        token_hash TEXT PRIMARY KEY,
        incident INTEGER NOT NULL,
        name TEXT NOT NULL,
        seal_key TEXT NOT NULL,
        slot TEXT,
        UNIQUE (incident, name)
    ) WITHOUT ROWID;
    CREATE TABLE pm_ballots (
        token_hash TEXT PRIMARY KEY,
        incident INTEGER NOT NULL,
        content TEXT
    ) WITHOUT ROWID;
    CREATE TABLE pm_actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident INTEGER NOT NULL,
        proposal INTEGER NOT NULL,
        text TEXT NOT NULL,
        owner TEXT NOT NULL,
        due_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        done_ms INTEGER,
        done_by TEXT
    );",
    // 6: a seat is claimed once with the token its starter was shown,
    // which then stops working (seats of existing post-mortems count as
    // claimed).
    "ALTER TABLE pm_participants ADD COLUMN claimed INTEGER NOT NULL DEFAULT 1;",
];

/// The market's tables.
const MARKET: &[&str] = &[
    // 1: runs, Chef run starts, problems, nodes, named values.
    "CREATE TABLE market_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        node TEXT NOT NULL,
        tool TEXT NOT NULL,
        started_ms INTEGER NOT NULL,
        duration_ms INTEGER,
        status TEXT NOT NULL,
        environment TEXT NOT NULL,
        code_version TEXT NOT NULL,
        total INTEGER NOT NULL,
        changed INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        digest TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX market_runs_node ON market_runs(node, started_ms);
    CREATE INDEX market_runs_time ON market_runs(started_ms);
    CREATE TABLE market_starts (
        run_id TEXT PRIMARY KEY,
        node TEXT NOT NULL,
        started_ms INTEGER NOT NULL
    );
    CREATE TABLE market_problems (
        id INTEGER PRIMARY KEY,
        signature TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE market_nodes (
        node TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    CREATE TABLE market_values (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 2: each problem's evidence per node in its own rows; the detectors'
    // index of resources that ran fine; runs by time (the market's counts
    // and retention).
    "CREATE TABLE market_problem_nodes (
        problem INTEGER NOT NULL,
        node TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (problem, node)
    ) WITHOUT ROWID;
    CREATE TABLE market_fine (
        key TEXT PRIMARY KEY,
        body TEXT NOT NULL
    );
    CREATE INDEX market_runs_started ON market_runs(started_ms);",
];

/// The escalator's tables.
const ESCALATOR: &[&str] = &[
    // 1: the escalator's journal, records, leases and step claims.
    "CREATE TABLE journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        escalation INTEGER,
        scope TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        server TEXT NOT NULL
    );
    CREATE INDEX journal_escalation ON journal(escalation, seq);
    CREATE TABLE escalations (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,
        phase TEXT NOT NULL,
        open INTEGER NOT NULL,
        opened_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX escalations_open ON escalations(open, updated_ms);
    CREATE TABLE escalation_ids (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER);
    CREATE TABLE leases (
        scope TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE step_claims (
        escalation INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        level INTEGER NOT NULL,
        holder TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (escalation, attempt, level)
    );",
    // 2: notices waiting for delivery (retried until delivered or expired).
    "CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        body TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        next_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox(next_ms);",
    // 3: fencing tokens: each term of a lease gets a larger one, and a
    // released lease keeps its row (expired) so tokens never go back.
    "ALTER TABLE leases ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;",
];

/// The escalator's tables in PostgreSQL. Free text (journal lines, records,
/// notices) is stored as UTF-8 bytes: PostgreSQL's TEXT refuses NUL, and a
/// program's output may hold one.
const PG_ESCALATOR: &[&str] = &[
    // 1: the journal, records, ids, leases, step claims and notices.
    "CREATE TABLE journal (
        seq BIGSERIAL PRIMARY KEY,
        escalation BIGINT,
        scope TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        text BYTEA NOT NULL,
        server TEXT NOT NULL
    );
    CREATE INDEX journal_escalation ON journal (escalation, seq);
    CREATE INDEX journal_at ON journal (at_ms);
    CREATE TABLE escalations (
        id BIGINT PRIMARY KEY,
        scope TEXT NOT NULL,
        phase TEXT NOT NULL,
        open BOOLEAN NOT NULL,
        opened_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE INDEX escalations_open ON escalations (open, updated_ms);
    CREATE SEQUENCE escalation_ids;
    CREATE TABLE leases (
        scope TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE TABLE step_claims (
        escalation BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        level BIGINT NOT NULL,
        holder TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (escalation, attempt, level)
    );
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        target BYTEA NOT NULL,
        body BYTEA NOT NULL,
        created_ms BIGINT NOT NULL,
        next_ms BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error BYTEA NOT NULL DEFAULT ''
    );
    CREATE INDEX outbox_due ON outbox (next_ms);",
    // 2: fencing tokens, as SQLite's third.
    "ALTER TABLE leases ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;",
];

/// The market's tables in PostgreSQL. What a report carries is stored as
/// bytes (a hostile report may hold a NUL, which TEXT refuses and which
/// would fail the whole batch); node names, checked against the name
/// grammar, are TEXT.
const PG_MARKET: &[&str] = &[
    // 1: runs, Chef run starts, problems with their evidence per node, node
    // summaries, the detectors' index of resources that ran fine, values.
    "CREATE TABLE market_runs (
        id BIGSERIAL PRIMARY KEY,
        key BYTEA NOT NULL UNIQUE,
        node TEXT NOT NULL,
        tool BYTEA NOT NULL,
        started_ms BIGINT NOT NULL,
        duration_ms BIGINT,
        status BYTEA NOT NULL,
        environment BYTEA NOT NULL,
        code_version BYTEA NOT NULL,
        total BIGINT NOT NULL,
        changed BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        digest BYTEA NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE INDEX market_runs_node ON market_runs (node, started_ms);
    CREATE INDEX market_runs_started ON market_runs (started_ms);
    CREATE TABLE market_starts (
        run_id BYTEA PRIMARY KEY,
        node TEXT NOT NULL,
        started_ms BIGINT NOT NULL
    );
    CREATE INDEX market_starts_started ON market_starts (started_ms);
    CREATE TABLE market_problems (
        id BIGINT PRIMARY KEY,
        signature BYTEA NOT NULL UNIQUE,
        status TEXT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        body BYTEA NOT NULL
    );
    CREATE TABLE market_problem_nodes (
        problem BIGINT NOT NULL,
        node TEXT NOT NULL,
        body BYTEA NOT NULL,
        PRIMARY KEY (problem, node)
    );
    CREATE TABLE market_nodes (
        node TEXT PRIMARY KEY,
        body BYTEA NOT NULL
    );
    CREATE TABLE market_fine (
        key BYTEA PRIMARY KEY,
        body BYTEA NOT NULL
    );
    CREATE TABLE market_values (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );",
    // 2: the market's counts of a day (runs, failed runs, distinct nodes)
    // from the index alone: runs by time with their node and status, so
    // a day of 100,000 nodes is counted without reading the runs' rows
    // (an index-only scan; it also serves what the old time index did).
    // Vacuumed after 1 % more rows instead of 20 %, so that the newest
    // day's entries are marked visible and need no row visits either.
    "CREATE INDEX market_runs_window ON market_runs (started_ms) INCLUDE (node, status);
    DROP INDEX market_runs_started;
    ALTER TABLE market_runs SET (autovacuum_vacuum_insert_scale_factor = 0.01);",
];

/// The timeline's tables in PostgreSQL: as SQLite's fifth schema. Texts
/// that may come from a program's output (event texts follow journal
/// lines; a change's detail is a check's output) are bytes.
const PG_TIMELINE: &[&str] = &[
    // 1: events and their tags, values, series with raw points (the head
    // and the tier) and roll-ups, state changes, incidents, post-mortems.
    "CREATE TABLE timeline_events (
        id BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        end_ms BIGINT,
        kind TEXT NOT NULL,
        what BYTEA NOT NULL,
        tags TEXT NOT NULL,
        text BYTEA NOT NULL,
        author TEXT NOT NULL,
        link TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT UNIQUE
    );
    CREATE INDEX timeline_events_at ON timeline_events (at_ms);
    CREATE TABLE timeline_event_tags (
        tag TEXT NOT NULL,
        event BIGINT NOT NULL,
        PRIMARY KEY (tag, event)
    );
    CREATE TABLE timeline_values (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE timeline_series (
        id BIGSERIAL PRIMARY KEY,
        node TEXT NOT NULL,
        process TEXT NOT NULL,
        metric TEXT NOT NULL,
        UNIQUE (node, process, metric)
    );
    CREATE TABLE timeline_head (
        t BIGINT NOT NULL,
        series BIGINT NOT NULL,
        v DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (t, series)
    );
    CREATE TABLE timeline_raw (
        series BIGINT NOT NULL,
        t BIGINT NOT NULL,
        v DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (series, t)
    );
    CREATE INDEX timeline_raw_t ON timeline_raw (t);
    CREATE TABLE timeline_minute (
        series BIGINT NOT NULL,
        t BIGINT NOT NULL,
        avg DOUBLE PRECISION NOT NULL,
        min DOUBLE PRECISION NOT NULL,
        max DOUBLE PRECISION NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (series, t)
    );
    CREATE INDEX timeline_minute_t ON timeline_minute (t);
    CREATE TABLE timeline_hour (
        series BIGINT NOT NULL,
        t BIGINT NOT NULL,
        avg DOUBLE PRECISION NOT NULL,
        min DOUBLE PRECISION NOT NULL,
        max DOUBLE PRECISION NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (series, t)
    );
    CREATE INDEX timeline_hour_t ON timeline_hour (t);
    CREATE TABLE timeline_changes (
        id BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        node TEXT NOT NULL,
        peer TEXT NOT NULL,
        state TEXT NOT NULL,
        previous TEXT NOT NULL,
        detail BYTEA NOT NULL
    );
    CREATE INDEX timeline_changes_at ON timeline_changes (at_ms);
    CREATE TABLE incidents (
        id BIGSERIAL PRIMARY KEY,
        opened_ms BIGINT NOT NULL,
        closed_ms BIGINT,
        version BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE incident_escalations (
        escalation BIGINT PRIMARY KEY,
        incident BIGINT NOT NULL
    );
    CREATE INDEX incident_escalations_incident ON incident_escalations (incident);
    CREATE TABLE postmortems (
        incident BIGINT PRIMARY KEY,
        phase TEXT NOT NULL,
        expires_ms BIGINT NOT NULL,
        version BIGINT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE pm_participants (
        token_hash TEXT PRIMARY KEY,
        incident BIGINT NOT NULL,
        name TEXT NOT NULL,
        seal_key TEXT NOT NULL,
        slot TEXT,
        UNIQUE (incident, name)
    );
    CREATE TABLE pm_ballots (
        token_hash TEXT PRIMARY KEY,
        incident BIGINT NOT NULL,
        content TEXT
    );
    CREATE TABLE pm_actions (
        id BIGSERIAL PRIMARY KEY,
        incident BIGINT NOT NULL,
        proposal BIGINT NOT NULL,
        text TEXT NOT NULL,
        owner TEXT NOT NULL,
        due_ms BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        done_ms BIGINT,
        done_by TEXT
    );",
    // 2: claimed seats, as SQLite's sixth.
    "ALTER TABLE pm_participants ADD COLUMN claimed BOOLEAN NOT NULL DEFAULT TRUE;",
];
