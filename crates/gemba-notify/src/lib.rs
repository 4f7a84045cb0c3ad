//! Outgoing notices and their delivery, for every stage: a webhook (JSON
//! with a Slack-compatible `text`), mail through an SMTP relay, or a
//! command with the message on stdin and in its environment. The
//! escalator's notices, a chart sent from the console, the post-mortem's
//! notes and the morning market's daily edition all leave through
//! [`deliver`] (one target) or [`fan_out`] (every target).

use std::time::Duration;

use gemba_core::policy::NotifyDef;
use gemba_exec::{self as exec, ExecSpec};

/// The longest one delivery may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// One message for any target: what a webhook posts, what a mail says,
/// what a command gets on stdin and in its environment.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The mail subject and `GEMBA_TEXT`.
    pub subject: String,
    /// The mail body.
    pub text: String,
    /// The webhook body.
    pub json: serde_json::Value,
    /// A command's stdin.
    pub stdin: Vec<u8>,
    /// A command's environment, beside `GEMBA_TEXT`.
    pub env: Vec<(String, String)>,
    /// Pictures sent along (charts): inline in mail, base64 in the
    /// webhook's JSON (`image`, the first, and `images`, all), files
    /// named by `GEMBA_IMAGE` (the first) and `GEMBA_IMAGES` (all, one
    /// per line) for a command.
    pub images: Vec<Image>,
}

/// A PNG picture and the file name it travels under.
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub png: Vec<u8>,
}

/// Sends one message to `target`; returns a description of the failure.
pub async fn deliver(target: &NotifyDef, m: Outgoing) -> Result<(), String> {
    match target {
        NotifyDef::Webhook { url } => {
            let mut json = m.json;
            if !m.images.is_empty() {
                use base64::Engine;
                let all: Vec<serde_json::Value> = m
                    .images
                    .iter()
                    .map(|img| {
                        serde_json::json!({
                            "name": img.name,
                            "content_type": "image/png",
                            "base64": base64::engine::general_purpose::STANDARD.encode(&img.png),
                        })
                    })
                    .collect();
                json["image"] = all[0].clone();
                json["images"] = serde_json::Value::Array(all);
            }
            let body = json.to_string();
            let url = url.clone();
            tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(SEND_TIMEOUT))
                    .build()
                    .into();
                agent
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(body.as_bytes())
                    .map(|_| ())
                    .map_err(|e| format!("webhook {url}: {e}"))
            })
            .await
            .map_err(|e| e.to_string())?
        }
        NotifyDef::Smtp { server, from, to } => {
            let (server, from, to) = (server.clone(), from.clone(), to.clone());
            tokio::task::spawn_blocking(move || {
                smtp(&server, &from, &to, &m.subject, &m.text, &m.images)
            })
            .await
            .map_err(|e| e.to_string())?
        }
        NotifyDef::Command { run } => {
            let mut env = m.env;
            env.push(("GEMBA_TEXT".into(), m.subject));
            // The pictures wait in a private directory while the command
            // runs, each under its own name, so that the names the notes
            // link (`I-4-chart-1.png`) are the names of the files.
            let dir = std::env::temp_dir().join(format!(
                "gemba-{}-{}",
                std::process::id(),
                IMAGE_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ));
            let mut pictures = Vec::new();
            if !m.images.is_empty() {
                private_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            for img in &m.images {
                let written = file_name(&img.name).and_then(|name| {
                    let path = dir.join(name);
                    write_private(&path, &img.png)
                        .map(|()| path.clone())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))
                });
                match written {
                    Ok(path) => pictures.push(path),
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                }
            }
            if let Some(first) = pictures.first() {
                env.push(("GEMBA_IMAGE".into(), first.display().to_string()));
                let all: Vec<String> = pictures.iter().map(|p| p.display().to_string()).collect();
                env.push(("GEMBA_IMAGES".into(), all.join("\n")));
            }
            let o = exec::run(&ExecSpec {
                argv: run.clone(),
                env,
                timeout: SEND_TIMEOUT,
                stdin: Some(m.stdin),
            })
            .await;
            if !pictures.is_empty() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            if o.success() {
                Ok(())
            } else {
                Err(format!("notify command {}: {}", run[0], o.describe_end()))
            }
        }
    }
}

