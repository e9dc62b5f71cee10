//! Start-up cost of the shipped weights: `Restorer::load` of a task's NADB
//! bridge and mean network (memory-mapped safetensors, bf16 widened to
//! f32), and load plus a first restoration of a 32x32 image at NFE 1 (the
//! time until a restore has started producing output).
//!
//!     cargo bench --bench load_weights

use criterion::{criterion_group, criterion_main, Criterion};
use nadb::degrade::Task;
use nadb::restore::Restorer;
use nadb::Tensor;
use std::path::Path;

fn load_weights(c: &mut Criterion) {
    for task in [Task::Sr4Bicubic, Task::Jpeg10] {
        let bridge = format!("weights/{task}-nadb.safetensors");
        let mean = format!("weights/{task}-mean.safetensors");
        assert!(
            Path::new(&bridge).is_file() && Path::new(&mean).is_file(),
            "shipped weights missing: {bridge}, {mean}"
        );
        let load = || Restorer::load(Path::new(&bridge), Some(Path::new(&mean)), task).unwrap();
        c.bench_function(&format!("load {task} nadb + mean"), |b| b.iter(load));
        let image = Tensor::full(&[1, 32, 32, 3], 0.1);
        c.bench_function(&format!("load {task} + first 32x32 restore, NFE 1"), |b| {
            b.iter(|| load().restore(&image, 1, 0).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = load_weights
}
criterion_main!(benches);
