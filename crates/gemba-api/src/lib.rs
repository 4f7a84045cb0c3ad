//! The HTTP side of a gemba node: the JSON API under `/api/v1`, Prometheus
//! exposition at `/metrics`, `/healthz`, and the console at `/`.
//!
//! Read endpoints are open (on loopback by default); any request that would
//! change state must carry the configured bearer token, so a node listening
//! beyond loopback cannot be steered by whoever reaches its port.

pub mod access;
mod console;
mod converge;
mod exposition;
mod grid;
mod guard;
pub mod health;
mod learn;
mod params;
pub mod parse_budget;
mod respond;
mod review;
pub mod serve;
mod signin;
mod svg;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gemba_mesh::MeshNode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use console::render_page;
use respond::error;

use guard::*;
pub(crate) use guard::{holds_token, may_operate};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

/// Problems by kind and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProblemLabel {
    pub(crate) kind: &'static str,
    pub(crate) status: &'static str,
}

/// A report by the path it came in on and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReportLabel {
    pub(crate) source: &'static str,
    /// stored (accepted or a duplicate), refused, unavailable.
    pub(crate) outcome: &'static str,
}

/// What the handlers share.
pub struct ApiState {
    pub mesh: Arc<MeshNode>,
    pub registry: Registry,
    pub token: Option<String>,
    /// Present on nodes with the server role.
    pub escalator: Option<gemba_escalator::EscalatorHandle>,
    /// Why the server role is off on a node configured for it (the store
    /// could not be opened): reported by `/healthz`.
    pub server_off: Option<String>,
    /// Host names (lowercase) a request's `Host` may carry besides IP
    /// addresses and localhost: `[http] allowed_hosts`.
    pub allowed_hosts: Vec<String>,
    /// The server role's store, probed by `/healthz`.
    pub store_health: Option<health::StoreHealth>,
    /// The review stage, on servers whose store opened.
    pub market: Option<gemba_market::service::MarketHandle>,
    pub market_config: gemba_core::market::MarketConfig,
    /// The learn stage's events, on servers whose store opened.
    pub timeline: Option<gemba_timeline::TimelineHandle>,
    /// Where `POST /api/v1/chart/send` may send: the `[[notify]]` targets.
    pub notify: Vec<gemba_core::policy::NotifyDef>,
    /// This node's log excerpts (`[[process]] logs`).
    pub logs: Option<gemba_timeline::logs::LogBook>,
    /// Where other nodes' excerpts are fetched from.
    pub log_source: Option<gemba_timeline::logs::LogSource>,
    /// Threads, fair shares and a deadline for reading reports.
    pub parse_budget: parse_budget::ParseBudget,
    /// The API token and the scoped ones.
    pub tokens: access::Tokens,
    /// Console sessions of people signed in with a token.
    pub sessions: access::Sessions,
    pub(crate) connections: ConnectionMetrics,
    /// Reports received, by source and outcome.
    pub(crate) reports: Family<ReportLabel, Counter>,
    /// Seconds from a report's arrival to its answer.
    pub(crate) ingest_seconds: prometheus_client::metrics::histogram::Histogram,
    /// The market's problems by kind and status, counted when scraped.
    pub(crate) problems: Family<ProblemLabel, prometheus_client::metrics::gauge::Gauge>,
    responses: Family<CodeLabel, Counter>,
}

#[derive(Default)]
pub(crate) struct ConnectionMetrics {
    pub(crate) open: prometheus_client::metrics::gauge::Gauge,
    pub(crate) cap: prometheus_client::metrics::gauge::Gauge,
    pub(crate) refused: Counter,
}

impl ApiState {
    /// Builds the state; registers the HTTP metrics into `registry`.
    pub fn new(mesh: Arc<MeshNode>, registry: Registry, token: Option<String>) -> Arc<Self> {
        Self::with_escalator(mesh, registry, token, None)
    }

