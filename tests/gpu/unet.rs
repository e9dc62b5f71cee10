//! Whole-network checks: a `tiny` U-Net forward and backward on the GPU
//! against the CPU, training steps (fused AdamW, EMA) against the CPU, and
//! NADB restorations (mean network + sampler, replayed from a CUDA graph)
//! against the CPU with the same seed.

use crate::common::{assert_close, emulated, random, MODES};
use nadb::autograd::{Tape, Var};
use nadb::bridge::Method;
use nadb::degrade::Task;
use nadb::device::Device;
use nadb::nn::{Unet, UnetConfig};
use nadb::ops;
use nadb::restore::Restorer;
use nadb::tensor::{DType, Tensor};
use nadb::train::{Role, RunSettings, Trainer};
use std::path::Path;

pub const TESTS: &[crate::Test] = &[
    ("unet_tiny_forward_backward_matches_cpu", forward_backward),
    ("unet_training_steps_match_cpu", training_steps),
    ("nadb_restore_graph_matches_cpu", restore_matches_cpu),
    (
        "nadb_restore_replays_without_allocating",
        restore_allocates_once,
    ),
];

/// A `tiny` network with every weight random (a fresh one has zeroed
/// output layers, which would hide most of the network from the output).
fn random_tiny(time_input: bool, seed: u64) -> Unet {
    let config = UnetConfig::named("tiny").unwrap();
    let config = if time_input {
        config
    } else {
        config.without_time()
    };
    let net = Unet::new(&config, seed).unwrap();
    let params = net
        .params()
        .iter()
        .enumerate()
        .map(|(i, p)| random(p.shape(), seed * 1000 + i as u64, 0.2))
        .collect();
    Unet::from_params(&config, params).unwrap()
}

fn forward_backward() {
    let net = random_tiny(true, 1);
    let x = random(&[2, 16, 16, 3], 7, 1.0);
    let t = Tensor::from_vec(&[2], vec![123.0, 999.0]);
    let target = random(&[2, 16, 16, 3], 8, 1.0);
    let run = |net: &Unet, x: &Tensor, t: &Tensor, target: &Tensor| {
        let tape = Tape::new();
        let params = net.bind(&tape);
        let out = net.forward(
            &tape,
            &params,
            &Var::constant(x.clone()),
            Some(&Var::constant(t.clone())),
        );
        let loss = ops::mse(&tape, &out, &Var::constant(target.clone()));
        let mut grads = tape.backward(&loss);
        let g: Vec<Tensor> = params.iter().map(|p| grads.take(p).unwrap()).collect();
        (out.into_tensor(), g)
    };
    let (cpu_out, cpu_grads) = run(&net, &x, &t, &target);
    for (dtype, tol) in MODES {
        // A U-Net stacks dozens of ops: the f32 tolerance is looser than
        // one kernel's, bf16's much looser.
        let tol = if dtype == DType::F32 {
            20.0 * tol
        } else {
            3.0 * tol
        };
        let gpu_net = net.to_cuda(dtype).unwrap();
        let (out, grads) = run(
            &gpu_net,
            &x.to_cuda(dtype).unwrap(),
            &t.to_cuda(DType::F32).unwrap(),
            &target.to_cuda(dtype).unwrap(),
        );
        assert_close(&format!("{dtype:?} forward"), &cpu_out, &out, tol);
        for ((c, g), spec) in cpu_grads.iter().zip(&grads).zip(net.specs()) {
            assert_close(&format!("{dtype:?} grad {}", spec.name), c, g, tol);
        }
    }
}

fn settings(role: Role, mean: Option<&Path>) -> RunSettings {
    RunSettings {
        batch: 2,
        crop: 16,
        lr: 1e-3,
        warmup: 1,
        ema_decay: 0.9,
        mean_checkpoint: mean.map(Path::to_path_buf),
        ..RunSettings::new(role, Task::Sr4Pool)
    }
}

/// Three NADB steps (mean network included) on the GPU in f32 and on the
/// CPU from the same start: weights, moments and EMA agree. Each GPU step
/// waits for the device once, after its last launch (the update): the
/// loss is read after the update, not between forward and backward. A
/// bf16 step too (its parameter gradients reach the optimizer in f32).
fn training_steps() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = UnetConfig::named("tiny").unwrap();
    let mean_path = dir.path().join("mean.safetensors");
    let mut mean = Trainer::new(settings(Role::Mean, None), &tiny).unwrap();
    for (p, i) in mean.net.params_mut().zip(0..) {
        *p = random(p.shape(), 500 + i, 0.1);
    }
    mean.save(&mean_path).unwrap();
    let clean = random(&[2, 16, 16, 3], 3, 1.0);
    let degraded = nadb::degrade::degrade(Task::Sr4Pool, &clean).unwrap();
    let role = Role::Bridge(Method::Nadb);
    let make = || Trainer::new(settings(role, Some(&mean_path)), &tiny).unwrap();
    let mut cpu = make();
    let mut gpu = make().to_device(Device::Cuda(DType::F32)).unwrap();
    let mut bf16 = make().to_device(Device::Cuda(DType::Bf16)).unwrap();
    let device = nadb::cuda::gpu().unwrap();
    for step in 0..3 {
        let a = cpu.train_step(&clean, &degraded).unwrap();
        let (waits, _) = device.host_waits();
        let b = gpu.train_step(&clean, &degraded).unwrap();
        let (after, launches_at_wait) = device.host_waits();
        assert_eq!(after - waits, 1, "step {step}: host waits for the device");
        assert_eq!(
            launches_at_wait,
            device.launches(),
            "step {step}: launches queued after the step's one wait"
        );
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1e-3),
            "loss cpu {a} gpu {b}"
        );
        if step == 0 {
            let c = bf16.train_step(&clean, &degraded).unwrap();
            assert!(
                (a - c).abs() <= 3e-2 * a.abs().max(1e-3),
                "loss cpu {a} bf16 {c}"
            );
        }
    }
    let cpu_path = dir.path().join("cpu.safetensors");
    let gpu_path = dir.path().join("gpu.safetensors");
    cpu.save(&cpu_path).unwrap();
    gpu.save(&gpu_path).unwrap();
    let (c, g) = (
        Trainer::resume(&cpu_path).unwrap(),
        Trainer::resume(&gpu_path).unwrap(),
    );
    assert_eq!(c.step, g.step);
    for (i, spec) in c.net.specs().iter().enumerate() {
        let what = |group: &str| format!("{group} {}", spec.name);
        assert_close(
            &what("weight"),
            &c.net.params()[i],
            &g.net.params()[i].to_cuda(DType::F32).unwrap(),
            1e-3,
        );
        assert_close(
            &what("ema"),
            &c.ema.weights[i],
            &g.ema.weights[i].to_cuda(DType::F32).unwrap(),
            1e-3,
        );
        assert_close(
            &what("adam m"),
            &c.opt.m[i],
            &g.opt.m[i].to_cuda(DType::F32).unwrap(),
            1e-3,
        );
    }
}

