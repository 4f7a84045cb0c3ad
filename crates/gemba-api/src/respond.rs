//! Every answer's shape, in one place: an error is a status and a
//! message that names what is wrong, rendered as `{"error": "..."}`; each
//! stage's error converts to the status that fits it (bad input 400,
//! missing 404, a refusal 409, the store or a stage unavailable 503).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gemba_escalator::EscalatorError;
use gemba_market::service::MarketError;
use gemba_timeline::postmortem::PmError;
use gemba_timeline::TimelineError;
use serde_json::json;

/// The JSON error answer.
pub(crate) fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({ "error": message.into() }))).into_response()
}

/// An error answer: status and message, rendered as JSON.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

/// How long a client is asked to wait before trying again after a 503.
pub(crate) const RETRY_AFTER_S: u64 = 5;

impl IntoResponse for ApiError {
    /// A 503 says when to try again (`Retry-After`), so that clients and
    /// load balancers back off instead of hammering a store that is down.
    fn into_response(self) -> Response {
        let unavailable = self.0 == StatusCode::SERVICE_UNAVAILABLE;
        let mut r = error(self.0, self.1);
        if unavailable {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_S),
            );
        }
        r
    }
}

impl From<EscalatorError> for ApiError {
    /// Refusals are conflicts with the escalation's state; an escalator
    /// that is not running, or its store failing, is unavailable (try
    /// again); a stored record this gemba cannot read is ours.
    fn from(e: EscalatorError) -> ApiError {
        let code = match &e {
            EscalatorError::Refused(_) => StatusCode::CONFLICT,
            EscalatorError::NotRunning | EscalatorError::Stopped | EscalatorError::Store(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            EscalatorError::Unreadable(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

pub(crate) type Answer = Result<Response, ApiError>;

impl ApiError {
    /// 400: the request is wrong; `why` names what.
    pub(crate) fn bad(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, why.into())
    }

    /// 404: nothing by that name or number.
    pub(crate) fn not_found(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, why.into())
    }

    /// 503: this node cannot answer that now (no server role, a stage
    /// stopping, the store down).
    pub(crate) fn unavailable(why: impl Into<String>) -> ApiError {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, why.into())
    }
}

impl From<TimelineError> for ApiError {
    fn from(e: TimelineError) -> ApiError {
        match e {
            TimelineError::Invalid(why) => ApiError(StatusCode::BAD_REQUEST, why.0),
            TimelineError::Store(e) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored, try again: {e}"),
            ),
        }
    }
}

impl From<MarketError> for ApiError {
    fn from(e: MarketError) -> ApiError {
        match e {
            MarketError::NoProblem(id) => {
                ApiError(StatusCode::NOT_FOUND, format!("no problem {id}"))
            }
            MarketError::Invalid(why) => ApiError(StatusCode::BAD_REQUEST, why),
            MarketError::Store(e) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not stored, try again: {e}"),
            ),
            MarketError::Stopped => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the market is stopping".into(),
            ),
        }
    }
}

impl From<gemba_store::StoreError> for ApiError {
    fn from(e: gemba_store::StoreError) -> ApiError {
        MarketError::from(e).into()
    }
}

impl From<PmError> for ApiError {
    fn from(e: PmError) -> ApiError {
        let code = match &e {
            PmError::Invalid(_) => StatusCode::BAD_REQUEST,
            PmError::Forbidden(_) => StatusCode::FORBIDDEN,
            PmError::NotFound(_) => StatusCode::NOT_FOUND,
            PmError::Conflict(_) => StatusCode::CONFLICT,
            PmError::Unclaimed(_) => StatusCode::FORBIDDEN,
            PmError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}