    /// Builds the state of a server: with its escalator.
    pub fn with_escalator(
        mesh: Arc<MeshNode>,
        mut registry: Registry,
        token: Option<String>,
        escalator: Option<gemba_escalator::EscalatorHandle>,
    ) -> Arc<Self> {
        let responses = Family::<CodeLabel, Counter>::default();
        registry.register(
            "gemba_http_responses",
            "HTTP responses by status code (rejected paths and methods included)",
            responses.clone(),
        );
        let parse_budget = parse_budget::ParseBudget::for_this_machine();
        registry.register(
            "gemba_report_parses_over_deadline",
            "Reports answered 503 because waiting for a parse thread and reading took longer than the deadline",
            parse_budget.over_deadline.clone(),
        );
        let reports = Family::<ReportLabel, Counter>::default();
        registry.register(
            "gemba_market_reports",
            "Reports received, by the path they came in on (source: puppet, puppetdb, chef, any) and outcome (stored, refused, unavailable)",
            reports.clone(),
        );
        let ingest_seconds = prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 14),
        );
        registry.register(
            "gemba_market_ingest_seconds",
            "Time from a report's arrival to its answer (parse, detectors, store)",
            ingest_seconds.clone(),
        );
        let problems = Family::<ProblemLabel, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "gemba_market_problems",
            "The morning market's problems, by kind and status",
            problems.clone(),
        );
        let connections = ConnectionMetrics::default();
        registry.register(
            "gemba_http_connections_open",
            "HTTP connections being served",
            connections.open.clone(),
        );
        registry.register(
            "gemba_http_connections_max",
            "HTTP connections served at once before the reserve ([http] max_connections)",
            connections.cap.clone(),
        );
        registry.register(
            "gemba_http_connections_refused",
            "HTTP connections closed at once: the cap and the reserve were full",
            connections.refused.clone(),
        );
        Arc::new(ApiState {
            mesh,
            registry,
            tokens: access::Tokens::new(token.clone(), &[]),
            sessions: access::Sessions::default(),
            token,
            escalator,
            server_off: None,
            store_health: None,
            allowed_hosts: Vec::new(),
            market: None,
            market_config: gemba_core::market::MarketConfig::default(),
            timeline: None,
            notify: Vec::new(),
            logs: None,
            log_source: None,
            parse_budget,
            connections,
            responses,
            reports,
            ingest_seconds,
            problems,
        })
    }

    /// Builds the state of a node whose configured server role is off.
    pub fn with_server_off(
        mesh: Arc<MeshNode>,
        registry: Registry,
        token: Option<String>,
        reason: String,
    ) -> Arc<Self> {
        let mut state = Self::with_escalator(mesh, registry, token, None);
        Arc::get_mut(&mut state).expect("just built").server_off = Some(reason);
        state
    }
}

impl ApiState {
    /// Tokens with one purpose besides the API token: `(scope, token)`.
    pub fn with_scoped_tokens(mut self: Arc<Self>, scoped: &[(String, String)]) -> Arc<Self> {
        let state = Arc::get_mut(&mut self).expect("set before the state is shared");
        state.tokens = access::Tokens::new(state.token.clone(), scoped);
        self
    }

    /// Who a request is (a token or a console session), if anyone.
    pub(crate) fn who(&self, headers: &axum::http::HeaderMap) -> Option<access::Who> {
        access::who(&self.tokens, &self.sessions, headers)
    }

    /// The name the journal records for a request's action.
    pub(crate) fn actor(&self, headers: &axum::http::HeaderMap) -> String {
        self.who(headers)
            .map(|w| w.name)
            .unwrap_or_else(|| "api".into())
    }
}

impl ApiState {
    /// The host names browsers may use besides IP addresses and localhost.
    pub fn allowing_hosts(mut self: Arc<Self>, hosts: Vec<String>) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the state is shared")
            .allowed_hosts = hosts;
        self
    }
}

impl ApiState {
    /// The market and its settings (report size cap, market time).
    pub fn with_market(
        mut self: Arc<Self>,
        market: Option<gemba_market::service::MarketHandle>,
        config: gemba_core::market::MarketConfig,
    ) -> Arc<Self> {
        let s = Arc::get_mut(&mut self).expect("set before the state is shared");
        s.market = market;
        s.market_config = config;
        self
    }
}

