//! Golden tests over the real reports in the shared fixtures: every file
//! parses into what its tool meant, counts match the expectations that
//! came with the old Puppet YAML formats, and the documents that should be
//! refused are refused with a reason.

use crate::common;

use gemba_market::run::{ResourceOutcome, RunStatus};
use gemba_market::{parse, Expect, Format, Parsed};

#[test]
fn old_puppet_yaml_counts_match_their_expectations() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let meta: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&common::read("puppet-yaml/old-meta.yml")).unwrap();
    let expected: Vec<(u64, u64, u64, u64, String)> = meta
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let n = |f: &str| v[f].as_u64().unwrap();
            let t = gemba_market::time::parse_ms(v["time"].as_str().unwrap()).unwrap();
            (
                t,
                n("failed"),
                n("changed"),
                n("total"),
                k.as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut matched = 0;
    for entry in std::fs::read_dir(root.join("puppet-yaml")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "old-meta.yml" {
            continue;
        }
        let rel = format!(
            "puppet-yaml/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let run = common::fixture_run(&rel);
        assert_eq!(run.tool, gemba_market::run::Tool::Puppet);
        // A run is matched to its expectation by its time.
        if let Some((_, failed, changed, total, name)) =
            expected.iter().find(|e| e.0 == run.started_ms)
        {
            matched += 1;
            assert_eq!(
                (run.counts.failed, run.counts.changed, run.counts.total),
                (*failed, *changed, *total),
                "{rel} (expected as {name})"
            );
            assert_eq!(
                run.status == RunStatus::Failed,
                *failed > 0,
                "{rel}: status {:?}",
                run.status
            );
        }
    }
    assert!(
        matched >= 6,
        "only {matched} fixtures matched an expectation"
    );
}

#[test]
fn puppet_7_reports_name_the_failing_and_changing_resources() {
    if common::fixtures().is_none() {
        return;
    }
    let run = common::fixture_run("puppet7/web1-run1.yaml");
    assert_eq!(run.node, "web1.example.net");
    assert_eq!(run.key, "puppet:ec46532d-0667-461c-93a2-933b12fc6dc2");
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        (run.counts.total, run.counts.changed, run.counts.failed),
        (11, 2, 2)
    );
    let failed: Vec<String> = run.failed_resources().map(|r| r.key()).collect();
    assert_eq!(
        failed,
        ["Exec[fetch-from-scm]", "Service[no-such-service-xyz]"]
    );
    let scm = run.failed_resources().next().unwrap();
    assert!(
        scm.message.contains("returned 1 instead of one of [0]"),
        "{}",
        scm.message
    );
    assert_eq!(scm.file.as_deref(), Some("/etc/puppet/code/site.pp"));
    assert_eq!(scm.line, Some(3));
    let changed: Vec<String> = run.changed_resources().map(|r| r.key()).collect();
    assert!(changed.contains(&"Exec[always-restart-app]".to_string()));
    assert_eq!(run.retrieval_ms, Some(608));
    assert_eq!(run.ok_resources.len(), 7);
    // The same report as JSON reads the same.
    let text = String::from_utf8(common::read("puppet7/web1-run1.yaml")).unwrap();
    let v = gemba_market::yaml_to_json(&text).unwrap();
    let json = serde_json::to_vec(&v).unwrap();
    let (format, docs) = parse(&json, Expect::Puppet).unwrap();
    assert_eq!(format, Format::PuppetJson);
    let Parsed::Run(again) = &docs[0] else {
        panic!()
    };
    assert_eq!(**again, run);
}

#[test]
fn puppetdb_exports_read_as_puppet_runs() {
    let Some(root) = common::fixtures() else {
        return;
    };
    let mut n = 0;
    for entry in std::fs::read_dir(root.join("puppetdb")).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        let (format, docs) = parse(&body, Expect::PuppetDb).unwrap();
        assert_eq!(format, Format::PuppetDb);
        let Parsed::Run(run) = &docs[0] else { panic!() };
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with(&run.node), "{name}: {}", run.node);
        assert!(run.key.starts_with("puppet:") && run.key.len() > 40);
        assert!(run.counts.total > 40, "{name}");
        assert!(run.ok_resources.len() > 200, "{name}");
        assert!(run.duration_ms.is_some_and(|d| d > 0));
        n += 1;
    }
    assert_eq!(n, 10);
    // A PuppetDB answer is a list of reports.
    let a = common::read("puppetdb/pg1.vm-304bebf8e5fc109ced84e8b086f9bcf8324f3d78.json");
    let b = common::read("puppetdb/puppetdb1.vm-02f72d7b1e2ded2074c4c3d6e2f415f6978d5932.json");
    let list = format!(
        "[{},{}]",
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b)
    );
    let (_, docs) = parse(list.as_bytes(), Expect::Any).unwrap();
    assert_eq!(docs.len(), 2);
    // On failure a cached catalog was used: nothing fresh was applied.
    let Parsed::Run(first) = &docs[0] else {
        panic!()
    };
    assert!(first.catalog_failed);
}

