//! Console pages of the review stage: the morning market with its days,
//! one problem with its nodes, the failing resource's own log lines and
//! the controls to assign and close it, a run, the node index and a node's
//! runs. Plain HTML rendered here; every value from a report is escaped.
//!
//! What a reader without the token sees: everything but what programs
//! printed. A problem's log lines and a run's logs may carry anything a
//! manifest or command wrote (a password on a command line), so they are
//! shown only to readers who hold a token or a console session with one,
//! as the API does; the others see that they are hidden and why.

use gemba_market::detect::NodeHistory;
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
pub fn render(node: &str, ed: &Edition, controls: bool, days: Option<&Days>) -> String {
    let m = &ed.market;
    let mut body = days.map(|d| d.nav("/market")).unwrap_or_default();
    body += &format!(
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
    if let Some(at) = &m.recorded {
        body.push_str(&format!(
            "<p id=\"recorded\" class=\"muted\">As recorded at {}.{}</p>",
            esc(at),
            if m.changed_since.is_empty() {
                " Nothing changed since."
            } else {
                " Changed since:"
            }
        ));
        if !m.changed_since.is_empty() {
            body.push_str("<ul id=\"changed-since\">");
            for line in &m.changed_since {
                body.push_str(&format!("<li>{}</li>", esc(line)));
            }
            body.push_str("</ul>");
        }
    }
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

/// The market as one HTML file to send (a mail, a wiki): its style inline,
/// no script, and every link absolute from `base`, so it works away from
/// the console.
pub fn render_export(node: &str, ed: &Edition, base: &str) -> String {
    let page = render(node, ed, false, None);
    // Every link is ours and starts `href="/`; values from reports are
    // escaped, so none of them can hold that sequence.
    let base = esc(base);
    page.replace("href=\"/", &format!("href=\"{base}/"))
        .replace("src=\"/", &format!("src=\"{base}/"))
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

/// What the reader of a page may see and do.
#[derive(Clone, Copy)]
pub struct Reader {
    /// What programs printed (log lines).
    pub output: bool,
    /// Change state: the forms to assign, close and retire.
    pub operate: bool,
}

/// A page's day, and the days before and after it (none after today).
pub struct Days {
    pub day: String,
    pub prev: String,
    pub next: Option<String>,
}

impl Days {
    fn nav(&self, path: &str) -> String {
        let next = match &self.next {
            Some(n) => format!(" · <a id=\"next-day\" href=\"{path}?date={n}\">{n} →</a>"),
            None => String::new(),
        };
        format!(
            "<p class=\"days\"><a id=\"prev-day\" href=\"{path}?date={p}\">← {p}</a> · <b>{d}</b>{next}</p>",
            p = esc(&self.prev),
            d = esc(&self.day),
        )
    }
}

const FORM_STYLE: &str = "<style>form.inline{display:inline-block;margin:.2em .6em .2em 0}.out{margin-left:.4em}.refused{color:#d62728;font-weight:600}input,select{font:inherit}</style>";

/// The forms that change a problem (owner, cause, severity, close or
/// reopen), posting to its API path with the console session.
fn problem_forms(p: &Problem) -> String {
    let path = format!("/api/v1/problems/{}", p.label());
    let sev: String = gemba_market::problem::Severity::ALL
        .iter()
        .map(|v| {
            format!(
                "<option{}>{}</option>",
                if *v == p.severity { " selected" } else { "" },
                v.as_str()
            )
        })
        .collect();
    let mut b = format!(
        r#"{FORM_STYLE}<h3>Act</h3><div id="problem-forms">
<form class="inline" id="assign" data-post="{path}"><label>owner <input name="owner" value="{owner}" size="12"></label> <button>assign</button><span class="out"></span></form>
<form class="inline" id="cause" data-post="{path}"><label>cause <input name="cause" value="{cause}" size="30"></label> <button>set cause</button><span class="out"></span></form>
<form class="inline" id="severity" data-post="{path}"><label>severity <select name="severity">{sev}</select></label> <button>set</button><span class="out"></span></form>"#,
        owner = esc(p.owner.as_deref().unwrap_or("")),
        cause = esc(p.cause.as_deref().unwrap_or("")),
    );
    if p.closed.is_some() {
        b.push_str(&format!(
            r#"<form class="inline" id="reopen" data-post="{path}" data-extra='{{"reopen":true}}'><button>reopen</button><span class="out"></span></form>"#
        ));
    } else if p.is_open() {
        b.push_str(&format!(
            r#"<form class="inline" id="close" data-post="{path}"><label>close as <select name="close"><option>wont-fix</option><option>fixed-outside</option></select></label> <button>close</button><span class="out"></span></form>
<form class="inline" id="duplicate" data-post="{path}" data-duplicate><label>duplicate of <input name="close" placeholder="duplicate of P-1" size="16"></label> <button>close</button><span class="out"></span></form>"#
        ));
    }
    b.push_str(r#"<form class="inline" id="note" data-post=""#);
    b.push_str(&path);
    b.push_str(r#""><label>note <input name="note" size="40"></label> <button>add</button><span class="out"></span></form></div><script src="/assets/forms.js"></script>"#);
    b
}

pub fn render_problem(node: &str, p: &Problem, run: Option<&Run>, now: u64, who: Reader) -> String {
    let mut body = format!(
        "<p><b>{title}</b></p><table><tr><th>kind</th><td>{kind}</td></tr><tr><th>why</th><td>{why}</td></tr><tr><th>status</th><td>{status}{closed}</td></tr><tr><th>severity</th><td>{sev} (score {score})</td></tr><tr><th>category</th><td>{cat}</td></tr><tr><th>cause</th><td>{cause}</td></tr><tr><th>owner</th><td>{owner}</td></tr><tr><th>first seen</th><td>{first}</td></tr><tr><th>last seen</th><td>{last}</td></tr><tr><th>occurrences</th><td>{occ} in {nodes} node(s)</td></tr><tr><th>sample</th><td><a href=\"/market/nodes/{snode}\">{snode}</a>: {res} {msg}{loc} <a href=\"/market/runs/{srun}\">(the run)</a></td></tr><tr><th>signature</th><td><code>{sig}</code></td></tr></table>",
        title = esc(&p.title),
        kind = p.kind.as_str(),
        why = esc(&p.why),
        status = p.status.as_str(),
        closed = p
            .closed
            .as_ref()
            .map(|c| format!(" (closed by {}: {})", esc(&c.by), esc(&c.reason)))
            .unwrap_or_default(),
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
        srun = esc(&p.sample.run),
        res = esc(p.sample.resource.as_deref().unwrap_or("")),
        msg = esc(&p.sample.message),
        loc = match (&p.sample.file, p.sample.line) {
            (Some(f), Some(l)) => format!(" <span class=\"muted\">at {}:{l}</span>", esc(f)),
            (Some(f), None) => format!(" <span class=\"muted\">in {}</span>", esc(f)),
            _ => String::new(),
        },
        sig = esc(&p.signature),
    );
    if !p.sample.detail.is_empty() {
        body.push_str("<h3>What the run said about it</h3>");
        if who.output {
            body.push_str("<pre id=\"detail\">");
            for line in &p.sample.detail {
                body.push_str(&esc(line));
                body.push('\n');
            }
            body.push_str("</pre>");
        } else {
            body.push_str("<p class=\"muted\" id=\"detail\">Hidden: log lines may hold anything a command printed; sign in (or send the API token) to see them.</p>");
        }
    }
    if who.operate {
        body.push_str(&problem_forms(p));
    }
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
            "<h3>The sample run <a href=\"/market/runs/{k}\">{k}</a> on {}</h3>",
            esc(&run.node),
            k = esc(&run.key),
        ));
        body.push_str(&resources_table(run));
    }
    page(node, &p.label(), &body)
}

fn resources_table(run: &Run) -> String {
    let mut b = String::from(
        "<table id=\"resources\"><tr><th>resource</th><th>outcome</th><th>message</th></tr>",
    );
    for r in &run.resources {
        let outcome = match r.outcome {
            ResourceOutcome::Changed => "changed",
            ResourceOutcome::Failed => "failed",
            ResourceOutcome::Skipped => "skipped",
        };
        b.push_str(&format!(
            "<tr><td>{}</td><td>{outcome}</td><td>{}</td></tr>",
            esc(&r.key()),
            esc(&r.message)
        ));
    }
    b.push_str("</table>");
    b
}

/// A heading and a list of links to problems (nothing when there are none).
fn problem_links(heading: &str, id: &str, problems: &[Problem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut b = format!("<h3>{heading}</h3><ul id=\"{id}\">");
    for p in problems {
        b.push_str(&format!(
            "<li><a href=\"/market/problems/{id}\">{id}</a> {kind}: {title}</li>",
            id = esc(&p.label()),
            kind = p.kind.as_str(),
            title = esc(&p.title)
        ));
    }
    b.push_str("</ul>");
    b
}

/// One run: what it was, its resources, the problems naming it, its logs.
pub fn render_run(node: &str, run: &Run, problems: &[Problem], output: bool) -> String {
    let mut body = format!(
        "<table><tr><th>node</th><td><a href=\"/market/nodes/{n}\">{n}</a></td></tr><tr><th>started</th><td>{started}</td></tr><tr><th>tool</th><td>{tool} {tv}</td></tr><tr><th>status</th><td>{status}{cached}</td></tr><tr><th>environment</th><td>{env}</td></tr><tr><th>code version</th><td>{code}</td></tr><tr><th>resources</th><td>{total} ({changed} changed, {failed} failed, {skipped} skipped)</td></tr></table>",
        n = esc(&run.node),
        started = format_ms(run.started_ms),
        tool = run.tool.as_str(),
        tv = esc(&run.tool_version),
        status = run.status.as_str(),
        cached = if run.catalog_failed { " (no fresh catalog applied)" } else { "" },
        env = esc(&run.environment),
        code = esc(&run.code_version),
        total = run.counts.total,
        changed = run.counts.changed,
        failed = run.counts.failed,
        skipped = run.counts.skipped,
    );
    if let Some(e) = &run.error {
        body.push_str(&format!(
            "<p class=\"st-CRITICAL\">{}: {}</p>",
            esc(&e.class),
            esc(&e.message)
        ));
    }
    body.push_str(&problem_links("Problems", "run-problems", problems));
    body.push_str("<h3>Resources</h3>");
    body.push_str(&resources_table(run));
    body.push_str("<h3>Logs</h3>");
    if !output {
        body.push_str("<p class=\"muted\" id=\"logs\">Hidden: a run's logs may hold anything a command printed; sign in (or send the API token) to see them.</p>");
    } else if run.logs.is_empty() {
        body.push_str("<p class=\"muted\" id=\"logs\">None.</p>");
    } else {
        body.push_str("<table id=\"logs\"><tr><th>level</th><th>source</th><th>message</th></tr>");
        for l in &run.logs {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><pre>{}</pre></td></tr>",
                esc(&l.level),
                esc(&l.source),
                esc(&l.message)
            ));
        }
        body.push_str("</table>");
    }
    page(node, &format!("Run {}", run.key), &body)
}

/// One line of the node index.
pub struct NodeLine {
    pub name: String,
    pub summary: NodeHistory,
    pub open: usize,
}

pub fn render_nodes(node: &str, list: &[NodeLine], now: u64) -> String {
    let mut body = format!(
        "<p>{} node(s) have reported. <a href=\"/api/v1/market/nodes\">JSON</a></p><table id=\"nodes\"><tr><th>node</th><th>environment</th><th>last run</th><th>runs</th><th>failed</th><th>open problems</th><th></th></tr>",
        list.len()
    );
    for n in list {
        let h = &n.summary;
        let state = match &h.retired {
            Some(r) => format!("retired by {} {}", esc(&r.by), format_ms(r.at_ms)),
            None if h.backfilled => "backfilled".into(),
            None => String::new(),
        };
        body.push_str(&format!(
            "<tr><td><a href=\"/market/nodes/{name}\">{name}</a></td><td>{env}</td><td>{last} <span class=\"muted\">({ago} ago)</span></td><td>{runs}</td><td>{failed}</td><td>{open}</td><td class=\"muted\">{state}</td></tr>",
            name = esc(&n.name),
            env = esc(&h.environment),
            last = format_ms(h.last_seen_ms),
            ago = gemba_market::market::human_ms(now.saturating_sub(h.last_seen_ms)),
            runs = h.runs,
            failed = h.failed_runs,
            open = n.open,
        ));
    }
    body.push_str("</table>");
    page(node, "Nodes", &body)
}

/// What a node's page shows.
pub struct NodeView<'a> {
    pub summary: Option<&'a NodeHistory>,
    pub problems: &'a [Problem],
    pub runs: &'a [RunRow],
    /// The day shown, when one is.
    pub days: Option<&'a Days>,
    pub operate: bool,
}

