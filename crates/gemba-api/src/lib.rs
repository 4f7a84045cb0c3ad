//! The HTTP side of a gemba node: the JSON API under `/api/v1`, Prometheus
//! exposition at `/metrics`, `/healthz`, and the console at `/`.
//!
//! Read endpoints are open (on loopback by default); any request that would
//! change state must carry the configured bearer token, so a node listening
//! beyond loopback cannot be steered by whoever reaches its port.

pub mod access;
mod console;
mod converge;
mod events;
mod incidents;
mod learn_page;
mod logs;
mod market;
mod market_page;
mod node_page;
pub mod parse_budget;
mod postmortems;
pub mod serve;
mod signin;
mod svg;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
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
use serde_json::json;

pub use console::render_page;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
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

/// The router with every route of a node.
pub fn router(state: Shared) -> Router {
    router_with(state, Router::new())
}

/// The router with the routes of every stage: `extra` holds the routes
/// stages registered with the node. The token guard and the response
/// metrics cover them too.
pub fn router_with(state: Shared, extra: Router) -> Router {
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
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/links", get(links))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/links/{target}", get(link_history))
        .route("/api/v1/logs", get(logs::logs))
        .route("/api/v1/checks", get(converge::checks))
        .route("/api/v1/plan", get(converge::plan))
        .route("/api/v1/journal", get(converge::journal))
        .route("/api/v1/escalations", get(converge::escalations))
        .route("/api/v1/escalations/{id}", get(converge::escalation))
        .route("/api/v1/escalations/{id}/approve", post(converge::approve))
        .route("/api/v1/scopes/{scope}/ack", post(converge::ack))
        .route("/checks", get(converge::checks_page))
        .route("/escalations", get(converge::escalations_page))
        .route("/escalations/{id}", get(converge::escalation_page))
        .route("/plan", get(converge::plan_page))
        .route("/api/v1/problems", get(market::problems))
        .route(
            "/api/v1/problems/{id}",
            get(market::problem).post(market::change_problem),
        )
        .route("/api/v1/market", get(market::market_report))
        .route("/api/v1/market/nodes/{node}", get(market::node_runs))
        .route("/api/v1/market/runs/{key}", get(market::run))
        .route("/market", get(market::market_page))
        .route("/market/problems/{id}", get(market::problem_page))
        .route("/market/nodes/{node}", get(market::node_page))
        .with_state(state.clone());
    // Report bodies may be large: their own cap, checked before reading.
    let reports: Router = Router::new()
        .route("/api/v1/reports", post(market::any))
        .route("/api/v1/reports/puppet", post(market::puppet))
        .route("/api/v1/reports/puppetdb", post(market::puppetdb))
        .route("/api/v1/chef/data-collector", post(market::chef))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.market_config.max_report_bytes,
        ))
        .with_state(state.clone());
    let events: Router = Router::new()
        .route("/api/v1/events", get(events::list).post(events::add))
        .route("/api/v1/events/{id}", get(events::one))
        .route("/api/v1/series", get(events::series))
        .route("/api/v1/processes", get(events::processes))
        .route("/api/v1/chart.svg", get(events::chart_svg))
        .route("/api/v1/chart.png", get(events::chart_png))
        .route("/api/v1/chart/send", post(events::chart_send))
        .route("/charts", get(learn_page::charts_page))
        .route("/nodes/{node}", get(node_page::node_page))
        .route(
            "/api/v1/incidents",
            get(incidents::list).post(incidents::open),
        )
        .route(
            "/api/v1/incidents/{id}",
            get(incidents::one).post(incidents::change),
        )
        .route(
            "/api/v1/incidents/{id}/postmortem",
            get(postmortems::one).post(postmortems::start),
        )
        .route(
            "/api/v1/incidents/{id}/postmortem/change",
            post(postmortems::operator_change),
        )
        .route(
            "/api/v1/incidents/{id}/postmortem/actions",
            post(postmortems::operator_action),
        )
        .route(
            "/api/v1/incidents/{id}/postmortem/send",
            post(postmortems::operator_send),
        )
        .route(
            "/api/v1/incidents/{id}/postmortem/export",
            get(postmortems::export_json),
        )
        .route(
            "/api/v1/incidents/{id}/postmortem.md",
            get(postmortems::export_markdown),
        )
        .route(
            "/api/v1/pm/{token}",
            get(postmortems::seat).post(postmortems::seat_change),
        )
        .route("/api/v1/pm/{token}/actions", post(postmortems::seat_action))
        .route("/api/v1/pm/{token}/claim", post(postmortems::claim))
        .route("/api/v1/pm/{token}/send", post(postmortems::seat_send))
        .route(
            "/api/v1/ballots/{token}",
            get(postmortems::ballot).post(postmortems::cast),
        )
        .route("/api/v1/actions", get(postmortems::actions))
        .route("/api/v1/actions/{id}", post(postmortems::action_done))
        .route("/pm/{token}", get(postmortems::seat_page))
        .route("/ballots/{token}", get(postmortems::ballot_page))
        .route("/incidents", get(incidents::list_page))
        .route("/incidents/{id}", get(incidents::page))
        .route(
            "/events",
            get(learn_page::events_page).post(events::graphite),
        )
        .route("/events/{id}", get(learn_page::event_page))
        .route("/events/", post(events::graphite))
        .route("/api/annotations", post(events::grafana))
        .route("/api/annotations/graphite", post(events::grafana_graphite))
        .layer(axum::extract::DefaultBodyLimit::max(
            gemba_timeline::event::MAX_BODY,
        ))
        .with_state(state.clone());
    let own = own.merge(reports).merge(events);
    own.merge(extra)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state, guard))
}

