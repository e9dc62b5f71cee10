//! The CUDA backend: one device, one stream, the kernels build.rs compiled
//! from `kernels/*.cu`, a caching allocator, and one launch path that every
//! kernel wrapper goes through (so launches are counted, and a failure is
//! kept instead of panicking).
//!
//! The device sits behind `driver::Driver`: the CUDA driver (cudarc, the
//! fatbin modules build.rs compiled: SASS for sm_90 and sm_80, PTX for
//! newer cards) or, with `NADB_CUDA_EMULATE=1`, the emulated device
//! (`crate::emu`: the same kernels compiled for the host, checked like
//! compute-sanitizer). Nothing in this folder above the driver knows which.
//!
//! One file per op family, mirroring `cpu/`: each wrapper takes and returns
//! device `Tensor`s with the same signature as its CPU twin, so `ops` only
//! picks the backend. Kernels are exported as `<name>_f32` and
//! `<name>_bf16` (see kernels/README.md); `launch` adds the suffix.
//!
//! Errors: a failed launch or allocation is stored ("sticky", as the CUDA
//! runtime does) and every later launch is skipped; `Gpu::check` and every
//! copy back to the host return it as an `Error`. Ops therefore stay
//! infallible, and the caller checks once per step or per sample. A device
//! that failed stays failed for the process: a fresh process (the GPU
//! tests run each family in its own) starts from a clean context.
//!
//! Opening: no driver library or no device is an absence (`--device auto`
//! takes the CPU, the GPU tests fall back to the emulated device); a
//! device that is there but cannot be opened (a module the driver cannot
//! load, a build without kernels) is a fault (`Unopened::device_present`),
//! which the GPU tests report as a failure.

pub mod attention;
pub mod bridge;
pub mod conv;
pub(crate) mod driver;
pub mod elementwise;
pub mod graph;
pub mod memory;
pub mod norm;
pub mod optim;
pub mod resample;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use driver::{Driver, KernelId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// One compiled kernel file.
pub struct Module {
    /// The file's stem (`conv` for kernels/conv.cu).
    pub name: &'static str,
    /// nvcc's fatbin: SASS for `SASS`, PTX for `PTX_ARCH`.
    pub fatbin: &'static [u8],
    /// The PTX ISA version its PTX is written in (the driver must know it
    /// to JIT it, on a card with none of the SASS).
    pub ptx_isa: &'static str,
    /// Every kernel it exports.
    pub kernels: &'static [&'static str],
}

mod built {
    use super::Module;
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Every kernel file this build compiled (none without nvcc).
pub fn compiled_modules() -> &'static [Module] {
    built::MODULES
}

/// The GPUs the fatbins hold SASS for (`sm_90`, ...), and the virtual
/// architecture of their PTX.
pub fn compiled_archs() -> (&'static [&'static str], &'static str) {
    (built::SASS, built::PTX_ARCH)
}

/// The version of the nvcc that compiled them (empty without one).
pub fn compiled_nvcc() -> &'static str {
    built::NVCC
}

/// Whether the CUDA driver library can be loaded (cudarc panics in
/// `CudaContext::new` when it cannot).
pub fn driver_present() -> bool {
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// One kernel argument. Device pointers travel as `Ptr`.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
}

/// A loaded kernel and how many times it was launched from the host.
struct LoadedKernel {
    id: KernelId,
    launches: u64,
}

/// The device (a GPU through the CUDA driver, or the emulated device),
/// its kernels and its memory pool.
pub struct Gpu {
    driver: Box<dyn Driver>,
    functions: Mutex<HashMap<(&'static str, Option<DType>), LoadedKernel>>,
    pub(crate) pool: memory::Pool,
    error: Mutex<Option<String>>,
    failed: AtomicBool,
    launches: AtomicU64,
    graph_launches: AtomicU64,
    /// Host waits for the device (downloads and synchronisations), and the
    /// host launches issued before the last one.
    waits: AtomicU64,
    launches_at_last_wait: AtomicU64,
    /// Dynamic shared memory a block may opt in to.
    max_shared_bytes: u32,
    /// Whether this is the emulated device.
    pub emulated: bool,
    /// Device name, compute capability, memory.
    pub description: String,
    /// The driver's and the build's versions (CUDA, kernel module, nvcc
    /// and PTX ISA of the kernels), or that the device is emulated.
    pub versions: String,
}

/// Why no device was opened.
#[derive(Clone, Debug)]
pub struct Unopened {
    pub reason: String,
    /// A driver and a device are there: not opening them is a fault, not
    /// an absence.
    pub device_present: bool,
}

static GPU: OnceLock<std::result::Result<Gpu, Unopened>> = OnceLock::new();

/// Whether `gpu()` opens the emulated device: `NADB_CUDA_EMULATE=1`.
pub fn emulation_requested() -> bool {
    std::env::var("NADB_CUDA_EMULATE").is_ok_and(|v| v == "1")
}

/// The device, opened on first use: the emulated device when
/// `NADB_CUDA_EMULATE=1`, else CUDA device 0; an error says why there is
/// none (no driver library, no device, a build without kernels).
pub fn gpu() -> Result<&'static Gpu> {
    open().map_err(|e| Error(e.reason.clone()))
}

