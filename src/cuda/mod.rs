//! The CUDA backend: one device, one stream, the PTX modules build.rs
//! compiled from `kernels/*.cu`, a caching allocator, and one launch path
//! that every kernel wrapper goes through (so launches are counted, and a
//! failure is kept instead of panicking).
//!
//! One file per op family, mirroring `cpu/`: each wrapper takes and returns
//! device `Tensor`s with the same signature as its CPU twin, so `ops` only
//! picks the backend. Kernels are exported as `<name>_f32` and
//! `<name>_bf16` (see kernels/README.md); `launch` adds the suffix.
//!
//! Errors: a failed launch or allocation is stored ("sticky", as the CUDA
//! runtime does) and every later launch is skipped; `Gpu::check` and every
//! copy back to the host return it as an `Error`. Ops therefore stay
//! infallible, and the caller checks once per step or per sample.

pub mod attention;
pub mod bridge;
pub mod conv;
pub mod elementwise;
pub mod graph;
pub mod memory;
pub mod norm;
pub mod optim;
pub mod resample;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use cudarc::driver::{
    result, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// (module name, PTX) of every kernel file this build compiled.
pub fn compiled_modules() -> &'static [(&'static str, &'static str)] {
    ptx::PTX_MODULES
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

/// The device, its stream and its kernels.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Vec<(&'static str, Arc<CudaModule>)>,
    functions: Mutex<HashMap<(&'static str, Option<DType>), CudaFunction>>,
    pub(crate) pool: memory::Pool,
    error: Mutex<Option<String>>,
    failed: AtomicBool,
    launches: AtomicU64,
    graph_launches: AtomicU64,
    /// Dynamic shared memory a block may opt in to.
    max_shared_bytes: u32,
    /// Device name, compute capability, memory.
    pub description: String,
}

static GPU: OnceLock<std::result::Result<Gpu, String>> = OnceLock::new();

/// The CUDA device (ordinal 0), opened on first use; an error says why
/// there is none (no driver library, no device, a build without kernels).
pub fn gpu() -> Result<&'static Gpu> {
    GPU.get_or_init(Gpu::open)
        .as_ref()
        .map_err(|e| Error(e.clone()))
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
    fn open() -> std::result::Result<Gpu, String> {
        // cudarc panics inside CudaContext::new when libcuda is missing.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver library (libcuda) on this machine".into());
        }
        if compiled_modules().is_empty() {
            return Err(
                "this build has no CUDA kernels: nvcc was not found when it was compiled \
                 (scripts/install-cuda-toolchain.sh installs the pinned one)"
                    .into(),
            );
        }
        let count = CudaContext::device_count().map_err(|e| format!("CUDA: {e:?}"))?;
        if count < 1 {
            return Err("the CUDA driver sees no device".into());
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("CUDA context: {e:?}"))?;
        // Buffers are managed here (memory::Pool), not through cudarc's
        // slices, so its per-slice event tracking would only add work.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("CUDA stream: {e:?}"))?;
        let modules = compiled_modules()
            .iter()
            .map(|&(name, src)| {
                ctx.load_module(cudarc::nvrtc::Ptx::from_src(src))
                    .map(|m| (name, m))
                    .map_err(|e| format!("loading kernel module {name}: {e:?}"))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let total = ctx.total_mem().unwrap_or(0);
        let optin = cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
        let max_shared_bytes = ctx.attribute(optin).map_err(|e| format!("{e:?}"))? as u32;
        Ok(Gpu {
            description: format!(
                "{name} (sm_{major}{minor}, {:.1} GiB)",
                total as f64 / (1u64 << 30) as f64
            ),
            pool: memory::Pool::new(),
            max_shared_bytes,
            ctx,
            stream,
            modules,
            functions: Mutex::new(HashMap::new()),
            error: Mutex::new(None),
            failed: AtomicBool::new(false),
            launches: AtomicU64::new(0),
            graph_launches: AtomicU64::new(0),
        })
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
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
        if let Err(e) = self.stream.synchronize() {
            self.fail(format!("synchronize: {e:?}"));
        }
        self.check()
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
                // Pageable memory: the copy returns once `narrow` is staged.
                self.upload_raw(&narrow, dst.device_ptr())
            }
        }
    }

    /// Copies plain host values (pointer tables, coefficients) to a device
    /// address holding at least `host.len()` of them.
    pub(crate) fn upload_raw<T: Copy>(&self, host: &[T], dst: u64) {
        if self.has_failed() {
            return;
        }
        let _ = self.ctx.bind_to_thread();
        let r = unsafe { result::memcpy_htod_async(dst, host, self.stream.cu_stream()) };
        if let Err(e) = r {
            self.fail(format!(
                "upload of {} B: {e:?}",
                std::mem::size_of_val(host)
            ));
        }
    }

    /// Waits for the stream and copies a device tensor back as f32.
    pub(crate) fn download(&self, src: &Tensor) -> Result<Vec<f32>> {
        self.check()?;
        let _ = self.ctx.bind_to_thread();
        let s = self.stream.cu_stream();
        let n = src.numel();
        let copy = |what: std::result::Result<(), cudarc::driver::DriverError>| {
            if let Err(e) = what {
                self.fail(format!("download of {n} values: {e:?}"));
            }
            self.synchronize()
        };
        match src.dtype() {
            DType::F32 => {
                let mut v = vec![0f32; n];
                copy(unsafe { result::memcpy_dtoh_async(&mut v, src.device_ptr(), s) })?;
                Ok(v)
            }
            DType::Bf16 => {
                let mut v = vec![0u16; n];
                copy(unsafe { result::memcpy_dtoh_async(&mut v, src.device_ptr(), s) })?;
                Ok(v.iter()
                    .map(|&b| half::bf16::from_bits(b).to_f32())
                    .collect())
            }
        }
    }

    /// The kernel `base` (with `_f32`/`_bf16` added for a `dtype`), loaded
    /// once and cached by its static name: no string is built per launch.
    fn function(
        &self,
        base: &'static str,
        dtype: Option<DType>,
    ) -> std::result::Result<CudaFunction, String> {
        let mut cache = self.functions.lock().expect("function cache lock");
        if let Some(f) = cache.get(&(base, dtype)) {
            return Ok(f.clone());
        }
        let name = kernel_name(base, dtype);
        let f = self
            .modules
            .iter()
            .find_map(|(_, m)| m.load_function(&name).ok())
            .ok_or_else(|| format!("no kernel named {name} in this build"))?;
        // Allow every kernel the device's whole opt-in shared memory once,
        // here, rather than per launch (which a graph capture would see).
        // (Static plus dynamic may not pass the opt-in limit.)
        use cudarc::driver::sys::CUfunction_attribute as A;
        let fixed = f
            .get_attribute(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            .map_err(|e| format!("{name}: {e:?}"))?;
        let dynamic = self.max_shared_bytes as i32 - fixed;
        f.set_attribute(A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic)
            .map_err(|e| format!("{name}: shared memory limit {dynamic} B: {e:?}"))?;
        cache.insert((base, dtype), f.clone());
        Ok(f)
    }

    /// Launches `<kernel>_<dtype>` on the stream. Never blocks the host.
    pub fn launch(
        &self,
        kernel: &'static str,
        dtype: DType,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) {
        self.launch_kernel(kernel, Some(dtype), grid, block, shared_mem_bytes, args);
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
        self.launch_kernel(name, None, grid, block, shared_mem_bytes, args);
    }

    fn launch_kernel(
        &self,
        base: &'static str,
        dtype: Option<DType>,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) {
        if self.has_failed() || grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return;
        }
        let func = match self.function(base, dtype) {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        if shared_mem_bytes > self.max_shared_bytes {
            // (The driver would refuse the launch; say why.)
            return self.fail(format!(
                "{}: asks for {shared_mem_bytes} B of shared memory, the device has {}",
                kernel_name(base, dtype),
                self.max_shared_bytes
            ));
        }
        let mut builder = self.stream.launch_builder(&func);
        for a in args {
            match a {
                Arg::Ptr(p) | Arg::U64(p) => builder.arg(p),
                Arg::I32(v) => builder.arg(v),
                Arg::U32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes,
        };
        match unsafe { builder.launch(cfg) } {
            Ok(_) => {
                self.launches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.fail(format!(
                "launching {} grid {grid:?} block {block:?}: {e:?}",
                kernel_name(base, dtype)
            )),
        }
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