/// Serves the router (with the stages' `extra` routes) on `listener`
/// within `limits` until `shutdown` resolves; in-flight requests finish
/// first.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    extra: Router,
    limits: serve::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router_with(state.clone(), extra);
    serve::run(listener, state, app, limits, shutdown).await
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

/// Counts every response, refuses what a browser on another site could
/// have sent, and enforces the token on methods that change state.
async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // Pages say who is signed in (on a node with tokens).
    let signed_in = (!state.tokens.is_empty()).then(|| state.sessions.of(req.headers()));
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let response = if let Some(why) = reserve_refusal(&req) {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, why);
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        r
    } else if let Some((code, why)) = browser_refusal(&state, &req, changes_state) {
        error(code, why)
    } else if let Some((code, why)) = changes_state.then(|| unauthorized(&state, &req)).flatten() {
        error(code, why)
    } else {
        next.run(req).await
    };
    let mut response = match signed_in {
        Some(session) => with_who_line(response, session).await,
        None => response,
    };
    security_headers(&path, response.headers_mut());
    state
        .responses
        .get_or_create(&CodeLabel {
            code: response.status().as_u16(),
        })
        .inc();
    response
}

/// A console page with who is signed in (or a link to sign in) at the end
/// of its header.
async fn with_who_line(response: Response, session: Option<access::Session>) -> Response {
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !html {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the page could not be read",
        );
    };
    let line = match session {
        Some(s) => format!(
            r#"<span id="who">signed in as <b>{}</b> ({} token) · <a href="/signin">sign out</a></span>"#,
            svg::esc(&s.name),
            s.token
        ),
        None => r#"<span id="who"><a href="/signin">sign in</a></span>"#.to_string(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let body = match text.find("</header>") {
        Some(at) => format!("{}{line}{}", &text[..at], &text[at..]),
        None => text.into_owned(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// What every answer says to a browser: scripts only from this node's
/// own files (the pages carry no inline script), no framing, no sniffing,
/// no referrer (a capability link in a URL must not leak to another
/// site). Capability pages and their API are never stored by a cache.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn security_headers(path: &str, headers: &mut axum::http::HeaderMap) {
    use axum::http::HeaderValue;
    let set = |h: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if postmortems::capability_path(path) || postmortems::capability_page(path) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

async fn console_js() -> Response {
    script(console::SCRIPT)
}

async fn forms_js() -> Response {
    script(postmortems::FORMS_JS)
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

/// Why a request on a reserve connection (the node is at its connection
/// cap) is not served: only health and metrics, or a loopback client.
fn reserve_refusal(req: &Request) -> Option<&'static str> {
    req.extensions().get::<serve::OnReserve>()?;
    let loopback = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    if loopback || serve::reserve_allows(req.uri().path()) {
        return None;
    }
    Some("this node is serving as many connections as it may; only /healthz and /metrics answer now: try again shortly")
}

/// The host part of a `Host` header (no port, no IPv6 brackets).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Whether the `Host` a request names is this node: an IP address (never
/// the result of a rebound DNS name), localhost, or a configured name.
fn host_allowed(state: &ApiState, host: &str) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || state
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
}

/// Why a request is refused as one a browser made on another site's
/// behalf, if it is.
///
/// - Every request: a `Host` that is not this node (DNS rebinding: a
///   page on `evil.example` resolved to 127.0.0.1 sends `Host:
///   evil.example`).
/// - State changes: an `Origin` other than this node's, a
///   `Sec-Fetch-Site` other than same-origin or none, and the content
///   types a page may send cross-origin without a preflight (text/plain,
///   form-urlencoded, multipart). Clients that are not browsers send none
///   of these and are not affected: the CLI sends no body, Puppet's report
///   processor sends application/x-yaml, Chef's data collector JSON.
fn browser_refusal(
    state: &ApiState,
    req: &Request,
    changes_state: bool,
) -> Option<(StatusCode, String)> {
    let headers = req.headers();
    let host = match headers.get(header::HOST).map(|h| h.to_str()) {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(_)) => return Some((StatusCode::BAD_REQUEST, "unreadable Host header".into())),
    };
    if let Some(h) = host {
        if !host_allowed(state, h) {
            return Some((
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this node does not answer to host {:?}; add the name to [http] allowed_hosts if it is this node's",
                    host_name(h).chars().take(100).collect::<String>()
                ),
            ));
        }
    }
    if !changes_state {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = host.is_some_and(|h| {
            origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://").or(o.strip_prefix("https://")))
                .is_some_and(|o| o.eq_ignore_ascii_case(h))
        });
        if !same {
            return Some((
                StatusCode::FORBIDDEN,
                "cross-origin request refused: a page on another site may not change this node's state".into(),
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Some((
                StatusCode::FORBIDDEN,
                "cross-site request refused: a page on another site may not change this node's state".into(),
            ));
        }
    }
    // Graphite's clients post JSON with whatever content type their HTTP
    // library picks (curl -d: form-urlencoded). A request with neither
    // Origin nor Sec-Fetch-Site did not come from a current browser.
    let graphite_client = events::GRAPHITE_PATHS.contains(&req.uri().path())
        && headers.get(header::ORIGIN).is_none()
        && headers.get("sec-fetch-site").is_none();
    if let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .filter(|_| !graphite_client)
    {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if matches!(
            essence.as_str(),
            "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        ) {
            return Some((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{essence} is refused for requests that change state: a page on another site could send it; send application/json or no body"),
            ));
        }
    }
    None
}

/// Why a request that changes state is not allowed, if it is not.
fn unauthorized(state: &ApiState, req: &Request) -> Option<(StatusCode, String)> {
    if state.tokens.is_empty() {
        return None;
    }
    let path = req.uri().path();
    // A participant's link and a ballot are capabilities of their own:
    // the handler checks the token in the path. Signing in checks the
    // token in its body.
    if postmortems::capability_path(path) || signin::PATHS.contains(&path) {
        return None;
    }
    let ingest_path = market::REPORT_PATHS.contains(&path) || events::EVENT_PATHS.contains(&path);
    let headers = req.headers();
    if let Some(w) = state.who(headers) {
        if w.grant.operate || (ingest_path && w.grant.ingest) {
            return None;
        }
        return Some((
            StatusCode::FORBIDDEN,
            format!(
                "{} may not change this: {}",
                w.name,
                if ingest_path {
                    "reports and events need an ingest or operator token"
                } else {
                    "it needs the operator token (or the API token)"
                }
            ),
        ));
    }
    // Report senders cannot always set a bearer header: Puppet's http
    // processor sends only what its reporturl holds (user:token@host),
    // chef-client sends `x-data-collector-token`.
    if ingest_path {
        let collector = headers
            .get("x-data-collector-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let given = collector.or_else(|| basic_password(headers));
        if given
            .and_then(|g| state.tokens.find(&g))
            .is_some_and(|(_, g)| g.ingest)
        {
            return None;
        }
    }
    Some((
        StatusCode::UNAUTHORIZED,
        "this endpoint changes state and needs a token: `Authorization: Bearer <token>` (report and event endpoints also take it as the password of basic auth; Chef sends it in x-data-collector-token), or sign in to the console at /signin".into(),
    ))
}

/// The password of `Authorization: Basic ...`, whatever the user name.
fn basic_password(headers: &axum::http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or(value.strip_prefix("basic "))?;
    if encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, p)| p.to_string())
}

