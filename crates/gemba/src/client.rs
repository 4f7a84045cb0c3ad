//! The CLI's one way to talk to a node's API: typed answers, one error
//! style ("<url>: HTTP 409: <the node's error>"), the token and the user
//! name on requests that change state.

use anyhow::{bail, Context};
use gemba_escalator::engine::Plan;
use gemba_escalator::Escalation;
use gemba_mesh::Graph;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// `GET /api/v1/graph`.
#[derive(Debug, Deserialize)]
pub struct GraphAnswer {
    pub served_by: String,
    #[serde(flatten)]
    pub graph: Graph,
}

/// `GET /api/v1/plan`.
#[derive(Debug, Deserialize)]
pub struct PlanAnswer {
    pub plan: Plan,
}

/// `GET /api/v1/escalations`.
#[derive(Debug, Deserialize)]
pub struct EscalationsAnswer {
    pub escalations: Vec<Escalation>,
}

/// One journal line of an escalation.
#[derive(Debug, Deserialize)]
pub struct JournalLine {
    pub at_ms: u64,
    pub kind: String,
    pub text: String,
}

/// `GET /api/v1/escalations/{id}`.
#[derive(Debug, Deserialize)]
pub struct EscalationAnswer {
    #[serde(flatten)]
    pub escalation: Escalation,
    pub journal: Vec<JournalLine>,
}

/// `POST /api/v1/escalations/{id}/approve`.
#[derive(Debug, Deserialize)]
pub struct Approved {
    pub approved: u64,
}

/// `POST /api/v1/scopes/{scope}/ack`.
#[derive(Debug, Deserialize)]
pub struct Acknowledged {
    pub acknowledged: u64,
}

pub struct Client {
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The answer's body as sent (for `--json`).
    pub fn get_raw(&self, path: &str) -> anyhow::Result<String> {
        let url = self.url(path);
        let mut req = ureq::get(&url).config().http_status_as_error(false).build();
        // With the token, a node shows program output too.
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let r = req.call().with_context(|| format!("cannot reach {url}"))?;
        answer(&url, r)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.get_raw(path)?;
        parse(&self.url(path), &body)
    }

    pub fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = self.url(path);
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
        let mut req = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("x-gemba-user", &user);
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let r = req
            .send_empty()
            .with_context(|| format!("cannot reach {url}"))?;
        let body = answer(&url, r)?;
        parse(&url, &body)
    }
}

impl Client {
    /// Posts a JSON body; the answer as `T`.
    pub fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let url = self.url(path);
        let text = body.to_string();
        let (status, answer) = self.send(path, "application/json", text.as_bytes())?;
        if status != 200 {
            bail!("{url}: HTTP {status}: {}", error_text(&answer));
        }
        parse(&url, &answer)
    }

    /// Posts bytes as they are; the status and the body of the answer,
    /// whatever the status (an import reports refusals, it does not stop).
    pub fn send(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        let url = self.url(path);
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
        let mut req = ureq::post(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", content_type)
            .header("x-gemba-user", &user);
        if let Some(t) = &self.token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let mut r = req
            .send(body)
            .with_context(|| format!("cannot reach {url}"))?;
        let status = r.status().as_u16();
        let text = r
            .body_mut()
            .read_to_string()
            .with_context(|| format!("cannot read the answer of {url}"))?;
        Ok((status, text))
    }

    /// The `error` of an API answer.
    pub fn error_of(body: &str) -> String {
        error_text(body)
    }
}

fn answer(url: &str, mut r: ureq::http::Response<ureq::Body>) -> anyhow::Result<String> {
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer of {url}"))?;
    if status != 200 {
        bail!("{url}: HTTP {status}: {}", error_text(&body));
    }
    Ok(body)
}

fn parse<T: DeserializeOwned>(url: &str, body: &str) -> anyhow::Result<T> {
    serde_json::from_str(body).with_context(|| format!("{url} did not answer as a gemba node does"))
}

/// The `error` field of an API error, or the body itself.
fn error_text(body: &str) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
    }
    serde_json::from_str::<ApiError>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| body.to_string())
}
