//! The learn stage over HTTP: change events (native, Graphite- and
//! Grafana-shaped), series and charts, incidents, post-mortems and their
//! action items, and the console's pages for them.

pub(crate) mod events;
pub(crate) mod incidents;
pub(crate) mod pages;
pub(crate) mod postmortem_page;
pub(crate) mod postmortems;

use axum::routing::{get, post};
use axum::Router;

use crate::Shared;

/// The learn stage's routes; bodies are capped at the events' limit.
pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/events", get(events::list).post(events::add))
        .route("/api/v1/events/{id}", get(events::one))
        .route("/api/v1/series", get(events::series))
        .route("/api/v1/processes", get(events::processes))
        .route("/api/v1/chart.svg", get(events::chart_svg))
        .route("/api/v1/chart.png", get(events::chart_png))
        .route("/api/v1/chart/send", post(events::chart_send))
        .route("/charts", get(pages::charts_page))
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
        .route("/pm/{token}", get(postmortem_page::seat_page))
        .route("/ballots/{token}", get(postmortem_page::ballot_page))
        .route("/incidents", get(incidents::list_page))
        .route("/incidents/{id}", get(incidents::page))
        .route("/events", get(pages::events_page).post(events::graphite))
        .route("/events/{id}", get(pages::event_page))
        .route("/events/", post(events::graphite))
        .route(
            "/api/annotations",
            post(events::grafana).get(events::grafana_list),
        )
        .route("/api/annotations/graphite", post(events::grafana_graphite))
        .layer(axum::extract::DefaultBodyLimit::max(
            gemba_timeline::event::MAX_BODY,
        ))
}