/// `gpu()`, with whether a device was there when it could not be opened.
pub fn open() -> std::result::Result<&'static Gpu, &'static Unopened> {
    GPU.get_or_init(Gpu::open).as_ref()
}

/// Whether a graph capture is open on the device (work queued now is
/// recorded, not run).
pub(crate) fn capturing() -> bool {
    matches!(GPU.get(), Some(Ok(g)) if g.pool.capturing())
}

/// The open device, for code that only runs on device tensors (which
/// cannot exist unless `gpu()` succeeded).
pub(crate) fn opened() -> &'static Gpu {
    match GPU.get() {
        Some(Ok(g)) => g,
        _ => unreachable!("a device tensor exists only after the GPU was opened"),
    }
}

impl Gpu {
    fn open() -> std::result::Result<Gpu, Unopened> {
        let emulated = emulation_requested();
        let driver: Box<dyn Driver> = if emulated {
            Box::new(crate::emu::Emulator::open()?)
        } else {
            Box::new(driver::CudaDriver::open()?)
        };
        Ok(Gpu {
            versions: driver.versions(),
            description: driver.description(),
            max_shared_bytes: driver.max_shared_bytes(),
            emulated,
            driver,
            pool: memory::Pool::new(),
            functions: Mutex::new(HashMap::new()),
            error: Mutex::new(None),
            failed: AtomicBool::new(false),
            launches: AtomicU64::new(0),
            graph_launches: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            launches_at_last_wait: AtomicU64::new(0),
        })
    }

    pub(crate) fn driver(&self) -> &dyn Driver {
        &*self.driver
    }