static IMAGE_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A picture's name as a file name: letters, digits, `.`, `-` and `_`,
/// not starting with a dot, at most 100 bytes.
fn file_name(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "a picture named {:?} cannot be a file name",
            name.chars().take(100).collect::<String>()
        ))
    }
}

/// A directory only this user can read.
fn private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// The mail: plain text, or with pictures a text part and an HTML part
/// that shows the text and the pictures inline (`cid:chart`,
/// `cid:chart-2`, ...).
fn mail_body(
    msg: lettre::message::MessageBuilder,
    body: &str,
    images: &[Image],
) -> Result<lettre::Message, String> {
    use lettre::message::{header::ContentType, Attachment, MultiPart, SinglePart};
    if images.is_empty() {
        return msg
            .body(body.to_string())
            .map_err(|e| format!("cannot build mail: {e}"));
    }
    let escaped = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let cid = |i: usize| {
        if i == 0 {
            "chart".to_string()
        } else {
            format!("chart-{}", i + 1)
        }
    };
    let mut html = format!(
        "<html><body><pre style=\"font-family:sans-serif;white-space:pre-wrap\">{escaped}</pre>"
    );
    for (i, img) in images.iter().enumerate() {
        html.push_str(&format!(
            "<p><img src=\"cid:{}\" alt=\"{}\"></p>",
            cid(i),
            img.name.replace(['"', '<', '>', '&'], "")
        ));
    }
    html.push_str("</body></html>");
    let png = ContentType::parse("image/png").map_err(|e| format!("cannot build mail: {e}"))?;
    let mut related = MultiPart::related().singlepart(SinglePart::html(html));
    for (i, img) in images.iter().enumerate() {
        related =
            related.singlepart(Attachment::new_inline(cid(i)).body(img.png.clone(), png.clone()));
    }
    msg.multipart(
        MultiPart::alternative()
            .singlepart(SinglePart::plain(body.to_string()))
            .multipart(related),
    )
    .map_err(|e| format!("cannot build mail: {e}"))
}

fn smtp(
    server: &str,
    from: &str,
    to: &[String],
    subject: &str,
    body: &str,
    images: &[Image],
) -> Result<(), String> {
    use lettre::message::Mailbox;
    use lettre::{Message, SmtpTransport, Transport};
    let parse = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| format!("bad mail address {a:?}: {e}"))
    };
    let mut msg = Message::builder().from(parse(from)?).subject(subject);
    for t in to {
        msg = msg.to(parse(t)?);
    }
    let msg = mail_body(msg, body, images)?;
    let (host, port) = server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("bad SMTP server {server:?}"))?;
    let transport = SmtpTransport::builder_dangerous(host)
        .port(port)
        .timeout(Some(SEND_TIMEOUT))
        .build();
    transport
        .send(&msg)
        .map(|_| ())
        .map_err(|e| format!("smtp {server}: {e}"))
}

/// The targets `to` names: `all`, a kind (`smtp`, `webhook`, `command`)
/// or the number of one in `targets` (from 1); an error that says what may
/// be named when none matches.
pub fn select(targets: &[NotifyDef], to: &str) -> Result<Vec<NotifyDef>, String> {
    let kind = |n: &NotifyDef| match n {
        NotifyDef::Webhook { .. } => "webhook",
        NotifyDef::Smtp { .. } => "smtp",
        NotifyDef::Command { .. } => "command",
    };
    let shown = || to.chars().take(40).collect::<String>();
    let chosen: Vec<NotifyDef> = match to {
        "all" => targets.to_vec(),
        k @ ("smtp" | "webhook" | "command") => {
            targets.iter().filter(|n| kind(n) == k).cloned().collect()
        }
        n => match n.parse::<usize>() {
            Ok(i) if i >= 1 && i <= targets.len() => vec![targets[i - 1].clone()],
            _ => {
                return Err(format!(
                "to {:?}: say smtp, webhook, command, all, or the number of a [[notify]] (1..={})",
                shown(),
                targets.len()
            ))
            }
        },
    };
    if chosen.is_empty() {
        return Err(format!(
            "no [[notify]] target matches {:?} on this server",
            shown()
        ));
    }
    Ok(chosen)
}

