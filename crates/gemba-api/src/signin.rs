//! Signing in to the console with a token: a person names themselves and
//! gives a token; the node answers with a session cookie (HttpOnly,
//! SameSite=Strict, Secure behind HTTPS, 12 hours) that grants what the
//! token grants. Pages then show who is signed in, and the journal records
//! their name for what they do.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::Json;
use serde_json::json;

use crate::access::{Grant, COOKIE, SESSION_TTL};
use crate::respond::{Answer, ApiError};
use crate::Shared;

/// The session endpoints that change state without a token: signing in
/// checks the token in its body, signing out ends only the caller's own
/// session.
pub(crate) const PATHS: &[&str] = &["/api/v1/session", "/api/v1/session/end"];

fn may(g: Grant) -> serde_json::Value {
    json!({"ingest": g.ingest, "operate": g.operate, "read": g.read})
}

/// Whether the browser reached this node over HTTPS (directly, or through
/// a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    let says = |name: &str, https: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with(https))
    };
    says("x-forwarded-proto", "https") || says("origin", "https://")
}

/// `POST /api/v1/session` with `{"name", "token"}`.
pub(crate) async fn start(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Answer {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SignIn {
        name: String,
        token: String,
    }
    let SignIn { name, token } = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is {{\"name\", \"token\"}}: {e}")))?;
    if !gemba_core::ids::is_name(&name) {
        return Err(ApiError::bad("name: 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit (the journal records it)"));
    }
    if token.len() > 1024 {
        return Err(ApiError::bad("not a token"));
    }
    let Some((label, grant)) = s.tokens.find(token.trim()) else {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "not a token of this node".into(),
        ));
    };
    let Some(cookie) = s.sessions.start(&name, label, grant) else {
        return Err(ApiError::unavailable(
            "this node holds as many sessions as it may; try again later",
        ));
    };
    let set = format!(
        "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if over_tls(&headers) { "; Secure" } else { "" }
    );
    Ok((
        [(header::SET_COOKIE, set)],
        Json(json!({"name": name, "token": label, "may": may(grant)})),
    )
        .into_response())
}

/// `POST /api/v1/session/end`: signs out.
pub(crate) async fn end(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    s.sessions.end(&headers);
    Ok((
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Json(json!({"signed_out": true})),
    )
        .into_response())
}

/// `GET /api/v1/session`: who this request is.
pub(crate) async fn whoami(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    match s.who(&headers) {
        Some(w) => Ok(Json(json!({"name": w.name, "may": may(w.grant)})).into_response()),
        None => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "not signed in, and no token sent".into(),
        )),
    }
}

/// `/signin`: the console's sign-in page.
pub(crate) async fn page(State(s): State<Shared>, headers: HeaderMap) -> Answer {
    let body = match s.sessions.of(&headers) {
        _ if s.tokens.is_empty() => r#"<p id="no-tokens">This node has no token: it listens on loopback only, and everyone who can reach it sees and does everything. There is nothing to sign in to.</p>"#.to_string(),
        Some(session) => format!(
            r#"<p id="signed-in">Signed in as <b>{}</b> with the {} token.</p><form id="signout" data-post="/api/v1/session/end" data-done="/signin"><p><button>sign out</button><span class="out"></span></p></form>"#,
            crate::svg::esc(&session.name),
            session.token
        ),
        None => r#"<p>Sign in with one of this node's tokens: the API token, or the operator, read or ingest token. You then see and do in the console what the token allows, under the name you give (the journal records it).</p>
<form id="signin" data-post="/api/v1/session" data-done="/"><label>your name <input name="name" required maxlength="64"></label><label>token <input name="token" type="password" required autocomplete="off"></label><p><button>sign in</button><span class="out"></span></p></form>"#
            .to_string(),
    };
    Ok(Html(crate::console::shell(
        s.mesh.id(),
        "sign in",
        &format!(r#"<style>label{{display:block;margin-top:.5em;font-weight:600}}.refused{{color:#d62728;font-weight:600}}</style>{body}<script src="/assets/forms.js"></script>"#),
        None,
    ))
    .into_response())
}
