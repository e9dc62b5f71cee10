//! The device itself: the mma.sync m16n8k16 fragment layout (on a GPU the
//! proof of the layout conv.cu assumes; on the emulated device a check of
//! its model), the 64-bit activation offsets of conv.cu past 2^31, and the negative controls of the emulated device's checks:
//! each probe in kernels/probes.cu run correct (it must pass and compute
//! the right values) and broken (the emulator must refuse it with the
//! expected message, which the test prints).

use nadb::cuda::{gpu, Arg};
use nadb::tensor::{DType, Tensor};

pub const TESTS: &[crate::Test] = &[
    ("probe_mma_fragment_layout", mma_fragment_layout),
    (
        "probe_conv_offsets_past_2_pow_31",
        conv_offsets_past_2_pow_31,
    ),
    (
        "probe_emulator_catches_broken_kernels",
        emulator_catches_broken_kernels,
    ),
];

fn ptr(t: &Tensor) -> Arg {
    Arg::Ptr(t.device_ptr())
}

/// D = A B + C through `probe_mma` (A 16 x 16 and C 16 x 8 row-major, B
/// column by column).
fn mma(a: &[f32], b: &[f32], c: &[f32], broken: i32) -> Result<Vec<f32>, String> {
    let ad = Tensor::from_vec(&[256], a.to_vec())
        .to_cuda(DType::Bf16)
        .expect("upload");
    let bd = Tensor::from_vec(&[128], b.to_vec())
        .to_cuda(DType::Bf16)
        .expect("upload");
    let cd = Tensor::from_vec(&[128], c.to_vec())
        .to_cuda(DType::F32)
        .expect("upload");
    let d = Tensor::zeros(&[128]).to_cuda(DType::F32).expect("upload");
    gpu().expect("device").try_launch(
        "probe_mma",
        None,
        (1, 1, 1),
        (32, 1, 1),
        0,
        &[ptr(&ad), ptr(&bd), ptr(&cd), ptr(&d), Arg::I32(broken)],
    )?;
    Ok(d.to_host().expect("download").data().to_vec())
}

/// B's value in column n: distinct primes above 16, so (i + 1) p[n] names
/// its row i and column n (no two products of a row number 1..=16 and
/// one of these are equal); exact in bf16 (at most 8 significant bits).
const COLUMN_PRIMES: [usize; 8] = [17, 19, 23, 29, 31, 37, 41, 43];

/// For each k0, A's column k0 holds i + 1 in row i and B's row k0 holds
/// p[n] in column n, everything else 0; C[i][n] = 1024 (8 i + n + 1).
/// Every D[i][n] must be (i + 1) p[n] + C[i][n], a different number for
/// each (i, n) and exact in f32: D's register of each lane is where the
/// PTX ISA table puts it (its value says which (i, n) it holds), A's and
/// B's registers of every lane at every k0 (a misplaced one feeds the
/// wrong row or column, or none, into the product) and C's (the high part
/// names the C element that was added). Returns the first wrong position.
fn check_layout(broken: i32) -> Result<(), String> {
    let c: Vec<f32> = (0..128).map(|e| (1024 * (e + 1)) as f32).collect();
    for k0 in 0..16 {
        let mut a = vec![0.0f32; 256];
        let mut b = vec![0.0f32; 128];
        for i in 0..16 {
            a[i * 16 + k0] = (i + 1) as f32;
        }
        for (n, p) in COLUMN_PRIMES.iter().enumerate() {
            b[n * 16 + k0] = *p as f32;
        }
        let d = mma(&a, &b, &c, broken)?;
        for i in 0..16 {
            for (n, p) in COLUMN_PRIMES.iter().enumerate() {
                let want = ((i + 1) * p + 1024 * (8 * i + n + 1)) as f32;
                if d[i * 8 + n] != want {
                    return Err(format!(
                        "mma.m16n8k16 with one-hot k = {k0}: D[{i}][{n}] = {}, the PTX ISA layout gives {want}",
                        d[i * 8 + n]
                    ));
                }
            }
        }
    }
    Ok(())
}

fn mma_fragment_layout() {
    check_layout(0).unwrap_or_else(|e| panic!("{e}"));
}

/// `nhwc(pixel, channels, ch)`, every conv load and store's activation
/// offset, at adm256's largest activations (512 channels at 256 x 256) at
/// batch 64 and 128: past 2^31 and 2^32, where 32-bit math wraps. Nothing
/// of that size is allocated.
fn conv_offsets_past_2_pow_31() {
    let out = Tensor::zeros(&[2]).to_cuda(DType::F32).expect("upload");
    let (channels, pixels_per_image) = (512u64, 256 * 256u64);
    for images in [64u64, 128] {
        let last = images * pixels_per_image - 1;
        for (pixel, ch) in [(last, 511), (last, 0), (1 << 22, 0), ((1 << 22) - 1, 511)] {
            gpu()
                .expect("device")
                .try_launch(
                    "probe_nhwc",
                    None,
                    (1, 1, 1),
                    (1, 1, 1),
                    0,
                    &[
                        Arg::U64(pixel),
                        Arg::I32(channels as i32),
                        Arg::I32(ch as i32),
                        ptr(&out),
                    ],
                )
                .expect("probe_nhwc");
            let got = out.to_host().expect("download").data().to_vec();
            let got = ((got[0] as u64) << 24) + got[1] as u64;
            let want = pixel * channels + ch;
            assert_eq!(
                got, want,
                "nhwc({pixel}, {channels}, {ch}) at batch {images}"
            );
        }
    }
}

