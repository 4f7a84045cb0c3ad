//! The sampler on processes this test starts: a Python child that opens
//! TCP connections and files on command and releases them. Its
//! connections, fds and ephemeral ports must rise and fall in the samples;
//! a replaced process counts as a restart; a stopped one is unavailable
//! with a reason.

use crate::common;

use common::{holding_listener, Leaky};

use gemba_core::metrics::{ProcessDef, Selector};
use gemba_timeline::sample::{decode, encode, Sample, Sampler, HOST};

fn of<'a>(samples: &'a [Sample], name: &str) -> &'a Sample {
    samples.iter().find(|s| s.name == name).unwrap()
}

fn v(s: &Sample, m: &str) -> f64 {
    *s.values
        .get(m)
        .unwrap_or_else(|| panic!("{} has no {m}: {s:?}", s.name))
}

#[test]
fn connections_and_fds_rise_and_fall_restarts_count_and_a_stopped_process_is_unavailable() {
    let dir = std::env::temp_dir().join(format!("gemba-sampler-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("leaky.pid");
    let port = holding_listener();
    let defs = vec![ProcessDef {
        name: "leaky".into(),
        selector: Selector::Pidfile(pidfile.display().to_string()),
        logs: Vec::new(),
    }];
    let mut sampler = Sampler::new(&defs, 64);
    let mut leaky = Leaky::start(port, &pidfile);
    leaky.command("close");

    let t0 = 1_000_000;
    let base = sampler.sample(t0);
    let host = of(&base, HOST);
    assert!(v(host, "mem_total_bytes") > 0.0);
    assert!(v(host, "ephemeral_range") > 1000.0);
    let before = of(&base, "leaky").clone();
    assert_eq!(before.unavailable, None);
    assert_eq!(v(&before, "tcp_established"), 0.0);
    assert_eq!(v(&before, "restarts"), 0.0);
    assert!(v(&before, "fd_limit") > 0.0);

    leaky.command("open 25");
    let grown = sampler.sample(t0 + 10_000);
    let after = of(&grown, "leaky");
    assert_eq!(v(after, "tcp_established"), 25.0, "{after:?}");
    assert_eq!(v(after, "ephemeral_ports"), 25.0);
    assert_eq!(v(after, "fds") - v(&before, "fds"), 50.0);
    assert!(after.values.contains_key("cpu_percent"));
    assert!(
        v(of(&grown, HOST), "tcp_established") >= 50.0,
        "both ends on the host"
    );

    leaky.command("close");
    let fixed = sampler.sample(t0 + 20_000);
    let released = of(&fixed, "leaky");
    assert_eq!(v(released, "tcp_established"), 0.0);
    assert_eq!(v(released, "fds"), v(&before, "fds"));

    // Replaced: a new process under the same pidfile is a restart.
    leaky.stop();
    let stopped = sampler.sample(t0 + 30_000);
    let why = of(&stopped, "leaky")
        .unavailable
        .clone()
        .expect("unavailable");
    assert!(why.contains("is not running"), "{why}");
    let mut again = Leaky::start(port, &pidfile);
    again.command("close");
    let back = sampler.sample(t0 + 40_000);
    assert_eq!(v(of(&back, "leaky"), "restarts"), 1.0);
    again.stop();

    // What goes into gossip reads back the same.
    for s in back.iter().chain(&stopped) {
        let d = decode(&s.name, &encode(s)).unwrap();
        assert_eq!(d.unavailable, s.unavailable);
        for (k, x) in &s.values {
            assert!((d.values[k] - x).abs() < 0.001, "{k}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hostile_gossip_samples_are_refused() {
    for (name, value) in [
        ("leaky", "12 rss_bytes=1 rss_bytes=2"),
        ("leaky", "12 load1=1"),
        ("leaky", "12 fds=NaN"),
        ("leaky", "12 fds=inf"),
        ("leaky", "x fds=1"),
        ("leaky", "12 fds"),
        ("le aky", "12 fds=1"),
        ("host", "12 rss_bytes=1"),
    ] {
        assert!(decode(name, value).is_err(), "{name} {value}");
    }
    assert!(decode("leaky", &format!("12 ! {}", "x".repeat(300))).is_err());
    assert!(decode("leaky", &"1".repeat(5000)).is_err());
    // What decodes encodes to what decodes, however large (found by the
    // events fuzz target: 1e250 was printed in full, over 24 characters).
    for v in [
        "1e250",
        "-1.7976931348623157e308",
        "123456789012345.5",
        "0.0001",
    ] {
        let s = decode("leaky", &format!("7 cpu_percent={v}")).unwrap();
        let again = decode("leaky", &encode(&s)).unwrap();
        let (a, b) = (s.values["cpu_percent"], again.values["cpu_percent"]);
        assert!((a - b).abs() <= a.abs() * 1e-9 + 0.001, "{v}: {a} vs {b}");
    }
}
