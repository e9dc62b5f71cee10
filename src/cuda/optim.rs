//! The training state on the device (kernels/optim.cu), twin of `optim`:
//! gradient-norm clipping, AdamW and the EMA over FLAT f32 buffers that hold
//! every parameter end to end (master weights, m, v, EMA weights, gradients).
//!
//! The network computes with its own *working* parameters (f32 or bf16
//! device tensors, one per parameter); the f32 master weights are the ones
//! the optimizer updates. One `FlatOptimizer::step` is five launches,
//! whatever the number of parameters:
//!
//! 1. gather the gradients (any number of tensors, through a pointer table)
//!    into the flat gradient buffer, with per-chunk sums of squares;
//! 2. sum those in a fixed order: the global norm (`grad_norm`);
//! 3. clip (`optim::clip_grad_norm`'s rule, norm read from device memory)
//!    and apply AdamW (`optim::AdamW`'s order) to the flat master weights;
//! 4. the EMA (`optim::Ema::update`) of the new master weights;
//! 5. scatter the master weights into the working parameters.
//!
//! Nothing is allocated per step: the buffers and tables are made in `new`.
//! The gradients' pointer table is uploaded only when their addresses change
//! (the caching allocator tends to hand a training step the same buffers
//! every time), so a `queue_step` whose gradients sit where they sat last
//! time issues no host-to-device copy and could be captured in a graph.
//!
//! The working parameters are the tensors `new` returns (their pointer
//! table is uploaded once; `set_working` re-points it); they must live as
//! long as the optimizer steps, since every step writes into them.
//!
//! A non-finite gradient makes the norm non-finite, and so does a
//! non-finite loss given to `queue_step`; the AdamW and EMA kernels then
//! change nothing (the CPU trainer stops before updating), and the step
//! says so (`Ok(false)`). `queue_step` never waits; `finish_step` waits
//! once and reads the norm and the loss together, so a training step
//! queues its forward, backward and update before its one host
//! synchronisation. `step` is the two (without a loss).

use super::elementwise::{block, grid};
use super::memory::DeviceBuffer;
use super::{opened, Arg, Gpu};
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// Elements per chunk of the gather and scatter (one block each).
const CHUNK: usize = 4096;
/// Threads per block of the chunked and reducing kernels (a multiple of 32).
const THREADS: u32 = 256;
/// Grid cap of the chunked kernels (they loop over the rest).
const MAX_BLOCKS: usize = 65535;

/// The optimizer's settings for one step (`lr` may change every step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Maximum global gradient norm (`optim::clip_grad_norm`'s `max_norm`).
    pub clip: f32,
    pub ema_decay: f32,
}

impl Hyper {
    /// PyTorch's AdamW betas and eps (as `optim::AdamW::new`) with the given
    /// rate, decay, clipping norm and EMA decay.
    pub fn new(lr: f32, weight_decay: f32, clip: f32, ema_decay: f32) -> Hyper {
        Hyper {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            clip,
            ema_decay,
        }
    }
}

/// A pointer table on the device and the host copy of what it holds.
struct PtrTable {
    buf: DeviceBuffer,
    host: Vec<u64>,
}

impl PtrTable {
    fn new(len: usize) -> PtrTable {
        PtrTable {
            buf: opened().pool.alloc(len * std::mem::size_of::<u64>()),
            host: vec![0; len],
        }
    }

    /// Points the table at `tensors`, uploading only when an address moved.
    fn point_at(&mut self, gpu: &Gpu, tensors: &[Tensor]) {
        let same = self
            .host
            .iter()
            .zip(tensors)
            .all(|(&p, t)| p == t.device_ptr());
        if same {
            return;
        }
        for (p, t) in self.host.iter_mut().zip(tensors) {
            *p = t.device_ptr();
        }
        // Pageable memory: the copy has its own staging of `host`.
        gpu.upload_raw(&self.host, self.buf.ptr());
    }
}