/// Launches a probe; `Err` holds the device's refusal.
fn probe(
    name: &'static str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    shared: u32,
    args: &[Arg],
) -> Result<(), String> {
    let g = gpu().expect("device");
    g.try_launch(name, None, grid, block, shared, args)?;
    g.synchronize().map_err(|e| e.to_string())
}

/// Expects the broken run to be refused with a message containing `what`,
/// and prints the message.
fn expect_caught(control: &str, result: Result<(), String>, what: &str) {
    match result {
        Ok(()) => panic!("{control}: the emulated device did not catch it"),
        Err(e) if e.contains(what) => println!("     caught ({control}): {e}"),
        Err(e) => panic!("{control}: caught, but not as expected ({what}): {e}"),
    }
}

fn emulator_catches_broken_kernels() {
    if !gpu().expect("device").emulated {
        println!("     (negative controls run on the emulated device only)");
        return;
    }
    let x = Tensor::from_vec(&[256], (0..256).map(|i| i as f32).collect()).to_cuda(DType::F32);
    let x = x.expect("upload");
    let y = Tensor::zeros(&[256]).to_cuda(DType::F32).expect("upload");
    let host = |t: &Tensor| t.to_host().expect("download").data().to_vec();

    // Two A fragment registers swapped: the layout check fails.
    match check_layout(1) {
        Ok(()) => panic!("swapped mma A registers: the layout check passed"),
        Err(e) => println!("     caught (mma A registers 1 and 2 swapped): {e}"),
    }

    // A missing __syncthreads: a shared-memory race.
    let sum = |broken| {
        probe(
            "probe_block_sum",
            (1, 1, 1),
            (256, 1, 1),
            0,
            &[ptr(&x), ptr(&y), Arg::I32(broken)],
        )
    };
    sum(0).expect("probe_block_sum, correct");
    assert_eq!(host(&y)[0], (0..256).sum::<i32>() as f32, "probe_block_sum");
    expect_caught("missing __syncthreads", sum(1), "shared-memory race");

    // A thread that returns before the barrier.
    let barrier = |broken| {
        probe(
            "probe_barrier",
            (1, 1, 1),
            (64, 1, 1),
            0,
            &[ptr(&x), ptr(&y), Arg::I32(broken)],
        )
    };
    barrier(0).expect("probe_barrier, correct");
    expect_caught(
        "early return before __syncthreads",
        barrier(1),
        "__syncthreads reached by 63 of 64 threads",
    );

    // An off-by-one bound: one element past a 100-value buffer.
    let src = Tensor::zeros(&[100]).to_cuda(DType::F32).expect("upload");
    let dst = Tensor::zeros(&[100]).to_cuda(DType::F32).expect("upload");
    let copy = |broken| {
        probe(
            "probe_copy",
            (1, 1, 1),
            (128, 1, 1),
            0,
            &[ptr(&src), ptr(&dst), Arg::I32(100), Arg::I32(broken)],
        )
    };
    copy(0).expect("probe_copy, correct");
    expect_caught(
        "off-by-one bound",
        copy(1),
        "out-of-bounds global read of 4 B at offset 400",
    );

    // A full-mask shuffle that half the warp does not reach.
    let warp = |broken| {
        probe(
            "probe_warp_sum",
            (1, 1, 1),
            (32, 1, 1),
            0,
            &[ptr(&x), ptr(&y), Arg::I32(broken)],
        )
    };
    warp(0).expect("probe_warp_sum, correct");
    assert_eq!(host(&y)[31], (0..32).sum::<i32>() as f32, "probe_warp_sum");
    expect_caught(
        "shuffle with a wrong mask",
        warp(1),
        "names lane 16, which has exited",
    );

    // Dynamic shared memory written past the launch's size.
    let dynamic = |broken| {
        probe(
            "probe_dynamic_shared",
            (1, 1, 1),
            (64, 1, 1),
            256,
            &[ptr(&x), ptr(&y), Arg::I32(broken)],
        )
    };
    dynamic(0).expect("probe_dynamic_shared, correct");
    assert_eq!(host(&y)[0], 63.0, "probe_dynamic_shared");
    expect_caught(
        "dynamic shared overflow",
        dynamic(1),
        "the launch has 256 B of dynamic shared memory",
    );

    // Launches the hardware refuses, and arguments of the wrong kind.
    let args = [ptr(&x), ptr(&y), Arg::I32(0)];
    expect_caught(
        "1025 threads",
        probe("probe_barrier", (1, 1, 1), (1025, 1, 1), 0, &args),
        "exceeds the hardware's limits",
    );
    expect_caught(
        "grid.y 65536",
        probe("probe_barrier", (1, 65536, 1), (64, 1, 1), 0, &args),
        "exceeds the hardware's limits",
    );
    expect_caught(
        "an f32 where the kernel takes an int",
        probe(
            "probe_barrier",
            (1, 1, 1),
            (64, 1, 1),
            0,
            &[ptr(&x), ptr(&y), Arg::F32(0.0)],
        ),
        "the launch passes arguments (ppf) where the kernel takes (ppi)",
    );

    // None of it poisoned the device: a correct launch still runs.
    gpu()
        .expect("device")
        .check()
        .expect("no sticky error after the refusals");
    sum(0).expect("probe_block_sum after the controls");
}
