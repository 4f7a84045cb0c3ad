//! Every request passes here first: the host and origin checks that keep
//! other sites and DNS rebinding out, the token or session a state change
//! needs, the security headers of every answer, and the line saying who
//! is signed in.

use super::*;

/// Counts every response, refuses what a browser on another site could
/// have sent, and enforces the token on methods that change state.
pub(super) async fn guard(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // Console pages say who is signed in (on a node with tokens); what the
    // API answers (an exported market, say) is left as it is.
    let signed_in = (!state.tokens.is_empty() && !path.starts_with("/api/"))
        .then(|| state.sessions.of(req.headers()));
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
pub(super) async fn with_who_line(
    response: Response,
    session: Option<access::Session>,
) -> Response {
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
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn security_headers(path: &str, headers: &mut axum::http::HeaderMap) {
    use axum::http::HeaderValue;
    let set = |h: &mut axum::http::HeaderMap, name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if learn::postmortems::capability_path(path) || learn::postmortem_page::capability_page(path) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Why a request on a reserve connection (the node is at its connection
/// cap) is not served: only health and metrics, or a loopback client.
pub(super) fn reserve_refusal(req: &Request) -> Option<&'static str> {
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
pub(super) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Whether the `Host` a request names is this node: an IP address (never
/// the result of a rebound DNS name), localhost, or a configured name.
pub(super) fn host_allowed(state: &ApiState, host: &str) -> bool {
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
pub(super) fn browser_refusal(
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
    let graphite_client = learn::events::GRAPHITE_PATHS.contains(&req.uri().path())
        && headers.get(header::ORIGIN).is_none()
        && headers.get("sec-fetch-site").is_none();
    if let Some(essence) = content_type(headers).filter(|_| !graphite_client) {
        if matches!(
            essence.as_str(),
            "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        ) {
            // A report path names what it takes.
            let why = review::type_refusal(req.uri().path(), &essence).unwrap_or_else(|| {
                format!("{essence} is refused for requests that change state: a page on another site could send it; send application/json or no body")
            });
            return Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, why));
        }
    }
    None
}

/// A request's media type without its parameters, lowercase
/// (`application/json` of `Application/JSON; charset=utf-8`).
pub(crate) fn content_type(headers: &axum::http::HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?;
    Some(
        ct.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Why a request that changes state is not allowed, if it is not.
pub(super) fn unauthorized(state: &ApiState, req: &Request) -> Option<(StatusCode, String)> {
    if state.tokens.is_empty() {
        return None;
    }
    let path = req.uri().path();
    // A participant's link and a ballot are capabilities of their own:
    // the handler checks the token in the path. Signing in checks the
    // token in its body.
    if learn::postmortems::capability_path(path) || signin::PATHS.contains(&path) {
        return None;
    }
    let ingest_path =
        review::REPORT_PATHS.contains(&path) || learn::events::EVENT_PATHS.contains(&path);
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
pub(super) fn basic_password(headers: &axum::http::HeaderMap) -> Option<String> {
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

/// Whether the request may change state (the operate grant): the console
/// shows its buttons (action items done or reopened) only then.
pub(crate) fn may_operate(state: &ApiState, headers: &axum::http::HeaderMap) -> bool {
    state.who(headers).is_some_and(|w| w.grant.operate)
}
