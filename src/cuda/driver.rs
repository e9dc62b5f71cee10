//! The seam under the CUDA backend: what `Gpu` needs from a device. Two
//! sibling implementations sit behind it: the CUDA driver (`CudaDriver`,
//! here, through cudarc) and the emulated device (`crate::emu`), which runs
//! the same kernels compiled for the host. Everything above it (the launch
//! path, the caching allocator, graphs, the wrappers, training and
//! restoration) is the same code for both.
//!
//! One stream: every method is ordered after the work queued before it.
//! Errors are strings; `Gpu` keeps the first one (sticky).

use super::{Arg, Unopened};
use cudarc::driver::{
    result, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaStream, LaunchConfig,
    PushKernelArg,
};
use std::sync::{Arc, Mutex};

/// A kernel, as the driver that loaded it numbers them.
pub(crate) type KernelId = usize;

pub(crate) trait Driver: Send + Sync {
    /// Device name, compute capability, memory.
    fn description(&self) -> String;
    /// The driver's versions and the build's (see `Gpu::versions`).
    fn versions(&self) -> String;
    /// Dynamic shared memory a block may opt in to.
    fn max_shared_bytes(&self) -> u32;
    /// Every kernel this build can launch, by exported name.
    fn kernel_names(&self) -> Vec<String>;
    /// Loads the kernel `name` (once; the caller caches the id).
    fn kernel(&self, name: &str) -> Result<KernelId, String>;
    /// Queues a launch (the emulated device runs it before returning).
    fn launch(
        &self,
        kernel: KernelId,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) -> Result<(), String>;
    fn alloc(&self, bytes: usize) -> Result<u64, String>;
    fn free(&self, ptr: u64);
    /// How many bytes of the buffer at `ptr` its current owner may touch
    /// (0 once it is back in the pool). The emulated device checks every
    /// access against it; the CUDA driver has nothing to do.
    fn set_live_bytes(&self, _ptr: u64, _bytes: usize) {}
    /// Copies host bytes to a device address (returns once `src` may be
    /// reused).
    fn upload(&self, src: &[u8], dst: u64) -> Result<(), String>;
    /// Waits for the stream, then copies device bytes to the host.
    fn download(&self, src: u64, dst: &mut [u8]) -> Result<(), String>;
    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<(), String>;
    fn synchronize(&self) -> Result<(), String>;
    /// From here until `end_capture`, launches and copies are recorded
    /// into a graph instead of run.
    fn begin_capture(&self) -> Result<(), String>;
    fn end_capture(&self) -> Result<Box<dyn DriverGraph>, String>;
}

/// A recorded graph, ready to replay.
pub(crate) trait DriverGraph {
    fn launch(&self) -> Result<(), String>;
}

/// The CUDA driver: one context, one stream, the fatbin modules build.rs
/// compiled.
pub(crate) struct CudaDriver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Vec<(&'static str, Arc<CudaModule>)>,
    functions: Mutex<Vec<CudaFunction>>,
    max_shared_bytes: u32,
    description: String,
    versions: String,
}

/// The CUDA version the driver supports (`cuDriverGetVersion`), "13.0".
fn driver_cuda_version() -> Result<String, String> {
    let mut v = 0;
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(format!("cuDriverGetVersion: {r:?}"));
    }
    Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// The NVIDIA kernel module's version, where Linux tells it.
fn kernel_module_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let line = text.lines().next()?;
    let after = line.split("Kernel Module").nth(1)?;
    after.split_whitespace().next().map(str::to_string)
}

/// What the build's kernels are: "SASS sm_90, sm_80 + PTX ISA 9.0
/// (compute_90), nvcc 13.0.88".
pub(crate) fn build_kernels() -> String {
    let (sass, ptx) = super::compiled_archs();
    match super::compiled_modules().first() {
        None => "no kernels (built without nvcc)".into(),
        Some(m) => format!(
            "SASS {} + PTX ISA {} ({ptx}), nvcc {}",
            sass.join(", "),
            m.ptx_isa,
            super::compiled_nvcc()
        ),
    }
}

/// How a kernel module the driver would not load is reported: which
/// module, on which device, the error, what the build holds (its SASS and
/// the PTX ISA a driver must know to JIT it elsewhere) and the versions.
pub(crate) fn module_refused(name: &str, device: &str, error: &str, versions: &str) -> String {
    let needs = match super::compiled_modules().iter().find(|m| m.name == name) {
        Some(m) => format!(
            " (a card with none of that SASS needs a driver that knows PTX ISA {})",
            m.ptx_isa
        ),
        None => String::new(),
    };
    format!(
        "kernel module {name} does not load on {device}: {error}; the build holds {}{needs} [{versions}]",
        build_kernels()
    )
}