pub fn render_node(node: &str, name: &str, v: NodeView<'_>) -> String {
    let path = format!("/market/nodes/{}", esc(name));
    let mut body = match v.days {
        Some(d) => d.nav(&path),
        None => format!("<p class=\"days\">The newest runs. <a href=\"{path}?date={}\">By day</a> · <a href=\"/market/nodes\">all nodes</a></p>", gemba_market::time::format_ms(v.runs.first().map_or(0, |r| r.started_ms)).get(..10).unwrap_or("")),
    };
    if let Some(h) = v.summary {
        if let Some(r) = &h.retired {
            body.push_str(&format!(
                "<p id=\"retired\">Retired by {} at {}: it left every open problem and is not missed when silent. A new run puts it back.</p>",
                esc(&r.by),
                format_ms(r.at_ms)
            ));
        } else if v.operate {
            body.push_str(&format!(
                r#"{FORM_STYLE}<form class="inline" id="retire" data-post="/api/v1/market/nodes/{n}/retire" data-confirm="Retire {n}? It leaves every open problem (its runs stay), and problems only it kept open resolve."><button>retire this node</button><span class="out"></span></form><script src="/assets/forms.js"></script>"#,
                n = esc(name)
            ));
        }
    }
    body.push_str(&problem_links("Open problems", "node-problems", v.problems));
    body.push_str("<h3>Runs</h3><table id=\"runs\"><tr><th>started</th><th>tool</th><th>status</th><th>duration</th><th>changed</th><th>failed</th><th>total</th><th>environment</th><th>code</th></tr>");
    for r in v.runs {
        body.push_str(&format!(
            "<tr><td><a href=\"/market/runs/{key}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_ms(r.started_ms),
            esc(&r.tool),
            esc(&r.status),
            r.duration_ms.map(|d| format!("{:.1} s", d as f64 / 1000.0)).unwrap_or_default(),
            r.changed,
            r.failed,
            r.total,
            esc(&r.environment),
            esc(&r.code_version),
            key = esc(&r.key),
        ));
    }
    body.push_str("</table>");
    if v.runs.is_empty() {
        body.push_str("<p>No runs stored for this node in this time.</p>");
    }
    page(node, &format!("Node {name}"), &body)
}
