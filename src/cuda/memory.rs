//! The caching allocator: device buffers are kept on a free list by size
//! when dropped and handed out again, so a training step or a sampling
//! loop allocates from the driver only the first time it runs (the
//! "allocate once" rule; `fresh_allocations` lets tests check it).
//!
//! Graph capture (see `graph`): every buffer handed out while a capture is
//! open is recorded, and when the capture ends the graph takes them over
//! (takes them off the free list): a replay writes into exactly those
//! addresses, so no one else may get them until the graph is dropped.
//! While a capture is open the pool only hands out cached buffers: a
//! buffer it would have to take from the driver, like an upload, a
//! download or a wait for the device (`outside_capture`), breaks the
//! capture rules; the first such call is kept and the capture fails with
//! it (the device itself is not failed, as a CUDA capture that was
//! invalidated leaves the context usable).

use super::opened;
use crate::tensor::{DType, Storage, Tensor};
use std::collections::HashMap;
use std::sync::Mutex;

/// Sizes are rounded up to this, so near sizes share a free list.
const GRANULE: usize = 512;

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<u64>>,
    in_use_bytes: usize,
    cached_bytes: usize,
    peak_in_use_bytes: usize,
    fresh_allocations: u64,
    /// The open capture, if one is open.
    capturing: Option<Capture>,
}

/// What the pool records while a capture is open.
#[derive(Default)]
struct Capture {
    /// Buffers handed out.
    buffers: Vec<(u64, usize)>,
    /// The first call a capture may not contain.
    broken: Option<String>,
}

pub struct Pool {
    state: Mutex<PoolState>,
}

/// A device allocation of at least `bytes`; returned to the pool on drop.
#[derive(Debug)]
pub struct DeviceBuffer {
    ptr: u64,
    bytes: usize,
}

impl DeviceBuffer {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ptr != 0 {
            opened().pool.release(self.ptr, self.bytes);
        }
    }
}

impl Tensor {
    /// An uninitialised device tensor from the caching allocator. The GPU
    /// must be open (`cuda::gpu()`).
    pub fn empty_cuda(shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let buf = opened().pool.alloc(n * dtype.size());
        Tensor::from_storage(shape, Storage::Cuda { buf, dtype })
    }

    /// A device tensor of one value.
    pub fn full_cuda(shape: &[usize], value: f32, dtype: DType) -> Tensor {
        let t = Tensor::empty_cuda(shape, dtype);
        super::elementwise::fill(&t, value);
        t
    }
}

/// Memory figures of the pool, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct PoolStats {
    pub in_use: usize,
    pub cached: usize,
    pub peak_in_use: usize,
    pub fresh_allocations: u64,
}