/// AdamW + clipping + EMA over flat device buffers; see the module note.
pub struct FlatOptimizer {
    shapes: Vec<Vec<usize>>,
    /// Start of each parameter in the flat buffers, then the total.
    offsets: Vec<usize>,
    chunks: usize,
    /// Type of the working parameters.
    dtype: DType,
    steps: u64,
    master: Tensor,
    m: Tensor,
    v: Tensor,
    ema: Tensor,
    grad: Tensor,
    /// `[2]` F32: the global gradient norm of the last step, which the
    /// AdamW and EMA kernels read (NaN when its loss was not finite), then
    /// that loss (0 without).
    norm: Tensor,
    /// One f64 sum of squares per chunk.
    partials: DeviceBuffer,
    /// The offsets (u64, parameters + 1), then the chunks (u64 pairs:
    /// parameter, start within it).
    layout: DeviceBuffer,
    working: PtrTable,
    grads: PtrTable,
}

impl FlatOptimizer {
    /// Flat buffers holding `master`, `m`, `v` and `ema` (host f32 tensors,
    /// one of each per parameter with the same shapes, in order; `m` and `v`
    /// zeros for a fresh run), `steps` updates already taken (the bias
    /// correction's t, as `AdamW::steps`), and the working parameters: device
    /// copies of `master` stored as `dtype`.
    pub fn new(
        master: &[Tensor],
        m: &[Tensor],
        v: &[Tensor],
        ema: &[Tensor],
        dtype: DType,
        steps: u64,
    ) -> Result<(FlatOptimizer, Vec<Tensor>)> {
        let gpu = super::gpu()?;
        let count = master.len();
        for (what, group) in [("m", m), ("v", v), ("ema", ema)] {
            if group.len() != count {
                bail!(
                    "optimizer state: {} {what} tensors for {count} parameters",
                    group.len()
                );
            }
            for (i, (t, p)) in group.iter().zip(master).enumerate() {
                if t.shape() != p.shape() {
                    bail!(
                        "optimizer state: {what} of parameter {i} has shape {:?}, the parameter {:?}",
                        t.shape(),
                        p.shape()
                    );
                }
            }
        }
        let shapes: Vec<Vec<usize>> = master.iter().map(|t| t.shape().to_vec()).collect();
        let mut offsets = Vec::with_capacity(count + 1);
        let mut total = 0usize;
        for t in master {
            offsets.push(total);
            total += t.numel();
        }
        offsets.push(total);
        let mut table: Vec<u64> = offsets.iter().map(|&o| o as u64).collect();
        for (i, t) in master.iter().enumerate() {
            for start in (0..t.numel()).step_by(CHUNK) {
                table.push(i as u64);
                table.push(start as u64);
            }
        }
        let chunks = (table.len() - (count + 1)) / 2;
        let layout = gpu.pool.alloc(std::mem::size_of_val(&table[..]));
        gpu.upload_raw(&table, layout.ptr());

        let flat = |group: &[Tensor]| -> Result<Tensor> {
            let buf = Tensor::empty_cuda(&[total], DType::F32);
            for (t, &off) in group.iter().zip(&offsets) {
                if t.numel() == 0 {
                    continue;
                }
                let dst = buf.device_ptr() + (off * std::mem::size_of::<f32>()) as u64;
                if t.is_cuda() {
                    gpu.upload_raw(t.to_host()?.data(), dst);
                } else {
                    gpu.upload_raw(t.data(), dst);
                }
            }
            Ok(buf)
        };
        let mut opt = FlatOptimizer {
            master: flat(master)?,
            m: flat(m)?,
            v: flat(v)?,
            ema: flat(ema)?,
            grad: Tensor::full_cuda(&[total], 0.0, DType::F32),
            norm: Tensor::full_cuda(&[2], 0.0, DType::F32),
            partials: gpu.pool.alloc(chunks.max(1) * std::mem::size_of::<f64>()),
            layout,
            working: PtrTable::new(count),
            grads: PtrTable::new(count),
            shapes,
            offsets,
            chunks,
            dtype,
            steps,
        };
        let working: Vec<Tensor> = opt
            .shapes
            .iter()
            .map(|s| Tensor::empty_cuda(s, dtype))
            .collect();
        opt.working.point_at(gpu, &working);
        opt.scatter(gpu);
        gpu.check()?;
        Ok((opt, working))
    }