    /// Keeps the first failure; later launches are skipped.
    pub(crate) fn fail(&self, what: String) {
        let mut e = self.error.lock().expect("error lock");
        if e.is_none() {
            *e = Some(what);
        }
        self.failed.store(true, Ordering::Release);
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The first failure since the device was opened, if any.
    pub fn check(&self) -> Result<()> {
        match &*self.error.lock().expect("error lock") {
            Some(e) => Err(Error(format!("CUDA: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits for all queued work, then reports any failure.
    pub fn synchronize(&self) -> Result<()> {
        if !self.pool.outside_capture(|| "a wait for the device".into()) {
            return Err(Error(
                "CUDA: a wait for the device while a graph capture is open".into(),
            ));
        }
        self.count_wait();
        if let Err(e) = self.driver.synchronize() {
            self.fail(format!("synchronize: {e}"));
        }
        self.check()
    }

    fn count_wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.launches_at_last_wait
            .store(self.launches(), Ordering::Relaxed);
    }

    /// How many times the host waited for the device so far (a download
    /// or a synchronisation each), and how many launches had been issued
    /// at the last wait: a training step that waits once, after queueing
    /// its update, shows one more wait and `launches()` launches at it.
    pub fn host_waits(&self) -> (u64, u64) {
        (
            self.waits.load(Ordering::Relaxed),
            self.launches_at_last_wait.load(Ordering::Relaxed),
        )
    }

    /// Copies host values into a device tensor of the same length,
    /// narrowing to bf16 on the host when the tensor is bf16.
    pub(crate) fn upload(&self, host: &[f32], dst: &Tensor) {
        match dst.dtype() {
            DType::F32 => self.upload_raw(host, dst.device_ptr()),
            DType::Bf16 => {
                let narrow: Vec<u16> = host
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_bits())
                    .collect();
                self.upload_raw(&narrow, dst.device_ptr())
            }
        }
    }

    /// Copies plain host values (pointer tables, coefficients) to a device
    /// address holding at least `host.len()` of them.
    pub(crate) fn upload_raw<T: bytemuck::Pod>(&self, host: &[T], dst: u64) {
        let bytes = std::mem::size_of_val(host);
        if self.has_failed()
            || !self
                .pool
                .outside_capture(|| format!("an upload of {bytes} B from host memory"))
        {
            return;
        }
        if let Err(e) = self.driver.upload(bytemuck::cast_slice(host), dst) {
            self.fail(format!("upload of {bytes} B: {e}"));
        }
    }

    /// Copies `bytes` from one device address to another, on the stream.
    pub(crate) fn copy(&self, src: u64, dst: u64, bytes: usize) {
        if self.has_failed() {
            return;
        }
        if let Err(e) = self.driver.copy(src, dst, bytes) {
            self.fail(format!("device copy of {bytes} B: {e}"));
        }
    }

    /// Waits for the stream and copies a device tensor back as f32.
    pub(crate) fn download(&self, src: &Tensor) -> Result<Vec<f32>> {
        self.check()?;
        let n = src.numel();
        if !self
            .pool
            .outside_capture(|| format!("a download of {n} values to host memory"))
        {
            return Err(Error(format!(
                "CUDA: a download of {n} values while a graph capture is open"
            )));
        }
        self.count_wait();
        let copy = |bytes: &mut [u8]| {
            if let Err(e) = self.driver.download(src.device_ptr(), bytes) {
                self.fail(format!("download of {n} values: {e}"));
            }
            self.check()
        };
        match src.dtype() {
            DType::F32 => {
                let mut v = vec![0f32; n];
                copy(bytemuck::cast_slice_mut(&mut v))?;
                Ok(v)
            }
            DType::Bf16 => {
                let mut v = vec![0u16; n];
                copy(bytemuck::cast_slice_mut(&mut v))?;
                Ok(v.iter()
                    .map(|&b| half::bf16::from_bits(b).to_f32())
                    .collect())
            }
        }
    }

    /// Launches `<kernel>_<dtype>` on the stream. Never blocks the host
    /// (on a GPU).
    pub fn launch(
        &self,
        kernel: &'static str,
        dtype: DType,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) {
        if self.has_failed() {
            return;
        }
        if let Err(e) = self.try_launch(kernel, Some(dtype), grid, block, shared_mem_bytes, args) {
            self.fail(e);
        }
    }

    /// Launches a kernel by its full exported name (one with no type
    /// variants).
    pub fn launch_named(
        &self,
        name: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) {
        if self.has_failed() {
            return;
        }
        if let Err(e) = self.try_launch(name, None, grid, block, shared_mem_bytes, args) {
            self.fail(e);
        }
    }

    /// The one launch path: loads the kernel (once), counts the launch,
    /// and hands it to the driver. An empty grid launches nothing. The
    /// error is returned, not kept: `launch` keeps it (sticky); probes of
    /// the emulated device's checks read it.
    pub fn try_launch(
        &self,
        base: &'static str,
        dtype: Option<DType>,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) -> std::result::Result<(), String> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let name = || kernel_name(base, dtype);
        if shared_mem_bytes > self.max_shared_bytes {
            // (The driver would refuse the launch; say why.)
            return Err(format!(
                "{}: asks for {shared_mem_bytes} B of shared memory, the device has {}",
                name(),
                self.max_shared_bytes
            ));
        }
        let id = {
            let mut cache = self.functions.lock().expect("function cache lock");
            let loaded = match cache.entry((base, dtype)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(LoadedKernel {
                    id: self.driver.kernel(&name())?,
                    launches: 0,
                }),
            };
            loaded.launches += 1;
            loaded.id
        };
        self.driver
            .launch(id, grid, block, shared_mem_bytes, args)
            .map_err(|e| format!("launching {} grid {grid:?} block {block:?}: {e}", name()))?;
        self.launches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Every kernel this build can launch, by exported name.
    pub fn kernel_names(&self) -> Vec<String> {
        self.driver.kernel_names()
    }

    /// How many times each kernel was launched from the host so far (a
    /// kernel inside a graph counts once, when it was captured).
    pub fn kernel_launch_counts(&self) -> Vec<(String, u64)> {
        let cache = self.functions.lock().expect("function cache lock");
        cache
            .iter()
            .map(|(&(base, dtype), k)| (kernel_name(base, dtype), k.launches))
            .collect()
    }

    /// Kernel launches issued from the host so far (a replayed graph counts
    /// once, in `graph_launches`, whatever it contains).
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    pub fn graph_launches(&self) -> u64 {
        self.graph_launches.load(Ordering::Relaxed)
    }

    /// The caching allocator's figures (bytes in use, cached, peak, and
    /// how many buffers it ever took from the driver).
    pub fn pool_stats(&self) -> memory::PoolStats {
        self.pool.stats()
    }

    pub(crate) fn count_graph_launch(&self) {
        self.graph_launches.fetch_add(1, Ordering::Relaxed);
    }
}

/// The exported name: `base`, with the type suffix when it has variants.
fn kernel_name(base: &str, dtype: Option<DType>) -> String {
    match dtype {
        Some(d) => format!("{base}_{}", d.suffix()),
        None => base.to_string(),
    }
}

/// Blocks of `threads` covering `n` items, as a 1-D grid.
pub fn blocks_for(n: usize, threads: u32) -> (u32, u32, u32) {
    (n.div_ceil(threads as usize).max(1) as u32, 1, 1)
}

/// A size as the `int` the kernels take.
pub fn int(n: usize) -> Arg {
    Arg::I32(i32::try_from(n).expect("size fits the kernels' int"))
}
