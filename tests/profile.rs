//! `nadb bench --profile`'s recorder: the spans of a network pass account
//! for exactly the FLOPs `forward_flops` counts, the backward's ops are
//! there too, and the Chrome trace has every field Perfetto needs.

mod common;

use common::{randn, rng};
use nadb::autograd::{Tape, Var};
use nadb::nn::{forward_flops, Unet, UnetConfig};
use nadb::{ops, profile, Tensor};

#[test]
fn spans_count_the_networks_flops_and_the_backward() {
    let cfg = UnetConfig::named("tiny").unwrap();
    let net = Unet::new(&cfg, 1).unwrap();
    let mut r = rng(2);
    let x = Var::constant(randn(&mut r, &[2, 16, 16, 3], 1.0));
    let t = Var::constant(Tensor::from_vec(&[2], vec![10.0, 900.0]));
    let ((), spans) = profile::record(|| {
        let tape = Tape::new();
        let params = net.bind(&tape);
        let y = net.forward(&tape, &params, &x, Some(&t));
        let loss = ops::mse(&tape, &y, &Var::constant(Tensor::zeros(&[2, 16, 16, 3])));
        drop(tape.backward(&loss));
    });
    let forward: f64 = spans
        .iter()
        .filter(|s| !s.name.ends_with(".backward"))
        .map(|s| s.flops)
        .sum();
    assert_eq!(forward, forward_flops(&cfg, 2, 16, 16).unwrap() as f64);
    for name in [
        "conv2d",
        "conv2d.backward",
        "attention.backward",
        "group_norm_silu",
        "linear",
    ] {
        assert!(spans.iter().any(|s| s.name == name), "no {name} span");
    }
    assert!(spans.iter().all(|s| s.dur_us >= 0.0 && s.bytes > 0.0));
    // Not recording: no spans.
    let ((), none) = profile::record(|| ());
    assert!(none.is_empty());

    let table = profile::table("tiny", &spans, 1.0);
    assert!(table.contains("| conv2d | [2, 16, 16, 3] |"), "{table}");

    let trace: serde_json::Value =
        serde_json::from_str(&profile::chrome_trace(&[("pass", &spans[..])])).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(events.len(), spans.len() + 1); // and the thread's name
    for e in events {
        for key in ["name", "ph", "ts", "dur", "pid", "tid"] {
            assert!(e.get(key).is_some(), "event {e} has no {key}");
        }
    }
}