    /// Device addresses of the offsets and the chunk table.
    fn layout_ptrs(&self) -> (u64, u64) {
        let offsets = self.layout.ptr();
        let chunks = offsets + (self.offsets.len() * std::mem::size_of::<u64>()) as u64;
        (offsets, chunks)
    }

    fn chunk_grid(&self) -> (u32, u32, u32) {
        (self.chunks.min(MAX_BLOCKS) as u32, 1, 1)
    }

    fn scatter(&self, gpu: &Gpu) {
        let (offsets, chunks) = self.layout_ptrs();
        gpu.launch(
            "scatter_params",
            self.dtype,
            self.chunk_grid(),
            (THREADS, 1, 1),
            0,
            &[
                Arg::Ptr(self.working.buf.ptr()),
                Arg::Ptr(offsets),
                Arg::Ptr(chunks),
                Arg::U64(self.chunks as u64),
                Arg::U64(CHUNK as u64),
                Arg::Ptr(self.master.device_ptr()),
            ],
        );
    }

    /// Points the optimizer at other working parameters (same shapes, in
    /// order, of the type given to `new`); `step` writes into the tensors
    /// `new` returned until this is called. They must outlive the steps.
    pub fn set_working(&mut self, working: &[Tensor]) {
        assert_eq!(
            working.len(),
            self.shapes.len(),
            "one working tensor per parameter"
        );
        for (shape, w) in self.shapes.iter().zip(working) {
            assert_eq!(w.shape(), &shape[..], "working parameter shape");
            assert_eq!(w.dtype(), self.dtype, "working parameter type");
        }
        self.working.point_at(opened(), working);
    }

    /// One update, then waits for the device to read the gradient norm:
    /// `Ok(false)` when it is not finite, in which case nothing changed
    /// (weights, moments, EMA and the step count are as before).
    pub fn step(&mut self, grads: &[Tensor], hyper: &Hyper) -> Result<bool> {
        self.queue_step(grads, hyper, None);
        Ok(self.finish_step()?.0)
    }

    /// Waits for the step `queue_step` queued and reads back, in one
    /// download, whether it was taken (`false`: a non-finite gradient norm
    /// or loss, nothing changed, the step count is as before) and the loss
    /// it was given (0 without one).
    pub fn finish_step(&mut self) -> Result<(bool, f32)> {
        let back = self.norm.to_host()?;
        let taken = back.data()[0].is_finite();
        if !taken {
            self.steps -= 1;
        }
        Ok((taken, back.data()[1]))
    }