/// Sends `m` to every target in turn; answers how many took it and the
/// error of each that did not, naming the target.
pub async fn fan_out(targets: &[NotifyDef], m: &Outgoing) -> (usize, Vec<String>) {
    let mut took = 0;
    let mut errors = Vec::new();
    for t in targets {
        match deliver(t, m.clone()).await {
            Ok(()) => took += 1,
            Err(e) => errors.push(e),
        }
    }
    (took, errors)
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn a_mail_with_a_chart_shows_it_inline() {
        let msg = lettre::Message::builder()
            .from("gemba@example.net".parse().unwrap())
            .to("dev@example.net".parse().unwrap())
            .subject("gemba chart: tcp_established of shop");
        let img = Image {
            name: "chart.png".into(),
            png: b"\x89PNG\r\n\x1a\nnot really".to_vec(),
        };
        let second = Image {
            name: "chart-2.png".into(),
            png: b"\x89PNG\r\n\x1a\nanother".to_vec(),
        };
        let m = mail_body(msg, "the leak began with <v2.3.1>", &[img, second]).unwrap();
        let text = String::from_utf8_lossy(&m.formatted()).to_string();
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("multipart/related"));
        assert!(text.contains("Content-ID: <chart>"));
        assert!(
            text.contains("Content-ID: <chart-2>"),
            "every picture inline"
        );
        assert!(text.contains("Content-Disposition: inline"));
        assert!(text.contains("image/png"));
        assert!(text.contains("src=3D\"cid:chart\"") || text.contains("src=\"cid:chart\""));
        assert!(
            text.contains("&lt;v2.3.1&gt;"),
            "the HTML part escapes the note"
        );
        // Without a picture the mail stays plain text.
        let plain = lettre::Message::builder()
            .from("gemba@example.net".parse().unwrap())
            .to("dev@example.net".parse().unwrap())
            .subject("s");
        let m = mail_body(plain, "hello", &[]).unwrap();
        assert!(!String::from_utf8_lossy(&m.formatted()).contains("multipart"));
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    fn outgoing(names: &[&str]) -> Outgoing {
        Outgoing {
            subject: "gemba post-mortem: I-4".into(),
            text: "notes".into(),
            json: serde_json::json!({}),
            stdin: b"![a](I-4-chart-1.png)\n![b](I-4-chart-2.png)\n".to_vec(),
            env: Vec::new(),
            images: names
                .iter()
                .map(|n| Image {
                    name: n.to_string(),
                    png: format!("png of {n}").into_bytes(),
                })
                .collect(),
        }
    }

    /// A command gets every picture, each file under the name the notes
    /// link, and the files are gone once it has run.
    #[tokio::test]
    async fn a_command_gets_every_picture_under_the_name_the_notes_link() {
        let out = std::env::temp_dir().join(format!("gemba-notify-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&out);
        let target = NotifyDef::Command {
            run: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "for f in $GEMBA_IMAGES; do printf '%s %s\\n' \"$(basename $f)\" \"$(cat $f)\"; done > {}; printf '%s' \"$GEMBA_IMAGES\" | head -1 > {}.first",
                    out.display(),
                    out.display()
                ),
            ],
        };
        deliver(&target, outgoing(&["I-4-chart-1.png", "I-4-chart-2.png"]))
            .await
            .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            got,
            "I-4-chart-1.png png of I-4-chart-1.png\nI-4-chart-2.png png of I-4-chart-2.png\n"
        );
        let first = std::fs::read_to_string(format!("{}.first", out.display())).unwrap();
        assert!(
            !std::path::Path::new(first.trim()).exists(),
            "removed after the run: {first}"
        );
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(format!("{}.first", out.display()));

        // A name that is not a file name is refused, nothing run.
        let e = deliver(&target, outgoing(&["../../etc/passwd"]))
            .await
            .unwrap_err();
        assert!(e.contains("cannot be a file name"), "{e}");
        assert!(!out.exists());
    }
}