/// The output rule: what programs printed (check plugins, escalation
/// steps, log lines, run logs) may hold anything, so it is shown only to
/// requests that may read it: the API, operator or read token, a console
/// session signed in with one of them, or any request on a node with no
/// token at all (only possible on loopback, where the machine's users are
/// trusted).
pub(crate) fn holds_token(state: &ApiState, headers: &axum::http::HeaderMap) -> bool {
    state.who(headers).is_some_and(|w| w.grant.read)
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
}

async fn healthz(State(s): State<Shared>) -> Json<serde_json::Value> {
    match (&s.server_off, &s.escalator) {
        (Some(why), _) => Json(json!({
            "status": "degraded",
            "node": s.mesh.id(),
            "server_role": "off",
            "server_off_reason": why,
        })),
        (None, Some(_)) => {
            Json(json!({ "status": "ok", "node": s.mesh.id(), "server_role": "on" }))
        }
        (None, None) => Json(json!({ "status": "ok", "node": s.mesh.id(), "server_role": "none" })),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn graph(State(s): State<Shared>) -> Json<serde_json::Value> {
    let g = s.mesh.graph().await;
    Json(json!({
        "served_by": s.mesh.id(),
        "nodes": g.nodes,
        "edges": g.edges,
    }))
}

async fn nodes(State(s): State<Shared>) -> Json<serde_json::Value> {
    let g = s.mesh.graph().await;
    Json(json!({ "nodes": g.nodes }))
}

/// Counts by state, the nodes that are not up and the broken links: what a
/// script or a dashboard needs without the whole graph.
async fn summary(State(s): State<Shared>) -> Json<serde_json::Value> {
    let g = s.mesh.graph().await;
    let node_states = count_by(g.nodes.iter().map(|n| n.state.as_str()));
    let edge_states = count_by(g.edges.iter().map(|e| e.state.as_str()));
    let troubled: Vec<serde_json::Value> = g
        .nodes
        .iter()
        .filter(|n| n.state != gemba_mesh::NodeState::Up)
        .map(|n| json!({ "id": n.id, "state": n.state }))
        .collect();
    // Broken links as the graph has them: state, loss kind, failing
    // flows and the reason in words.
    let broken = g.broken_links();
    Json(json!({
        "served_by": s.mesh.id(),
        "nodes": g.nodes.len(),
        "edges": g.edges.len(),
        "node_states": node_states,
        "edge_states": edge_states,
        "nodes_not_up": troubled,
        "broken_links": broken,
    }))
}

async fn links(State(s): State<Shared>) -> Json<serde_json::Value> {
    let links: Vec<serde_json::Value> = s
        .mesh
        .local_links()
        .into_iter()
        .map(|(target, summary)| {
            let mut v = serde_json::to_value(summary).unwrap_or_default();
            v["source"] = json!(s.mesh.id());
            v["target"] = json!(target);
            v
        })
        .collect();
    Json(json!({ "observer": s.mesh.id(), "links": links }))
}

fn count_by<'a>(keys: impl Iterator<Item = &'a str>) -> std::collections::BTreeMap<&'a str, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for k in keys {
        *counts.entry(k).or_insert(0) += 1;
    }
    counts
}

/// Every probe outcome of one outgoing link in the window, oldest first:
/// the full-resolution history that never travels in gossip.
async fn link_history(State(s): State<Shared>, Path(target): Path<String>) -> Response {
    let Some((summary, history)) = s.mesh.link_history(&target) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("{} does not probe {target:?}", s.mesh.id()),
        );
    };
    Json(json!({ "source": s.mesh.id(), "target": target, "summary": summary, "probes": history }))
        .into_response()
}

async fn console_page(State(s): State<Shared>) -> Html<String> {
    let g = s.mesh.graph().await;
    Html(console::render_page(
        s.mesh.id(),
        &s.mesh.settings().site,
        &g,
    ))
}

async fn console_panel(State(s): State<Shared>) -> Html<String> {
    let g = s.mesh.graph().await;
    Html(console::render_panel(s.mesh.id(), &g))
}
