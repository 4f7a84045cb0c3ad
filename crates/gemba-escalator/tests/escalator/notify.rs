//! Notifications reach a webhook, an SMTP relay and a command, each run
//! against a listener or file this test owns on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use gemba_core::policy::NotifyDef;
use gemba_escalator::engine::{Notice, NoticeCheck, NoticeKind};
use gemba_escalator::notify;

fn notice() -> Notice {
    Notice {
        kind: NoticeKind::GaveUp,
        escalation: Some(7),
        scope: "node:web-1".parse().unwrap(),
        at_ms: 1_700_000_000_000,
        text: "gave up after 2 attempt(s)".into(),
        checks: vec![NoticeCheck {
            id: "smoke@node:web-1".into(),
            output: "HTTP 503 from http://10.0.0.1/smoke\nmore".into(),
        }],
        ran: vec!["escalation 7, attempt 1: level 6 (redeploy) succeeded".into()],
        next: Some("nothing runs for node:web-1 until a human acknowledges it".into()),
        ack: Some("gemba ack node:web-1".into()),
    }
}

#[tokio::test]
async fn a_webhook_gets_json_with_a_slack_compatible_text() {
    let l = TcpListener::bind("127.0.14.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        String::from_utf8(body).unwrap()
    });
    let target = NotifyDef::Webhook {
        url: format!("http://{addr}/hook"),
    };
    notify::send(&target, &notice(), "srv-1", None)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&server.join().unwrap()).unwrap();
    assert_eq!(body["kind"], "gave-up");
    assert_eq!(body["escalation"], 7);
    // The text a chat client shows carries what a person needs to act.
    assert_eq!(
        body["text"],
        "[gemba srv-1] gave-up node:web-1 escalation 7: gave up after 2 attempt(s)\n\
         failing:\n  smoke@node:web-1: HTTP 503 from http://10.0.0.1/smoke\n\
         ran:\n  escalation 7, attempt 1: level 6 (redeploy) succeeded\n\
         next: nothing runs for node:web-1 until a human acknowledges it\n\
         to acknowledge: gemba ack node:web-1"
    );
    assert_eq!(body["ack"], "gemba ack node:web-1");
    assert_eq!(body["checks"][0]["id"], "smoke@node:web-1");
}

/// A minimal SMTP relay on `ip`: enough of RFC 5321 for one message;
/// the join handle gives the transcript.
fn relay(ip: &str) -> (std::net::SocketAddr, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind(format!("{ip}:0")).unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        c.write_all(b"220 relay.test ESMTP\r\n").unwrap();
        let mut transcript = String::new();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            transcript.push_str(&line);
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    c.write_all(b"250 queued\r\n").unwrap();
                }
                continue;
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 relay.test\r\n",
                "MAIL" | "RCPT" => b"250 ok\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                "QUIT" => {
                    c.write_all(b"221 bye\r\n").unwrap();
                    break;
                }
                _ => b"250 ok\r\n",
            };
            c.write_all(reply).unwrap();
        }
        transcript
    });
    (addr, server)
}

#[tokio::test]
async fn mail_goes_through_an_smtp_relay() {
    let (addr, server) = relay("127.0.14.2");
    let target = NotifyDef::Smtp {
        server: addr.to_string(),
        from: "gemba@example.test".into(),
        to: vec!["ops@example.test".into()],
    };
    // The log lines around the notice travel in the mail's text.
    let logs = notify::Attachment {
        text: "log lines (shop, /var/log/shop.log on web-1):\n  14:02:03 pool exhausted".into(),
        json: serde_json::json!([]),
    };
    notify::send(&target, &notice(), "srv-1", Some(&logs))
        .await
        .unwrap();
    let t = server.join().unwrap();
    assert!(t.contains("RCPT TO:<ops@example.test>"), "{t}");
    assert!(t.contains("14:02:03 pool exhausted"), "{t}");
    assert!(
        t.contains("Subject: [gemba srv-1] gave-up node:web-1 escalation 7"),
        "{t}"
    );
    assert!(t.contains("gave up after 2 attempt(s)"), "{t}");
}

#[tokio::test]
async fn a_command_gets_the_notice_on_stdin_and_in_its_environment() {
    let dir = std::env::temp_dir().join(format!("gemba-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("notice.txt");
    let target = NotifyDef::Command {
        run: vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "echo \"$GEMBA_NOTICE $GEMBA_SCOPE\" > {0}; cat >> {0}",
                out.display()
            ),
        ],
    };
    notify::send(&target, &notice(), "srv-1", None)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("gave-up node:web-1\n"), "{text}");
    let json: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(json["escalation"], 7);
    let failing = NotifyDef::Command {
        run: vec!["/bin/false".into()],
    };
    let e = notify::send(&failing, &notice(), "srv-1", None)
        .await
        .unwrap_err();
    assert!(e.contains("/bin/false") && e.contains("exit 1"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_chart_goes_through_an_smtp_relay_as_an_inline_image() {
    let (addr, server) = relay("127.0.14.3");
    let target = NotifyDef::Smtp {
        server: addr.to_string(),
        from: "gemba@example.test".into(),
        to: vec!["dev@example.test".into()],
    };
    // A PNG's signature and a little more: the relay sees what is sent.
    let png = b"\x89PNG\r\n\x1a\n-chart-bytes-".to_vec();
    gemba_notify::deliver(
        &target,
        gemba_notify::Outgoing {
            subject: "gemba chart: tcp_established of shop".into(),
            text: "connections never released since v2.3.1".into(),
            json: serde_json::json!({}),
            stdin: Vec::new(),
            env: Vec::new(),
            images: vec![gemba_notify::Image {
                name: "chart.png".into(),
                png,
            }],
        },
    )
    .await
    .unwrap();
    let t = server.join().unwrap();
    assert!(
        t.contains("Subject: gemba chart: tcp_established of shop"),
        "{t}"
    );
    assert!(t.contains("multipart/alternative"), "{t}");
    assert!(t.contains("multipart/related"), "{t}");
    assert!(t.contains("Content-ID: <chart>"), "{t}");
    assert!(t.contains("Content-Disposition: inline"), "{t}");
    // quoted-printable: `=` is `=3D`
    assert!(
        t.contains("src=3D\"cid:chart\""),
        "the HTML part shows it: {t}"
    );
    assert!(t.contains("Content-Type: image/png"), "{t}");
    // base64 of the PNG signature
    assert!(t.contains("iVBORw0KGgo"), "{t}");
    assert!(t.contains("connections never released since v2.3.1"), "{t}");
}