    /// One update queued on the stream, without waiting: clip the
    /// gradients' global norm to `hyper.clip`, AdamW on the master weights,
    /// EMA, and the new master weights written into the working parameters.
    /// `grads`: one f32 device tensor per parameter, in order (the backward
    /// kernels store parameter gradients in f32 in either mode). `loss`
    /// (`[1]` F32 on the device), when given, gates the update as the norm
    /// does and comes back from `finish_step`. The step count advances
    /// even if the kernels skip the update (`finish_step` tells).
    pub fn queue_step(&mut self, grads: &[Tensor], hyper: &Hyper, loss: Option<&Tensor>) {
        assert_eq!(grads.len(), self.shapes.len(), "one gradient per parameter");
        for (shape, g) in self.shapes.iter().zip(grads) {
            assert_eq!(g.shape(), &shape[..], "gradient shape");
            assert_eq!(g.dtype(), DType::F32, "parameter gradients are f32");
        }
        if let Some(l) = loss {
            assert_eq!((l.numel(), l.dtype()), (1, DType::F32), "the loss: one f32");
        }
        let gpu = opened();
        self.grads.point_at(gpu, grads);

        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - hyper.beta1.powi(t);
        let bc2 = 1.0 - hyper.beta2.powi(t);
        let total = self.master.numel();
        let (offsets, chunks) = self.layout_ptrs();

        gpu.launch_named(
            "gather_grads",
            self.chunk_grid(),
            (THREADS, 1, 1),
            0,
            &[
                Arg::Ptr(self.grads.buf.ptr()),
                Arg::Ptr(offsets),
                Arg::Ptr(chunks),
                Arg::U64(self.chunks as u64),
                Arg::U64(CHUNK as u64),
                Arg::Ptr(self.grad.device_ptr()),
                Arg::Ptr(self.partials.ptr()),
            ],
        );
        gpu.launch_named(
            "grad_norm_finalize",
            (1, 1, 1),
            (THREADS, 1, 1),
            0,
            &[
                Arg::Ptr(self.partials.ptr()),
                Arg::U64(self.chunks as u64),
                Arg::Ptr(loss.map_or(0, Tensor::device_ptr)),
                Arg::Ptr(self.norm.device_ptr()),
            ],
        );
        gpu.launch_named(
            "adamw_flat",
            grid(total),
            block(),
            0,
            &[
                Arg::Ptr(self.master.device_ptr()),
                Arg::Ptr(self.m.device_ptr()),
                Arg::Ptr(self.v.device_ptr()),
                Arg::Ptr(self.grad.device_ptr()),
                Arg::U64(total as u64),
                Arg::Ptr(self.norm.device_ptr()),
                Arg::F32(hyper.clip),
                Arg::F32(hyper.lr),
                Arg::F32(hyper.beta1),
                Arg::F32(hyper.beta2),
                Arg::F32(hyper.eps),
                Arg::F32(hyper.lr * hyper.weight_decay),
                Arg::F32(bc1),
                Arg::F32(bc2),
            ],
        );
        gpu.launch_named(
            "ema_flat",
            grid(total),
            block(),
            0,
            &[
                Arg::Ptr(self.ema.device_ptr()),
                Arg::Ptr(self.master.device_ptr()),
                Arg::U64(total as u64),
                Arg::F32(hyper.ema_decay),
                Arg::Ptr(self.norm.device_ptr()),
            ],
        );
        self.scatter(gpu);
    }

    /// The global L2 norm of the last step's gradients before clipping
    /// (sqrt applied, as `optim::clip_grad_norm` returns it) as element 0
    /// of a `[2]` F32 device tensor (element 1: the step's loss, see
    /// `queue_step`), overwritten by every step; 0 before the first.
    pub fn grad_norm(&self) -> &Tensor {
        &self.norm
    }

    /// Updates taken so far, including the `steps` given to `new`.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Type of the working parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Host copies of the master weights, m, v and the EMA weights, one
    /// tensor per parameter in their shapes (waits for the device).
    #[allow(clippy::type_complexity)]
    pub fn to_host(&self) -> Result<(Vec<Tensor>, Vec<Tensor>, Vec<Tensor>, Vec<Tensor>)> {
        let split = |flat: &Tensor| -> Result<Vec<Tensor>> {
            let data = flat.to_host()?.into_vec();
            Ok(self
                .shapes
                .iter()
                .zip(self.offsets.windows(2))
                .map(|(s, w)| Tensor::from_vec(s, data[w[0]..w[1]].to_vec()))
                .collect())
        };
        Ok((
            split(&self.master)?,
            split(&self.m)?,
            split(&self.v)?,
            split(&self.ema)?,
        ))
    }
}