impl ApiState {
    /// The server role's store, which `/healthz` probes.
    pub fn with_store(
        mut self: Arc<Self>,
        store: Option<Arc<dyn gemba_store::Store>>,
        clock: gemba_exec::Clock,
    ) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the state is shared")
            .store_health = store.map(|s| health::StoreHealth::new(s, clock));
        self
    }

    /// The timeline (events), on servers.
    pub fn with_timeline(
        mut self: Arc<Self>,
        timeline: Option<gemba_timeline::TimelineHandle>,
    ) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the state is shared")
            .timeline = timeline;
        self
    }

    /// This node's log lines, and where other nodes' are fetched from.
    pub fn with_logs(
        mut self: Arc<Self>,
        book: Option<gemba_timeline::logs::LogBook>,
        source: Option<gemba_timeline::logs::LogSource>,
    ) -> Arc<Self> {
        let s = Arc::get_mut(&mut self).expect("set before the state is shared");
        s.logs = book;
        s.log_source = source;
        self
    }

    /// The `[[notify]]` targets charts may be sent to.
    pub fn with_notify(
        mut self: Arc<Self>,
        notify: Vec<gemba_core::policy::NotifyDef>,
    ) -> Arc<Self> {
        Arc::get_mut(&mut self)
            .expect("set before the state is shared")
            .notify = notify;
        self
    }
}

type Shared = Arc<ApiState>;

/// The router with every route of a node: the node's own (console,
/// health, metrics, sign-in) and each stage's, listed in its module's
/// `routes()` (`grid`, `converge`, `review`, `learn`). The token guard and
/// the response metrics cover them all.
pub fn router(state: Shared) -> Router {
    let own: Router = Router::new()
        .route("/", get(console_page))
        .route("/console/panel", get(console_panel))
        .route("/healthz", get(healthz))
        .route("/assets/console.js", get(console_js))
        .route("/assets/forms.js", get(forms_js))
        .route("/signin", get(signin::page))
        .route("/api/v1/session", get(signin::whoami).post(signin::start))
        .route("/api/v1/session/end", post(signin::end))
        .route("/metrics", get(metrics))
        .merge(grid::routes())
        .merge(converge::routes())
        .merge(review::routes(state.market_config.max_report_bytes))
        .merge(learn::routes())
        .with_state(state.clone());
    own.fallback(not_found)
        .layer(middleware::from_fn_with_state(state, guard))
}

/// Serves the router on `listener` within `limits` until `shutdown`
/// resolves; in-flight requests finish first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    limits: serve::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    serve::run(listener, state, app, limits, shutdown).await
}

async fn console_js() -> Response {
    script(console::SCRIPT)
}

async fn forms_js() -> Response {
    script(learn::postmortem_page::FORMS_JS)
}

fn script(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
}

async fn healthz(State(s): State<Shared>) -> Response {
    let role = match (&s.server_off, &s.escalator) {
        (Some(why), _) => health::ServerRole::Off(why),
        (None, Some(_)) => health::ServerRole::On(s.store_health.as_ref()),
        (None, None) => health::ServerRole::None,
    };
    let (healthy, body) = health::report(s.mesh.id(), role).await;
    if healthy {
        return Json(body).into_response();
    }
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from(respond::RETRY_AFTER_S),
    );
    r
}

async fn metrics(State(s): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    // The market's problems are counted now, so that the figures are the
    // market's at the scrape.
    if let Some(m) = &s.market {
        if let Ok(list) = m.problems().await {
            use gemba_market::problem::{Kind, Status};
            for kind in Kind::ALL {
                for status in [
                    Status::New,
                    Status::Open,
                    Status::Regressed,
                    Status::Resolved,
                ] {
                    let n = list
                        .iter()
                        .filter(|p| p.kind == kind && p.status == status)
                        .count();
                    s.problems
                        .get_or_create(&ProblemLabel {
                            kind: kind.as_str(),
                            status: status.as_str(),
                        })
                        .set(n as i64);
                }
            }
        }
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        );
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition::prometheus_text(&text),
    )
        .into_response()
}

async fn console_page(State(s): State<Shared>) -> Html<String> {
    let g = s.mesh.graph().await;
    Html(console::render_page(
        s.mesh.id(),
        &s.mesh.settings().site,
        &g,
        &s.mesh.clock_skewed_peers(),
    ))
}

async fn console_panel(State(s): State<Shared>) -> Html<String> {
    let g = s.mesh.graph().await;
    Html(console::render_panel(
        s.mesh.id(),
        &g,
        &s.mesh.clock_skewed_peers(),
    ))
}