#[test]
fn chef_messages_and_the_malformed_one() {
    if common::fixtures().is_none() {
        return;
    }
    let (format, docs) = parse(
        &common::read("chef/chef_client_run_start.json"),
        Expect::Chef,
    )
    .unwrap();
    assert_eq!(format, Format::ChefMessage);
    assert!(matches!(&docs[0], Parsed::Start(s) if s.node == "test_node"));

    let fail = common::fixture_run("chef/converge-failure-report.json");
    assert_eq!(fail.status, RunStatus::Failed);
    assert_eq!(fail.key, "chef:ba6acb91-1eaa-4c84-8d68-f19ee641e606");
    let failed: Vec<String> = fail.failed_resources().map(|r| r.key()).collect();
    assert_eq!(failed, ["file[/failed/file/resource]"]);
    assert!(fail
        .error
        .as_ref()
        .unwrap()
        .class
        .contains("EnclosingDirectoryDoesNotExist"));

    let ok = common::fixture_run("chef/converge-success-report.json");
    let always = ok
        .resources
        .iter()
        .find(|r| r.title == "/tmp/always-updated.txt")
        .unwrap();
    assert_eq!(always.outcome, ResourceOutcome::Changed);
    assert_eq!(always.change, "create,checksum");
    // The two runs change it the same way, though to different content.
    let again = fail
        .resources
        .iter()
        .find(|r| r.title == "/tmp/always-updated.txt")
        .unwrap();
    assert_eq!(again.change, always.change);

    for f in [
        "chef/chefdk-debian-8-tester-79e320_run_converge.json",
        "chef/chefdk-rhel-7-tester-6bbaaf_run_converge.json",
        "chef/chefdk-windows-2016-tester-d543a0_run_converge.json",
        "chef/effortless_ccr.json",
        "chef/looping_roles_ccr.json",
    ] {
        let r = common::fixture_run(f);
        assert!(r.counts.total > 0, "{f}");
    }
    let err = parse(&common::read("chef/converge-bad-report.json"), Expect::Chef).unwrap_err();
    assert!(err.0.contains("message_version is missing"), "{err}");
}

#[test]
fn endpoints_refuse_what_they_do_not_take() {
    if common::fixtures().is_none() {
        return;
    }
    let chef = common::read("chef/converge-success-report.json");
    let err = parse(&chef, Expect::PuppetDb).unwrap_err();
    assert!(err.0.contains("does not take chef-data-collector"), "{err}");
    let yaml = common::read("puppet7/web1-run1.yaml");
    assert!(parse(&yaml, Expect::Chef)
        .unwrap_err()
        .0
        .contains("expected a JSON document"));
}

#[test]
fn malformed_documents_are_refused_with_the_reason() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{\"host\": \"a\"", "not valid JSON"),
        (b"--- [1, 2", "not valid YAML"),
        (b"--- !ruby/object:Puppet::Transaction::Report\nlogs: []\n", "names no node"),
        (b"--- !ruby/object:Puppet::Transaction::Report\nhost: -rf\ntime: '2020-01-01T00:00:00Z'\n", "must start with a letter"),
        (b"--- !ruby/object:Puppet::Transaction::Report\nhost: a\ntime: someday\n", "time: \"someday\" is not a timestamp"),
        (b"{\"message_version\": \"2.0.0\", \"message_type\": \"run_converge\"}", "message_version \"2.0.0\""),
        (b"{\"something\": 1}", "not a report gemba knows"),
    ];
    for (body, want) in cases {
        let err = parse(body, Expect::Any).unwrap_err();
        assert!(
            err.0.contains(want),
            "{:?}: {err}",
            String::from_utf8_lossy(body)
        );
    }
}