impl CudaDriver {
    pub(crate) fn open() -> Result<CudaDriver, Unopened> {
        let absent = |reason: String| Unopened {
            reason,
            device_present: false,
        };
        // cudarc panics inside CudaContext::new when libcuda is missing.
        if !super::driver_present() {
            return Err(absent(
                "no CUDA driver library (libcuda) on this machine".into(),
            ));
        }
        let count = match CudaContext::device_count() {
            Ok(n) => n,
            Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => 0,
            Err(e) => {
                return Err(Unopened {
                    reason: format!("the CUDA driver library is there but fails to start: {e:?}"),
                    device_present: true,
                })
            }
        };
        if count < 1 {
            return Err(absent("the CUDA driver sees no device".into()));
        }
        let driver = driver_cuda_version().unwrap_or_else(|e| format!("unknown ({e})"));
        let versions = format!(
            "driver for CUDA {driver}{}; kernels: {}",
            kernel_module_version().map_or(String::new(), |v| format!(" (kernel module {v})")),
            build_kernels()
        );
        // From here a device is there: failing to use it is a fault.
        let fault = |what: String| Unopened {
            reason: format!("{what} [{versions}]"),
            device_present: true,
        };
        if super::compiled_modules().is_empty() {
            return Err(fault(
                "this build has no CUDA kernels: nvcc was not found when it was compiled \
                 (scripts/install-cuda-toolchain.sh installs the pinned one)"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(0).map_err(|e| fault(format!("CUDA context: {e:?}")))?;
        // Buffers are managed by memory::Pool, not through cudarc's
        // slices, so its per-slice event tracking would only add work.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| fault(format!("CUDA stream: {e:?}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| fault(format!("{e:?}")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let total = ctx.total_mem().unwrap_or(0);
        let description = format!(
            "{name} (sm_{major}{minor}, {:.1} GiB)",
            total as f64 / (1u64 << 30) as f64
        );
        let modules = super::compiled_modules()
            .iter()
            .map(|m| {
                ctx.load_module(cudarc::nvrtc::Ptx::from_binary(m.fatbin.to_vec()))
                    .map(|loaded| (m.name, loaded))
                    .map_err(|e| Unopened {
                        reason: module_refused(m.name, &description, &format!("{e:?}"), &versions),
                        device_present: true,
                    })
            })
            .collect::<Result<Vec<_>, Unopened>>()?;
        let optin = cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN;
        let max_shared_bytes = ctx.attribute(optin).map_err(|e| fault(format!("{e:?}")))? as u32;
        Ok(CudaDriver {
            description,
            versions,
            max_shared_bytes,
            ctx,
            stream,
            modules,
            functions: Mutex::new(Vec::new()),
        })
    }

    /// Makes the context current on the calling thread (every driver call
    /// needs it; threads of the data loader or rayon may call in).
    fn bind(&self) -> Result<(), String> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| format!("binding the CUDA context: {e:?}"))
    }
}

impl Driver for CudaDriver {
    fn description(&self) -> String {
        self.description.clone()
    }

    fn versions(&self) -> String {
        self.versions.clone()
    }

    fn max_shared_bytes(&self) -> u32 {
        self.max_shared_bytes
    }

    fn kernel_names(&self) -> Vec<String> {
        super::compiled_modules()
            .iter()
            .flat_map(|m| m.kernels.iter().map(|k| k.to_string()))
            .collect()
    }

    fn kernel(&self, name: &str) -> Result<KernelId, String> {
        self.bind()?;
        let f = self
            .modules
            .iter()
            .find_map(|(_, m)| m.load_function(name).ok())
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
        let mut functions = self.functions.lock().expect("function table lock");
        functions.push(f);
        Ok(functions.len() - 1)
    }

    fn launch(
        &self,
        kernel: KernelId,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) -> Result<(), String> {
        self.bind()?;
        let func = self.functions.lock().expect("function table lock")[kernel].clone();
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
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    fn alloc(&self, bytes: usize) -> Result<u64, String> {
        self.bind()?;
        unsafe { result::malloc_sync(bytes) }.map_err(|e| format!("{e:?}"))
    }

    fn free(&self, ptr: u64) {
        // Best effort: a failed free leaves the memory to the driver.
        if self.bind().is_ok() {
            let _ = unsafe { result::free_sync(ptr) };
        }
    }

    fn upload(&self, src: &[u8], dst: u64) -> Result<(), String> {
        self.bind()?;
        // Pageable memory: the copy returns once `src` is staged.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| format!("{e:?}"))
    }

    fn download(&self, src: u64, dst: &mut [u8]) -> Result<(), String> {
        self.bind()?;
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| format!("{e:?}"))?;
        self.synchronize()
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<(), String> {
        self.bind()?;
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(|e| format!("{e:?}"))
    }

    fn synchronize(&self) -> Result<(), String> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| format!("{e:?}"))
    }

    fn begin_capture(&self) -> Result<(), String> {
        use cudarc::driver::sys::CUstreamCaptureMode;
        self.bind()?;
        // Global mode: while the capture is open the driver refuses, from
        // any thread, the calls a capture may not contain (allocation,
        // synchronous copies, waits) rather than running them outside the
        // graph as relaxed mode would.
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
            .map_err(|e| format!("{e:?}"))
    }

    fn end_capture(&self) -> Result<Box<dyn DriverGraph>, String> {
        use cudarc::driver::sys::CUgraphInstantiate_flags;
        self.bind()?;
        match self.stream.end_capture(CUgraphInstantiate_flags(0)) {
            Ok(Some(g)) => Ok(Box::new(g)),
            Ok(None) => Err("the capture recorded nothing".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }
}

impl DriverGraph for CudaGraph {
    fn launch(&self) -> Result<(), String> {
        CudaGraph::launch(self).map_err(|e| format!("{e:?}"))
    }
}