impl Pool {
    pub(crate) fn new() -> Pool {
        Pool {
            state: Mutex::new(PoolState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().expect("pool lock")
    }

    /// A buffer of `bytes` (uninitialised), of which exactly `bytes` are
    /// live for the emulated device's bounds checks. On failure the GPU's sticky
    /// error is set and a null buffer returned: launches are skipped from
    /// then on, and the caller's next check reports it.
    pub fn alloc(&self, bytes: usize) -> DeviceBuffer {
        let gpu = opened();
        let live = bytes;
        let bytes = bytes.max(1).div_ceil(GRANULE) * GRANULE;
        let mut s = self.lock();
        let ptr = match s.free.get_mut(&bytes).and_then(Vec::pop) {
            Some(p) => {
                s.cached_bytes -= bytes;
                p
            }
            None => {
                if let Some(c) = &mut s.capturing {
                    c.broken.get_or_insert(format!(
                        "a new buffer of {bytes} B from the driver while a graph capture is open \
                         (run the body once before capturing, so the pool holds it)"
                    ));
                    return DeviceBuffer { ptr: 0, bytes };
                }
                if gpu.has_failed() {
                    return DeviceBuffer { ptr: 0, bytes };
                }
                let mut fresh = gpu.driver().alloc(bytes);
                if fresh.is_err() {
                    // Give the cached buffers back to the driver and retry.
                    Self::release_cached(&mut s);
                    fresh = gpu.driver().alloc(bytes);
                }
                match fresh {
                    Ok(p) => {
                        s.fresh_allocations += 1;
                        p
                    }
                    Err(e) => {
                        let in_use = s.in_use_bytes;
                        drop(s);
                        gpu.fail(format!(
                            "out of memory: allocating {:.1} MiB with {:.1} MiB in use ({e})",
                            bytes as f64 / 1048576.0,
                            in_use as f64 / 1048576.0
                        ));
                        return DeviceBuffer { ptr: 0, bytes };
                    }
                }
            }
        };
        gpu.driver().set_live_bytes(ptr, live);
        s.in_use_bytes += bytes;
        s.peak_in_use_bytes = s.peak_in_use_bytes.max(s.in_use_bytes);
        if let Some(c) = &mut s.capturing {
            c.buffers.push((ptr, bytes));
        }
        DeviceBuffer { ptr, bytes }
    }

    fn release(&self, ptr: u64, bytes: usize) {
        opened().driver().set_live_bytes(ptr, 0);
        let mut s = self.lock();
        s.in_use_bytes -= bytes;
        s.cached_bytes += bytes;
        s.free.entry(bytes).or_default().push(ptr);
    }

    fn release_cached(s: &mut PoolState) {
        for (bytes, ptrs) in s.free.drain() {
            for p in ptrs {
                opened().driver().free(p);
                s.cached_bytes -= bytes;
            }
        }
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.lock();
        PoolStats {
            in_use: s.in_use_bytes,
            cached: s.cached_bytes,
            peak_in_use: s.peak_in_use_bytes,
            fresh_allocations: s.fresh_allocations,
        }
    }

    /// Whether a graph capture is open.
    pub(crate) fn capturing(&self) -> bool {
        self.lock().capturing.is_some()
    }

    /// Starts recording the buffers handed out (a graph capture opens).
    pub(crate) fn begin_capture(&self) {
        self.lock().capturing = Some(Capture::default());
    }

    /// Whether `what` may happen now: false while a capture is open, and
    /// the capture then fails with `what` (the first such call).
    pub(crate) fn outside_capture(&self, what: impl FnOnce() -> String) -> bool {
        match &mut self.lock().capturing {
            Some(c) => {
                c.broken
                    .get_or_insert_with(|| format!("{} while a graph capture is open", what()));
                false
            }
            None => true,
        }
    }

    /// Ends the recording and pins what it saw: the returned buffers belong
    /// to the graph until `unpin`. Every one of them must be free by now
    /// (the graph's inputs and outputs are allocated before the capture).
    /// Fails, pinning nothing, when the capture broke a rule.
    pub(crate) fn end_capture(&self) -> Result<Vec<(u64, usize)>, String> {
        let mut s = self.lock();
        let capture = s.capturing.take().unwrap_or_default();
        if let Some(broken) = capture.broken {
            return Err(broken);
        }
        let mut seen = capture.buffers;
        seen.sort_unstable();
        seen.dedup();
        for &(ptr, bytes) in &seen {
            let list = s.free.entry(bytes).or_default();
            let Some(i) = list.iter().position(|&p| p == ptr) else {
                return Err(format!(
                    "a buffer of {bytes} B allocated inside the captured region outlives it"
                ));
            };
            list.swap_remove(i);
            s.cached_bytes -= bytes;
            // The graph's replays use all of it.
            opened().driver().set_live_bytes(ptr, bytes);
        }
        Ok(seen)
    }

    /// Returns a dropped graph's buffers to the free list.
    pub(crate) fn unpin(&self, buffers: &[(u64, usize)]) {
        let mut s = self.lock();
        for &(ptr, bytes) in buffers {
            opened().driver().set_live_bytes(ptr, 0);
            s.cached_bytes += bytes;
            s.free.entry(bytes).or_default().push(ptr);
        }
    }
}
