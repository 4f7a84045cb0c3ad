//! `identity`: what signing every published gossip value costs: signing
//! on the publisher, verifying on every receiver, and the bytes it adds.

use std::time::Instant;

use gemba_mesh::identity::{self, NodeIdentity};

pub fn run(ops: usize) -> anyhow::Result<()> {
    let me = NodeIdentity::ephemeral();
    let pk = identity::parse_public(&me.public()).expect("own key parses");
    // A link state as nodes publish it, and a check result's size.
    let edge = "u5,1,0,4/8@1795000000";
    let result = "x".repeat(600);
    println!(
        "| value | payload bytes | signed bytes | sign µs | verify µs | verifies/s (one core) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, payload) in [("link state", edge), ("check result", result.as_str())] {
        let t = Instant::now();
        let mut values = Vec::with_capacity(ops);
        for v in 0..ops {
            values.push(me.sign_value("fra-web-1", 7, "e:fra-db-1", v as u64 + 1, payload));
        }
        let sign = t.elapsed().as_secs_f64() * 1e6 / ops as f64;
        let t = Instant::now();
        let mut ok = 0;
        for (v, value) in values.iter().enumerate() {
            ok += identity::verify(&pk, "fra-web-1", 7, "e:fra-db-1", v as u64 + 1, value) as usize;
        }
        let verify = t.elapsed().as_secs_f64() * 1e6 / ops as f64;
        anyhow::ensure!(ok == ops, "{} of {ops} values did not verify", ops - ok);
        println!(
            "| {name} | {} | {} | {sign:.1} | {verify:.1} | {:.0} |",
            payload.len(),
            values[0].len(),
            1e6 / verify
        );
    }
    Ok(())
}
