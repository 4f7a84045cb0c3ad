//! Console pages of the review stage: the morning market, one problem
//! with its nodes, runs and the sample run's resources and logs, and a
//! node's runs. Plain HTML rendered here; every value from a report is
//! escaped.

use gemba_market::market::Entry;
use gemba_market::problem::Problem;
use gemba_market::run::{ResourceOutcome, Run};
use gemba_market::time::format_ms;
use gemba_store::RunRow;
use gemba_views::edition::{day, Edition};

use crate::svg::esc;

fn page(node: &str, title: &str, body: &str) -> String {
    crate::console::shell(node, title, body, None)
}

/// One section: `entries` shown, of `total`, `left` left out.
fn table(entries: &[&Entry], heading: &str, total: usize, left: usize) -> String {
    if entries.is_empty() && left == 0 {
        return String::new();
    }
    let mut out = format!(
        "<h3>{}{}</h3><table class=\"problems\"><tr><th>id</th><th>severity</th><th>kind</th><th>problem</th><th>nodes</th><th>owner</th><th>age</th><th>cause</th></tr>",
        esc(heading),
        if total > 0 {
            format!(" ({total})")
        } else {
            String::new()
        }
    );
    for e in entries {
        out.push_str(&format!(
            "<tr><td class=\"nw\"><a href=\"/market/problems/{id}\">{id}</a></td><td class=\"nw sev-{sev}\">{sev}</td><td class=\"nw\">{kind}</td><td>{title}<br><span class=\"muted\">{why}</span></td><td>{nodes}</td><td>{owner}</td><td>{age}d</td><td>{cause}</td></tr>",
            id = esc(&e.id),
            sev = e.severity,
            kind = e.kind,
            title = esc(&e.title),
            why = esc(&e.why),
            nodes = e.nodes,
            owner = esc(e.owner.as_deref().unwrap_or("—")),
            age = e.age_days,
            cause = esc(e.cause.as_deref().unwrap_or("unknown")),
        ));
    }
    out.push_str("</table>");
    if left > 0 {
        out.push_str(&format!(
            "<p class=\"muted\">… and {left} more: <a href=\"/api/v1/problems\">all problems</a> (or <code>gemba problem list</code>).</p>"
        ));
    }
    out
}

/// The market page: the edition's problems, then its open action items.
/// The market page; `controls`: with the buttons of those who may change
/// state (an action item done).
pub fn render(node: &str, ed: &Edition, controls: bool) -> String {
    let m = &ed.market;
    let mut body = format!(
        "<p>{} → {} · {} runs from {} nodes, {} failed · {} new, {} regressed, {} still open, {} resolved</p>",
        esc(&m.since),
        esc(&m.until),
        m.runs.runs,
        m.runs.nodes,
        m.runs.failed,
        m.new.len(),
        m.regressed.len(),
        m.open.len(),
        m.resolved.len()
    );
    // What most needs a look first, by score across statuses; then each
    // section without those, capped.
    let attention = m.needs_attention();
    let unresolved = m.new.len() + m.regressed.len() + m.open.len();
    body.push_str(&table(
        &attention,
        &format!(
            "Needs attention: {} of {unresolved} unresolved, by score",
            attention.len()
        ),
        0,
        0,
    ));
    for (name, list) in [
        ("New", &m.new),
        ("Regressed", &m.regressed),
        ("Still open", &m.open),
        ("Resolved", &m.resolved),
    ] {
        let (shown, left) = gemba_market::market::Market::shown(list, &attention);
        body.push_str(&table(&shown, name, list.len(), left));
    }
    if m.history > 0 {
        body.push_str(&format!(
            "<p class=\"muted\">{} unresolved problem(s) not seen within the retention are history, not listed: <a href=\"/api/v1/problems?status=unresolved\">all unresolved problems</a>.</p>",
            m.history
        ));
    }
    if m.new.len() + m.regressed.len() + m.open.len() + m.resolved.len() == 0 {
        body.push_str("<p>No problems: every run was clean.</p>");
    }
    body.push_str(&actions_html(ed, controls));
    body.push_str("<p class=\"muted\">Assign with <code>gemba problem assign P-1 alice</code> or <code>POST /api/v1/problems/P-1 {\"owner\": \"alice\"}</code>. Text: <a href=\"/api/v1/market?format=text\">/api/v1/market?format=text</a>.</p>");
    page(node, "Morning market", &body)
}

