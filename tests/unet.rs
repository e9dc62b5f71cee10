//! The ADM U-Net: parameter counts of the named configs, the whole network's
//! gradient against finite differences, and learning (overfitting one batch).

mod common;

use common::{check_grads, randn, rng};
use nadb::autograd::{Tape, Var};
use nadb::nn::{param_count, Unet, UnetConfig};
use nadb::optim::{clip_grad_norm, gather_grads, AdamW};
use nadb::{ops, Tensor};

#[test]
fn named_configs_have_the_documented_parameter_counts() {
    // engine.md's table; adm256 is I2SB's unconditional 256x256 network.
    for (name, count) in [
        ("tiny", 827_491),
        ("small", 5_461_955),
        ("base", 44_173_827),
        ("adm256", 552_807_171),
    ] {
        let cfg = UnetConfig::named(name).unwrap();
        assert_eq!(param_count(&cfg).unwrap(), count, "{name}");
        // The mean network drops exactly the time embedding MLP and the
        // per-block embedding projections.
        assert!(param_count(&cfg.without_time()).unwrap() < count);
    }
    let tiny = Unet::new(&UnetConfig::named("tiny").unwrap(), 0).unwrap();
    assert_eq!(tiny.param_count(), 827_491);
    assert!(UnetConfig::named("huge").is_err());
}

#[test]
fn forward_keeps_shape_for_bridge_and_mean_networks() {
    let cfg = UnetConfig::named("tiny").unwrap();
    let mut r = rng(1);
    let x = Var::constant(randn(&mut r, &[2, 8, 12, 3], 1.0));
    let t = Var::constant(Tensor::from_vec(&[2], vec![10.0, 900.0]));
    let tape = Tape::no_grad();
    let bridge = Unet::new(&cfg, 1).unwrap();
    let y = bridge.forward(&tape, &bridge.bind(&tape), &x, Some(&t));
    assert_eq!(y.shape(), &[2, 8, 12, 3]);
    let mean = Unet::new(&cfg.without_time(), 1).unwrap();
    let y = mean.forward(&tape, &mean.bind(&tape), &x, None);
    assert_eq!(y.shape(), &[2, 8, 12, 3]);
}

/// Every parameter random (ADM zero-initialises the last layer of each
/// branch, which would leave most gradients at zero and unchecked).
fn randomised(cfg: &UnetConfig, seed: u64) -> Vec<Tensor> {
    let mut r = rng(seed);
    let net = Unet::new(cfg, seed).unwrap();
    net.specs()
        .iter()
        .map(|s| {
            let mut t = randn(&mut r, &s.shape, 0.3);
            if s.name.contains("norm") || s.name.contains("layers.0") || s.name.starts_with("out.0")
            {
                // Norm gains near 1.
                t.data_mut().iter_mut().for_each(|v| *v += 1.0);
            }
            t
        })
        .collect()
}

#[test]
fn whole_tiny_unet_gradient_matches_finite_differences() {
    for time_input in [true, false] {
        let named = UnetConfig::named("tiny").unwrap();
        let cfg = if time_input {
            named
        } else {
            named.without_time()
        };
        let net = Unet::new(&cfg, 3).unwrap();
        let mut inputs = randomised(&cfg, 3);
        let n_params = inputs.len();
        let mut r = rng(4);
        inputs.push(randn(&mut r, &[1, 4, 4, 3], 1.0));
        if time_input {
            inputs.push(Tensor::from_vec(&[1], vec![0.37]));
        }
        check_grads("tiny U-Net", inputs, 3, 1e-3, |tape, v| {
            let t = time_input.then(|| &v[n_params + 1]);
            net.forward(tape, &v[..n_params], &v[n_params], t)
        });
    }
}

#[test]
fn tiny_unet_overfits_one_batch() {
    let cfg = UnetConfig::named("tiny").unwrap();
    let mut net = Unet::new(&cfg, 7).unwrap();
    let mut r = rng(8);
    let x = Var::constant(randn(&mut r, &[2, 16, 16, 3], 1.0));
    let t = Var::constant(Tensor::from_vec(&[2], vec![100.0, 700.0]));
    let y = Var::constant(randn(&mut r, &[2, 16, 16, 3], 1.0));
    let mut opt = AdamW::new(net.params().iter().map(|p| &**p), 2e-3, 0.0);
    let mut first = None;
    let mut last = f32::INFINITY;
    for _ in 0..400 {
        let tape = Tape::new();
        let params = net.bind(&tape);
        let out = net.forward(&tape, &params, &x, Some(&t));
        let loss = ops::mse(&tape, &out, &y);
        last = loss.value().data()[0];
        first.get_or_insert(last);
        let mut grads = tape.backward(&loss);
        let mut g = gather_grads(&mut grads, &params);
        drop((params, out, loss, grads, tape));
        clip_grad_norm(&mut g, 1.0);
        opt.step(net.params_mut(), &g);
    }
    let first = first.unwrap();
    eprintln!("tiny U-Net, one batch, 400 AdamW steps: loss {first} -> {last}");
    assert!(
        last * 100.0 <= first,
        "loss fell from {first} to {last}, less than 100x"
    );
}