/// Saves a random `tiny` mean network and NADB bridge for sr4-pool.
fn random_checkpoints(dir: &Path) -> std::path::PathBuf {
    let tiny = UnetConfig::named("tiny").unwrap();
    let mean_path = dir.join("mean.safetensors");
    let mut mean = Trainer::new(settings(Role::Mean, None), &tiny).unwrap();
    let mean_net = random_tiny(false, 11);
    for (p, r) in mean.net.params_mut().zip(mean_net.params()) {
        *p = (**r).clone();
    }
    mean.save(&mean_path).unwrap();
    let bridge_path = dir.join("nadb.safetensors");
    let mut bridge = Trainer::new(
        settings(Role::Bridge(Method::Nadb), Some(&mean_path)),
        &tiny,
    )
    .unwrap();
    let net = random_tiny(true, 12);
    for (p, r) in bridge.net.params_mut().zip(net.params()) {
        *p = (**r).clone();
    }
    // Restore loads the EMA weights.
    bridge.ema.weights = net.params().iter().map(|p| (**p).clone()).collect();
    bridge.save(&bridge_path).unwrap();
    bridge_path
}

/// The same NADB restoration (NFE 5, seed 9) on the CPU and, replayed
/// from the captured graph, on the GPU in f32; a second seed changes the
/// GPU result (the graph reads the seed from device memory).
fn restore_matches_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = random_checkpoints(dir.path());
    let side = if emulated() { 16 } else { 32 };
    let degraded = random(&[1, side, side, 3], 21, 0.8);
    let cpu = Restorer::load(&path, None, Task::Sr4Pool).unwrap();
    let reference = cpu.restore(&degraded, 5, 9).unwrap();
    let gpu = Restorer::load(&path, None, Task::Sr4Pool)
        .unwrap()
        .to_device(Device::Cuda(DType::F32))
        .unwrap();
    let first = gpu.restore(&degraded, 5, 9).unwrap(); // captures
    let again = gpu.restore(&degraded, 5, 9).unwrap(); // replays
    assert_close(
        "f32 restore (capture run)",
        &reference,
        &first.to_cuda(DType::F32).unwrap(),
        1e-3,
    );
    assert_close(
        "f32 restore (replay)",
        &reference,
        &again.to_cuda(DType::F32).unwrap(),
        1e-3,
    );
    let other_seed = gpu.restore(&degraded, 5, 10).unwrap();
    assert!(
        other_seed.max_abs_diff(&again) > 1e-3,
        "the replay ignored the new seed"
    );
    let bf16 = Restorer::load(&path, None, Task::Sr4Pool)
        .unwrap()
        .to_device(Device::Cuda(DType::Bf16))
        .unwrap();
    let loose = bf16.restore(&degraded, 5, 9).unwrap();
    assert_close(
        "bf16 restore",
        &reference,
        &loose.to_cuda(DType::F32).unwrap(),
        MODES[1].1 * 3.0,
    );
    assert!(gpu.graph_kernels().unwrap() > 0);
}

/// After the first restoration of a shape, replays take nothing new from
/// the driver (all buffers come from the pool or belong to the graph).
fn restore_allocates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = random_checkpoints(dir.path());
    let side = if emulated() { 16 } else { 32 };
    let degraded = random(&[2, side, side, 3], 22, 0.8);
    let gpu = Restorer::load(&path, None, Task::Sr4Pool)
        .unwrap()
        .to_device(Device::Cuda(DType::Bf16))
        .unwrap();
    gpu.restore(&degraded, 10, 1).unwrap();
    let gpu_device = nadb::cuda::gpu().unwrap();
    let before = gpu_device.pool_stats().fresh_allocations;
    for seed in 2..5 {
        gpu.restore(&degraded, 10, seed).unwrap();
    }
    let after = gpu_device.pool_stats().fresh_allocations;
    assert_eq!(
        before,
        after,
        "replays allocated {} new device buffers",
        after - before
    );
}
