//! Post-mortems in the console: a participant's form (`/pm/{token}`), a
//! ballot (`/ballots/{token}`), the post-mortem part of an incident's page,
//! and the little script behind the forms. The JSON handlers are in
//! `postmortems`.

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse};
use gemba_store::ActionRow;
use gemba_timeline::event::format_ms;
use gemba_timeline::incident::{self, Incident};
use gemba_timeline::postmortem::{self, Count, Phase, PmError, Postmortem};
use gemba_views::edition::day;

use crate::learn::events::timeline;
use crate::respond::{Answer, ApiError};
use crate::svg::esc;
use crate::Shared;

/// The console pages a participant's link or a ballot opens.
pub(crate) fn capability_page(path: &str) -> bool {
    path.starts_with("/pm/") || path.starts_with("/ballots/")
}

/// The little script behind the forms: each `form[data-post]` sends its
/// fields as JSON to that path (checkboxes named alike become a list of
/// numbers, a `data-list` field a list of words), then reloads, goes to
/// `data-done` or to the path the answer names in `data-go`, or shows the
/// answer's links (`data-show="links"`); a
/// refusal is shown beside the form. Timers count down.
pub(crate) const FORMS_JS: &str = r##"
(function(){
  document.querySelectorAll('form[data-post]').forEach(function(f){
    f.addEventListener('submit',async function(e){
      e.preventDefault();
      if(f.dataset.confirm){
        const w=f.dataset.confirmWith&&document.querySelector(f.dataset.confirmWith);
        if(!confirm(f.dataset.confirm+(w?' '+w.textContent:''))) return;
      }
      if(f.dataset.confirmBlank&&!f.querySelector('input[type=checkbox]:checked')&&!confirm(f.dataset.confirmBlank)) return;
      const o={};
      for(const el of f.elements){
        if(!el.name) continue;
        if(el.type==='checkbox'){o[el.name]=o[el.name]||[];if(el.checked)o[el.name].push(Number(el.value));}
        else if(el.dataset.list!==undefined){o[el.name]=el.value.split(/[\s,]+/).filter(function(x){return x;});}
        else if(el.dataset.number!==undefined){o[el.name]=Number(el.value);}
        else{o[el.name]=el.value;}
      }
      if(f.dataset.extra){Object.assign(o,JSON.parse(f.dataset.extra));}
      if(f.dataset.seat!==undefined){const m=/^#seat=([0-9a-f]{64})$/.exec(location.hash);if(m)o.seat=m[1];}
      const out=f.querySelector('.out');
      out.textContent='sending…';
      let r;
      try{r=await fetch(f.dataset.post,{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify(o)});}
      catch(err){out.textContent='not sent: the node did not answer';return;}
      const j=await r.json().catch(function(){return {};});
      if(!r.ok){out.textContent=j.error||('refused: HTTP '+r.status);out.className='out refused';return;}
      if(f.dataset.show==='links'){
        out.textContent='';
        const p=document.createElement('p');p.textContent=j.note||'';out.appendChild(p);
        const ul=document.createElement('ul');ul.id='links';
        (j.links||[]).forEach(function(l){const li=document.createElement('li');const a=document.createElement('a');
          a.href=l.path;a.textContent=location.origin+l.path;li.textContent=l.name+': ';li.appendChild(a);ul.appendChild(li);});
        out.appendChild(ul);return;
      }
      if(f.dataset.go&&typeof j[f.dataset.go]==='string'&&j[f.dataset.go].startsWith('/')){location.href=j[f.dataset.go];return;}
      if(f.dataset.done){location.href=f.dataset.done;}else{location.reload();}
    });
  });
  // The charts form: choosing a node offers that node's processes.
  const cf=document.getElementById('chart-form');
  if(cf&&cf.dataset.processes){
    const byNode=JSON.parse(cf.dataset.processes);
    const node=cf.querySelector('select[name=node]'),proc=cf.querySelector('select[name=process]');
    if(node&&proc){node.addEventListener('change',function(){
      const keep=proc.value;proc.textContent='';
      (byNode[node.value]||[]).forEach(function(p){const o=document.createElement('option');o.value=p;o.textContent=p;if(p===keep)o.selected=true;proc.appendChild(o);});
    });}
  }
  // Live pages: every few seconds the page is read again and each part
  // marked data-live that changed is replaced; forms are left alone, so
  // nothing being typed is lost. A new phase reloads the page, unless
  // something is being typed: then it says so.
  if(document.querySelector('[data-live]')){
    let typing=false;
    document.querySelectorAll('textarea,input').forEach(function(el){el.addEventListener('input',function(){typing=true;});});
    document.querySelectorAll('form').forEach(function(f){f.addEventListener('submit',function(){typing=false;});});
    setInterval(async function(){
      let r;
      try{r=await fetch(location.href,{cache:'no-store',credentials:'same-origin'});}catch(err){return;}
      if(!r.ok) return;
      const doc=new DOMParser().parseFromString(await r.text(),'text/html');
      const was=document.getElementById('phase'),now=doc.getElementById('phase');
      if(was&&now&&was.textContent!==now.textContent){
        if(!typing){location.reload();return;}
        was.textContent=now.textContent+' (reload the page: the phase changed)';
      }
      doc.querySelectorAll('[data-live]').forEach(function(fresh){
        const here=document.querySelector('[data-live="'+fresh.dataset.live+'"]');
        if(here&&here.innerHTML!==fresh.innerHTML&&!here.contains(document.activeElement)){here.innerHTML=fresh.innerHTML;}
      });
    },3000);
  }
  function tick(){
    document.querySelectorAll('[data-ends]').forEach(function(el){
      const left=Math.round((Number(el.dataset.ends)-Date.now())/1000);
      const a=Math.abs(left),t=Math.floor(a/60)+':'+String(a%60).padStart(2,'0');
      el.textContent=left>=0?t+' left':'over by '+t;el.className=left>=0?'clock':'clock over';
    });
  }
  tick();setInterval(tick,1000);
})();
"##;

/// How a page loads [`FORMS_JS`] (served as `/assets/forms.js`).
const FORMS_SCRIPT: &str = r#"<script src="/assets/forms.js"></script>"#;

const PM_STYLE: &str = "<style>textarea{width:100%;max-width:46em;min-height:3.2em;font:inherit}form{margin:.4em 0 1em}.out{margin-left:.6em}.refused{color:#d62728;font-weight:600}.clock{font:600 1.6em ui-monospace,monospace}.over{color:#d62728}.yes{color:#1a7f37;font-weight:600}.no{color:#b87a00;font-weight:600}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5em .8em;margin:.5em 0;max-width:60em}label{display:block;margin-top:.4em;font-weight:600}</style>";

fn page(s: &Shared, title: &str, body: &str) -> axum::response::Response {
    let body = format!("{PM_STYLE}{body}{FORMS_SCRIPT}");
    Html(crate::console::shell(s.mesh.id(), title, &body, None)).into_response()
}

/// A link or ballot refused, as a page with the reason and its status.
fn refused_page(s: &Shared, title: &str, e: PmError) -> axum::response::Response {
    let e = ApiError::from(e);
    let body = format!(r#"<p class="refused">{}</p>"#, esc(&e.1));
    (e.0, page(s, title, &body)).into_response()
}

fn participation_html(pm: &Postmortem) -> String {
    let mut b = String::from(
        r#"<table id="participation"><tr><th>participant</th><th>role</th><th>shared</th></tr>"#,
    );
    for p in &pm.body.participants {
        let missing = p.missing();
        let (class, said) = if missing.is_empty() {
            ("yes", "yes".to_string())
        } else if missing.len() == 3 {
            ("no", "not yet".to_string())
        } else {
            (
                "no incomplete",
                format!("incomplete: no {}", missing.join(", no ")),
            )
        };
        let _ = write!(
            b,
            r#"<tr class="person"><td>{}</td><td class="muted">{}</td><td class="{class}">{said}</td></tr>"#,
            esc(&p.name),
            esc(&pm.roles(&p.name).join(", ")),
        );
    }
    b.push_str("</table>");
    b
}

/// What the post-mortem still takes, said plainly.
fn changes_until(pm: &Postmortem, now_ms: u64) -> String {
    if pm.expired(now_ms) {
        format!(
            "it expired at {} and takes no more changes",
            format_ms(pm.expires_ms)
        )
    } else if pm.phase == Phase::Closed && pm.body.notes_sent_ms.is_none() {
        format!(
            "closed; the note keeper writes on until the notes are sent (at the latest {})",
            format_ms(pm.expires_ms)
        )
    } else if pm.phase == Phase::Closed {
        "closed; the notes were sent".into()
    } else {
        format!("takes changes until {}", format_ms(pm.expires_ms))
    }
}

fn timer_html(pm: &Postmortem, now_ms: u64) -> String {
    if pm.phase == Phase::Closed {
        return match &pm.body.timer {
            Some(t) => format!(
                r#"<p class="muted">The clock stopped when the post-mortem closed (last section: {}).</p>"#,
                esc(&t.section)
            ),
            None => String::new(),
        };
    }
    match &pm.body.timer {
        Some(t) => format!(
            r#"<p>Section <b id="section">{}</b> ({} min, started {}): <span data-ends="{}" class="clock">{}</span></p>"#,
            esc(&t.section),
            t.minutes,
            format_ms(t.started_ms),
            t.ends_ms(),
            if now_ms < t.ends_ms() {
                format!("{} min left", (t.ends_ms() - now_ms).div_ceil(60_000))
            } else {
                "over".into()
            }
        ),
        None => r#"<p class="muted">No section timed yet.</p>"#.into(),
    }
}

fn tally_html(tally: &[Count], pm: &Postmortem) -> String {
    let not_voted = pm.not_voted();
    let mut b = format!(
        r#"<p>{} of {} ballots cast.{}</p><table id="tally"><tr><th>proposal</th><th>approvals</th></tr>"#,
        pm.ballots_cast,
        pm.ballots,
        if not_voted.is_empty() {
            String::new()
        } else {
            format!(" Not voted: {}.", esc(&not_voted.join(", ")))
        }
    );
    for c in tally {
        let _ = write!(
            b,
            r#"<tr class="{}"><td>{}{}</td><td>{}</td></tr>"#,
            if c.winner { "winner" } else { "" },
            esc(&c.text),
            if c.winner { " <b>(chosen)</b>" } else { "" },
            c.approvals
        );
    }
    b.push_str("</table>");
    b
}

/// A button that marks action item `id` done (or open again), for those
/// who may change state; the page reloads when it is taken.
pub(crate) fn action_button(id: i64, done: bool) -> String {
    format!(
        r#"<form class="inline" data-post="/api/v1/actions/{id}" data-extra='{{"done":{done}}}'><button>{label}</button><span class="out"></span></form>"#,
        label = if done { "done" } else { "reopen" }
    )
}

fn actions_html(actions: &[ActionRow], controls: bool) -> String {
    if actions.is_empty() {
        return r#"<p class="muted">No action items yet.</p>"#.into();
    }
    let mut b = String::from(
        r#"<table id="actions"><tr><th>action</th><th>owner</th><th>due</th><th>done</th></tr>"#,
    );
    for a in actions {
        let button = if controls {
            action_button(a.id, a.done_ms.is_none())
        } else {
            String::new()
        };
        let _ = write!(
            b,
            r#"<tr class="action"><td>{}</td><td>{}</td><td class="nw">{}</td><td>{} {button}</td></tr>"#,
            esc(&a.text),
            esc(&a.owner),
            a.due().map(day).unwrap_or_else(|| "—".into()),
            a.done_ms
                .map(|d| day(d).to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    b.push_str("</table>");
    b
}

/// The post-mortem part of an incident's page: who shared (not what,
/// until it closes), proposals, ballots cast, the tally once closed,
/// action items; or a form to start one.
pub(crate) async fn incident_section(s: &Shared, i: &Incident, controls: bool) -> String {
    let Ok(t) = timeline(s) else {
        return String::new();
    };
    let mut b = String::from(r#"<h2>post-mortem</h2>"#);
    let pm = match postmortem::get(t, i.id).await {
        Ok(Some(pm)) => pm,
        Ok(None) => {
            let _ = write!(
                b,
                r#"{PM_STYLE}<p class="muted">Start the post-mortem: name a facilitator, a note keeper and a time keeper, and everyone taking part. Each gets a personal link to a form (no account needed); the links are shown once.</p>
<form id="start" data-post="/api/v1/incidents/{id}/postmortem" data-show="links">
<label>facilitator <input name="facilitator" required></label>
<label>note keeper <input name="note_keeper" required></label>
<label>time keeper <input name="time_keeper" required></label>
<label>participants (names, separated by spaces or commas) <input name="participants" data-list size="60"></label>
<p><button>start the post-mortem</button><span class="out"></span></p></form>{FORMS_SCRIPT}"#,
                id = i.id
            );
            return b;
        }
        Err(_) => return b,
    };
    let _ = write!(
        b,
        r#"<p>Phase <b id="phase">{}</b>; {}. <a href="/api/v1/incidents/{}/postmortem.md">notes as Markdown</a></p>"#,
        pm.phase.as_str(),
        changes_until(&pm, t.now_ms()),
        i.id
    );
    // Parts that change while the post-mortem runs follow it live.
    let live = if pm.phase == Phase::Closed {
        "data-part"
    } else {
        "data-live"
    };
    let _ = write!(
        b,
        r#"<div {live}="timer">{}</div><div {live}="participation">{}</div>"#,
        timer_html(&pm, t.now_ms()),
        participation_html(&pm)
    );
    // Once closed, what was said is public: the round and the notes.
    if pm.phase == Phase::Closed {
        b.push_str("<h2>the round</h2>");
        b.push_str(&shares_html(&pm, &postmortem::Person::default()));
        b.push_str("<h2>notes</h2>");
        b.push_str(&notes_html(&pm));
    }
    let _ = write!(
        b,
        r#"<h2>proposals</h2><div {live}="proposals">{}</div>"#,
        proposals_html(&pm)
    );
    match postmortem::tally(t, &pm).await {
        Ok(Some(tally)) => b.push_str(&tally_html(&tally, &pm)),
        _ if pm.phase == Phase::Voting => {
            b.push_str(&ballots_html(&pm));
        }
        _ => {}
    }
    if let Ok(actions) = t.store().actions(false, Some(i.id)).await {
        b.push_str("<h2>action items</h2>");
        b.push_str(&actions_html(&actions, controls));
    }
    // Live, and the action items' buttons.
    b.push_str(FORMS_SCRIPT);
    b
}

/// What people shared: to someone who has not shared completely yet,
/// nothing but who has (so that nobody writes to match the others);
/// once closed, to everyone. `mine` is the reader's own share (`None`:
/// the reader is not a participant).
fn shares_html(pm: &Postmortem, mine: &postmortem::Person) -> String {
    if pm.phase == Phase::Round && !mine.missing().is_empty() {
        return r#"<p class="muted" id="shares-hidden">The others' shares show here once you have shared a success, a failure and something to do better.</p>"#.into();
    }
    let mut b = String::new();
    for p in &pm.body.participants {
        if p.missing().len() == 3 {
            continue;
        }
        let missing = p.missing();
        let flag = if missing.is_empty() {
            String::new()
        } else {
            format!(
                r#" <span class="no incomplete">incomplete: no {}</span>"#,
                missing.join(", no ")
            )
        };
        let _ = write!(
            b,
            r#"<div class="card"><b>{}</b>{flag}<br>success: {}<br>failure: {}<br>do better: {}</div>"#,
            esc(&p.name),
            esc(&p.success),
            esc(&p.failure),
            esc(&p.better)
        );
    }
    b
}

fn notes_html(pm: &Postmortem) -> String {
    if pm.body.notes.is_empty() {
        format!(
            r#"<p class="muted">The note keeper ({}) has written nothing yet.</p>"#,
            esc(&pm.body.note_keeper)
        )
    } else {
        format!("<pre>{}</pre>", esc(&pm.body.notes))
    }
}

/// While voting: ballots cast, and by seat who has not voted.
fn ballots_html(pm: &Postmortem) -> String {
    let not_voted = pm.not_voted();
    format!(
        r#"<div data-live="ballots"><p id="ballots">{} of {} ballots cast; the tally is shown when voting closes.</p><p id="not-voted" class="muted">{}</p></div>"#,
        pm.ballots_cast,
        pm.ballots,
        if not_voted.is_empty() {
            String::new()
        } else {
            format!("Not voted yet: {}.", esc(&not_voted.join(", ")))
        }
    )
}

/// The proposals, numbered as the ballot and `--proposal N` number them.
fn proposals_html(pm: &Postmortem) -> String {
    let mut b = String::from(r#"<ol id="proposals">"#);
    for p in &pm.body.proposals {
        let _ = write!(
            b,
            r#"<li value="{}">{} <span class="muted">by {}</span></li>"#,
            p.id,
            esc(&p.text),
            esc(&p.by)
        );
    }
    b.push_str("</ol>");
    b
}

/// `/pm/{token}`: a participant's form.
pub(crate) async fn seat_page(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let t = timeline(&s)?;
    let seat = match postmortem::seat(t, &token).await {
        Ok(seat) => seat,
        Err(PmError::Unclaimed(name)) => {
            let body = format!(
                r#"<p>This link is for <b id="claim-for">{name}</b>, and it works once: claim the seat to get a link of your own, which nobody else has seen. This one then stops working.</p>
<form id="claim" data-post="/api/v1/pm/{token}/claim" data-go="path"><p><button>claim {name}'s seat</button><span class="out"></span></p></form>
<p class="muted">If you are not {name}, do not claim it. If {name}'s seat turns out claimed already and {name} did not claim it, tell the facilitator.</p>"#,
                name = esc(&name),
                token = esc(&token),
            );
            return Ok(page(&s, "claim your seat", &body));
        }
        Err(e) => return Ok(refused_page(&s, "post-mortem", e)),
    };
    let pm = &seat.postmortem;
    let i = incident::get(t, pm.incident)
        .await?
        .ok_or_else(|| ApiError::not_found("its incident is gone"))?;
    let post = format!("/api/v1/pm/{}", esc(&token));
    let roles = pm.roles(&seat.name);
    let now = t.now_ms();
    let open = pm.phase != Phase::Closed && !pm.expired(now);
    let mut b = format!(
        r#"<p>You are <b id="you">{name}</b>{roles} in the post-mortem of <a href="/incidents/{id}">I-{id} {title}</a>. Phase <b id="phase">{phase}</b>; {exp}.</p>"#,
        name = esc(&seat.name),
        roles = if roles.is_empty() {
            String::new()
        } else {
            format!(", <b>{}</b>", esc(&roles.join(", ")))
        },
        id = i.id,
        title = esc(&i.body.title),
        phase = pm.phase.as_str(),
        exp = changes_until(pm, now),
    );
    b.push_str(r#"<p class="muted">This page is yours: whoever has its link writes as you. Who has shared is shown to all; what people wrote is shown to participants, and to everyone once the post-mortem closes.</p>"#);
    // The time keeper's clock, and their controls.
    b.push_str("<h2>timer</h2>");
    // Parts that change while the post-mortem runs follow it live.
    let live = if open { "data-live" } else { "data-part" };
    let _ = write!(b, r#"<div {live}="timer">{}</div>"#, timer_html(pm, now));
    if roles.contains(&"time keeper") && open {
        let _ = write!(
            b,
            r#"<form id="timer" data-post="{post}"><label>section <input name="section" list="sections" value="round"></label><datalist id="sections">{opts}</datalist><label>minutes <input name="minutes" data-number type="number" min="1" max="240" value="10"></label><p><button>start the clock</button><span class="out"></span></p></form>"#,
            opts = postmortem::SECTIONS
                .iter()
                .map(|s| format!(r#"<option value="{s}">"#))
                .collect::<String>()
        );
    }
    // The round.
    b.push_str("<h2>the round</h2>");
    let mine = pm
        .body
        .participants
        .iter()
        .find(|p| p.name == seat.name)
        .cloned()
        .unwrap_or_default();
    if open && pm.phase == Phase::Round {
        let _ = write!(
            b,
            r#"<form id="share" data-post="{post}"><p class="muted">Your share: what went well, what did not, and something to do better.</p><label>a success <textarea name="success" maxlength="2000">{}</textarea></label><label>a failure <textarea name="failure" maxlength="2000">{}</textarea></label><label>something to do better <textarea name="better" maxlength="2000">{}</textarea></label><p><button>save my share</button><span class="out"></span></p></form>"#,
            esc(&mine.success),
            esc(&mine.failure),
            esc(&mine.better)
        );
    }
    if open && pm.phase != Phase::Round {
        b.push_str(
            r#"<p class="muted" id="round-locked">The round was locked when voting opened.</p>"#,
        );
    }
    let _ = write!(
        b,
        r#"<div {live}="participation">{}</div>"#,
        participation_html(pm)
    );
    b.push_str("<h2>what everyone shared</h2>");
    let _ = write!(
        b,
        r#"<div {live}="shares">{}</div>"#,
        shares_html(pm, &mine)
    );
    // Notes.
    b.push_str("<h2>notes</h2>");
    // The note keeper writes on after the vote, until the notes are sent.
    let notes_open =
        open || (pm.phase == Phase::Closed && pm.body.notes_sent_ms.is_none() && !pm.expired(now));
    if roles.contains(&"note keeper") && notes_open {
        let _ = write!(
            b,
            r#"<form id="notes" data-post="{post}"><textarea name="notes" style="min-height:8em">{}</textarea><p><button>save the notes</button><span class="out"></span></p></form>"#,
            esc(&pm.body.notes)
        );
    } else {
        // Live while the note keeper may still write.
        let live = if notes_open { "data-live" } else { "data-part" };
        let _ = write!(b, r#"<div {live}="notes">{}</div>"#, notes_html(pm));
    }
    // Proposals and the vote.
    let _ = write!(
        b,
        r#"<h2>proposals</h2><div {live}="proposals">{}</div>"#,
        proposals_html(pm)
    );
    if pm.phase == Phase::Round && open {
        let _ = write!(
            b,
            r#"<form id="propose" data-post="{post}"><label>what to do next <input name="proposal" maxlength="500" size="60"></label><p><button>propose</button><span class="out"></span></p></form>"#
        );
    }
    let facilitator = roles.contains(&"facilitator");
    match pm.phase {
        Phase::Round if facilitator && open => {
            let _ = write!(
                b,
                r#"<form id="open-voting" data-post="{post}" data-extra='{{"phase":"voting"}}'{confirm}><p><button>{label}</button> <span class="muted">{what}</span><span class="out"></span></p></form>"#,
                label = if pm.body.proposals.is_empty() {
                    "close the post-mortem"
                } else {
                    "open voting"
                },
                what = if pm.body.proposals.is_empty() {
                    "nothing was proposed: there is no vote, and the notes say so"
                } else {
                    "the round and the proposals close; everyone gets one ballot"
                },
                confirm = if pm.body.proposals.is_empty() {
                    r#" data-confirm="Nothing was proposed. Close the post-mortem without a vote?""#
                } else {
                    ""
                }
            );
        }
        Phase::Voting => {
            if let Some(ballot) = &seat.ballot {
                let _ = write!(
                    b,
                    r#"<p id="your-ballot">{} <a href="/ballots/{ballot}#seat={link}">your ballot</a> (a separate link: what you vote is sealed, and nothing stored ties it to you; the roll says only that you voted).</p>"#,
                    if seat.ballot_cast {
                        "You have voted with"
                    } else {
                        "Vote with"
                    },
                    ballot = esc(ballot),
                    link = esc(&token),
                );
            }
            b.push_str(&ballots_html(pm));
            if facilitator && open {
                // The warning is read when the button is pressed: the
                // live part below keeps it current.
                let _ = write!(
                    b,
                    r##"<div data-live="waiting" hidden><p id="waiting">{}</p></div><form id="close-voting" data-post="{post}" data-extra='{{"phase":"closed"}}' data-confirm="Close the vote now?" data-confirm-with="#waiting"><p><button>close voting</button><span class="out"></span></p></form>"##,
                    esc(&pm.waiting())
                );
            }
        }
        Phase::Closed => {
            if let Some(tally) = postmortem::tally(t, pm).await? {
                b.push_str(&tally_html(&tally, pm));
                if facilitator && !pm.expired(now) {
                    let _ = write!(
                        b,
                        r#"<h2>make an action item</h2><form id="action" data-post="{post}/actions"><label>proposal <select name="proposal" data-number>{opts}</select></label><label>owner <input name="owner" list="people" required autocomplete="off"></label><datalist id="people">{people}</datalist><label>due (optional) <input name="due" type="date"></label><p><button>add the action item</button><span class="out"></span></p></form>
<form id="send" data-post="{post}/send" data-extra='{{"to":"all"}}'><p><button>send the notes to everyone</button> <span class="muted">to every [[notify]] target of this server</span><span class="out"></span></p></form>"#,
                        people = pm
                            .body
                            .participants
                            .iter()
                            .map(|p| format!(r#"<option value="{}">"#, esc(&p.name)))
                            .collect::<String>(),
                        opts = tally
                            .iter()
                            .map(|c| format!(
                                r#"<option value="{}">{}{} ({} approvals)</option>"#,
                                c.proposal,
                                esc(&c.text),
                                if c.winner { " — chosen" } else { "" },
                                c.approvals
                            ))
                            .collect::<String>()
                    );
                }
            }
        }
        _ => {}
    }
    let actions = t
        .store()
        .actions(false, Some(pm.incident))
        .await
        .unwrap_or_default();
    b.push_str("<h2>action items</h2>");
    b.push_str(&actions_html(&actions, false));
    let _ = write!(
        b,
        r#"<p><a href="/api/v1/incidents/{}/postmortem.md">the notes as Markdown</a></p>"#,
        pm.incident
    );
    Ok(page(&s, &format!("post-mortem of I-{}", pm.incident), &b))
}

/// `/ballots/{token}`: one ballot.
pub(crate) async fn ballot_page(State(s): State<Shared>, Path(token): Path<String>) -> Answer {
    let t = timeline(&s)?;
    let view = match postmortem::ballot(t, &token).await {
        Ok(v) => v,
        Err(e) => return Ok(refused_page(&s, "ballot", e)),
    };
    let pm = &view.postmortem;
    let mut b = format!(
        r#"<p>A ballot of the post-mortem of <a href="/incidents/{id}">I-{id}</a>. Approve every proposal you would have the team do; approving none is a blank vote. One ballot, one vote: it cannot be changed once cast.</p>"#,
        id = pm.incident
    );
    if view.cast {
        b.push_str(r#"<p id="cast" class="yes">This ballot was cast. The tally is shown when voting closes.</p>"#);
    } else if pm.phase != Phase::Voting || pm.expired(t.now_ms()) {
        b.push_str(r#"<p class="refused">Voting is not open.</p>"#);
    } else {
        let _ = write!(
            b,
            r#"<form id="vote" data-post="/api/v1/ballots/{}" data-seat data-confirm-blank="Cast a blank ballot? Approving none counts as a vote for nothing, and a ballot cannot be changed once cast.">"#,
            esc(&token)
        );
        for p in &pm.body.proposals {
            let _ = write!(
                b,
                r#"<p><label style="font-weight:normal"><input type="checkbox" name="approve" value="{n}"> <b>{n}.</b> {}</label></p>"#,
                esc(&p.text),
                n = p.id,
            );
        }
        b.push_str(r#"<p><button>cast my ballot</button><span class="out"></span></p></form>"#);
    }
    Ok(page(&s, "ballot", &b))
}