/// The open action items of post-mortems, overdue ones marked.
fn actions_html(ed: &Edition, controls: bool) -> String {
    let mut b = String::from(r#"<h2>action items from post-mortems</h2>"#);
    if let Some(why) = &ed.actions_unread {
        b.push_str(&format!(r#"<p class="st-CRITICAL">{}</p>"#, esc(why)));
        return b;
    }
    if ed.actions.is_empty() {
        b.push_str(r#"<p class="muted">None open.</p>"#);
        return b;
    }
    b.push_str(r#"<table id="action-items"><tr><th>id</th><th>action</th><th>owner</th><th>due</th><th>from</th></tr>"#);
    for a in &ed.actions {
        b.push_str(&format!(
            r#"<tr class="action"><td>A-{id}</td><td>{text}</td><td>{owner}</td><td class="nw{late}">{due}</td><td><a href="/incidents/{inc}">I-{inc}</a> {button}</td></tr>"#,
            id = a.id,
            text = esc(&a.text),
            owner = esc(&a.owner),
            late = if ed.overdue(a) { " st-CRITICAL" } else { "" },
            due = a.due().map(day).unwrap_or_else(|| "—".into()),
            inc = a.incident,
            button = if controls {
                crate::learn::postmortem_page::action_button(a.id, true)
            } else {
                String::new()
            },
        ));
    }
    if controls {
        b.push_str(r#"<script src="/assets/forms.js"></script>"#);
    }
    b.push_str(
        r#"</table><p class="muted">Mark one done with <code>gemba actions done ID</code>.</p>"#,
    );
    b
}

pub fn render_problem(node: &str, p: &Problem, run: Option<&Run>, now: u64) -> String {
    let mut body = format!(
        "<p><b>{title}</b></p><table><tr><th>kind</th><td>{kind}</td></tr><tr><th>why</th><td>{why}</td></tr><tr><th>status</th><td>{status}</td></tr><tr><th>severity</th><td>{sev} (score {score})</td></tr><tr><th>category</th><td>{cat}</td></tr><tr><th>cause</th><td>{cause}</td></tr><tr><th>owner</th><td>{owner}</td></tr><tr><th>first seen</th><td>{first}</td></tr><tr><th>last seen</th><td>{last}</td></tr><tr><th>occurrences</th><td>{occ} in {nodes} node(s)</td></tr><tr><th>sample</th><td>{snode}: {res} {msg}{loc}</td></tr><tr><th>signature</th><td><code>{sig}</code></td></tr></table>",
        title = esc(&p.title),
        kind = p.kind.as_str(),
        why = esc(&p.why),
        status = p.status.as_str(),
        sev = p.severity.as_str(),
        score = p.score(now),
        cat = esc(&p.category),
        cause = esc(p.cause.as_deref().unwrap_or("unknown")),
        owner = esc(p.owner.as_deref().unwrap_or("—")),
        first = format_ms(p.first_seen_ms),
        last = format_ms(p.last_seen_ms),
        occ = p.occurrences,
        nodes = p.nodes_total,
        snode = esc(&p.sample.node),
        res = esc(p.sample.resource.as_deref().unwrap_or("")),
        msg = esc(&p.sample.message),
        loc = match (&p.sample.file, p.sample.line) {
            (Some(f), Some(l)) => format!(" <span class=\"muted\">at {}:{l}</span>", esc(f)),
            (Some(f), None) => format!(" <span class=\"muted\">in {}</span>", esc(f)),
            _ => String::new(),
        },
        sig = esc(&p.signature),
    );
    body.push_str("<h3>Nodes</h3><table><tr><th>node</th><th>first</th><th>last</th><th>times</th><th>clean runs since</th></tr>");
    for (n, ev) in &p.nodes {
        body.push_str(&format!(
            "<tr><td><a href=\"/market/nodes/{n}\">{n}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_ms(ev.first_ms),
            format_ms(ev.last_ms),
            ev.count,
            ev.clean_runs,
            n = esc(n)
        ));
    }
    body.push_str("</table>");
    if !p.notes.is_empty() {
        body.push_str("<h3>Notes</h3><ul>");
        for note in &p.notes {
            body.push_str(&format!(
                "<li>{} — {}</li>",
                format_ms(note.at_ms),
                esc(&note.text)
            ));
        }
        body.push_str("</ul>");
    }
    if !p.history.is_empty() {
        body.push_str("<h3>History</h3><table id=\"history\"><tr><th>when</th><th>what</th><th>from</th><th>to</th><th>by</th></tr>");
        for c in &p.history {
            body.push_str(&format!(
                "<tr><td class=\"nw\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                format_ms(c.at_ms),
                esc(&c.field),
                esc(c.from.as_deref().unwrap_or("—")),
                esc(c.to.as_deref().unwrap_or("—")),
                esc(&c.by)
            ));
        }
        body.push_str("</table>");
    }
    if let Some(run) = run {
        body.push_str(&format!(
            "<h3>The sample run {} on {}</h3><table><tr><th>resource</th><th>outcome</th><th>message</th></tr>",
            esc(&run.key),
            esc(&run.node)
        ));
        for r in &run.resources {
            let outcome = match r.outcome {
                ResourceOutcome::Changed => "changed",
                ResourceOutcome::Failed => "failed",
                ResourceOutcome::Skipped => "skipped",
            };
            body.push_str(&format!(
                "<tr><td>{}</td><td>{outcome}</td><td>{}</td></tr>",
                esc(&r.key()),
                esc(&r.message)
            ));
        }
        body.push_str("</table><p class=\"muted\">Logs: <code>GET /api/v1/market/runs/{key}</code> with the API token.</p>");
    }
    page(node, &p.label(), &body)
}

pub fn render_node(node: &str, name: &str, runs: &[RunRow]) -> String {
    let mut body = String::from("<table><tr><th>started</th><th>tool</th><th>status</th><th>duration</th><th>changed</th><th>failed</th><th>total</th><th>environment</th><th>code</th></tr>");
    for r in runs {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_ms(r.started_ms),
            esc(&r.tool),
            esc(&r.status),
            r.duration_ms.map(|d| format!("{:.1} s", d as f64 / 1000.0)).unwrap_or_default(),
            r.changed,
            r.failed,
            r.total,
            esc(&r.environment),
            esc(&r.code_version)
        ));
    }
    body.push_str("</table>");
    if runs.is_empty() {
        body.push_str("<p>No runs stored for this node.</p>");
    }
    page(node, &format!("Runs of {name}"), &body)
}
