//! CUDA graphs and the caching allocator under capture (src/cuda/graph.rs,
//! src/cuda/memory.rs): a captured body replays its recorded work into the
//! same buffers; a body that uploads, downloads, waits for the device or
//! needs a buffer the pool would take from the driver makes the capture
//! fail naming that call, without failing the device (the next capture
//! works).

use nadb::cuda::elementwise::add;
use nadb::cuda::gpu;
use nadb::cuda::graph::Graph;
use nadb::tensor::{DType, Tensor};

pub const TESTS: &[crate::Test] = &[
    (
        "graph_replays_into_the_same_buffers",
        replays_into_the_same_buffers,
    ),
    (
        "graph_capture_refuses_what_it_may_not_hold",
        capture_refuses,
    ),
];

/// y = a + b, captured once and replayed after `a` changed: y follows.
fn replays_into_the_same_buffers() {
    let a = Tensor::from_vec(&[300], (0..300).map(|i| i as f32).collect())
        .to_cuda(DType::F32)
        .expect("upload");
    let b = Tensor::full_cuda(&[300], 0.5, DType::F32);
    let y = Tensor::empty_cuda(&[300], DType::F32);
    let body = || nadb::cuda::elementwise::copy(add(&a, &b).device_ptr(), y.device_ptr(), 1200);
    body(); // the pool now holds add's output size
    let launches = gpu().expect("device").launches();
    let graph = Graph::capture(body).expect("capture");
    assert_eq!(graph.kernels, 1, "one kernel recorded");
    let fresh = gpu().expect("device").pool_stats().fresh_allocations;
    nadb::cuda::elementwise::fill(&a, 2.0);
    graph.launch().expect("replay");
    let got = y.to_host().expect("download");
    assert!(
        got.data().iter().all(|&v| v == 2.5),
        "replay after a changed input"
    );
    let gpu = gpu().expect("device");
    assert_eq!(gpu.launches() - launches, 2, "the capture and the fill");
    assert_eq!(
        gpu.pool_stats().fresh_allocations,
        fresh,
        "a replay allocates nothing"
    );
}

/// Each forbidden call inside a body: the capture fails naming it, and the
/// device is still usable (a correct capture afterwards works).
fn capture_refuses() {
    let a = Tensor::full_cuda(&[64], 1.0, DType::F32);
    let host = Tensor::from_vec(&[64], vec![3.0; 64]);
    drop(add(&a, &a)); // the pool now holds the size add returns
    let cases: [(&str, &dyn Fn(), &str); 4] = [
        (
            "upload",
            &|| drop(host.to_cuda(DType::F32)),
            "an upload of 256 B from host memory while a graph capture is open",
        ),
        (
            "download",
            &|| drop(add(&a, &a).to_host()),
            "a download of 64 values to host memory while a graph capture is open",
        ),
        (
            "wait",
            &|| drop(gpu().expect("device").synchronize()),
            "a wait for the device while a graph capture is open",
        ),
        (
            "new buffer",
            // A size nothing allocated before.
            &|| drop(Tensor::empty_cuda(&[12_345_677], DType::F32)),
            "a new buffer of 49382912 B from the driver while a graph capture is open",
        ),
    ];
    for (what, body, expect) in cases {
        let fresh = gpu().expect("device").pool_stats().fresh_allocations;
        match Graph::capture(|| {
            add(&a, &a); // some recorded work beside the forbidden call
            body();
        }) {
            Ok(_) => panic!("{what} inside a capture: the capture succeeded"),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(expect), "{what}: {e}");
                println!("     refused ({what}): {e}");
            }
        }
        let gpu = gpu().expect("device");
        gpu.check()
            .unwrap_or_else(|e| panic!("{what}: the refusal failed the device: {e}"));
        assert_eq!(
            gpu.pool_stats().fresh_allocations,
            fresh,
            "{what}: the driver gave a buffer during the capture"
        );
    }
    // The device and the pool still work: a correct capture replays.
    let y = Tensor::empty_cuda(&[64], DType::F32);
    let body = || nadb::cuda::elementwise::copy(add(&a, &a).device_ptr(), y.device_ptr(), 256);
    body();
    let graph = Graph::capture(body).expect("a correct capture after the refusals");
    graph.launch().expect("replay");
    assert!(y
        .to_host()
        .expect("download")
        .data()
        .iter()
        .all(|&v| v == 2.0));
}
