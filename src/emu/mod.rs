//! The emulated device: the CUDA backend with no GPU. The same
//! `kernels/*.cu`, compiled for the host by build.rs against
//! `kernels/host/cuda_host.h` and instrumented, run in
//! `kernels/host/emu_runtime.cpp` (one fibre per CUDA thread, real
//! barriers and warp collectives), which checks every launch the way
//! compute-sanitizer would (see the runtime's header note).
//!
//! `NADB_CUDA_EMULATE=1` makes `cuda::gpu()` open it instead of the CUDA
//! driver. It is a `cuda::driver::Driver`: device memory is host memory
//! registered with its size, launches run before `launch` returns (so
//! every copy and launch is in stream order), and a graph capture records
//! launches and copies that a replay runs. Everything above the driver
//! seam (wrappers, the pool, graphs, training and restoration) runs
//! unchanged.
//!
//! `NADB_EMU_REFUSE_MODULE=NAME` makes opening it fail as a CUDA driver
//! that cannot load kernel module NAME does (a device present, a module
//! refused), so the GPU tests can show that such a start is a failure.

use crate::cuda::driver::{Driver, DriverGraph, KernelId};
use crate::cuda::{Arg, Unopened};
use std::sync::Mutex;

#[cfg(nadb_emu)]
mod ffi {
    use std::ffi::c_char;
    extern "C" {
        pub fn emu_kernel_count() -> usize;
        pub fn emu_kernel_name(i: usize) -> *const c_char;
        pub fn emu_kernel_kinds(i: usize) -> *const c_char;
        pub fn emu_max_dynamic_shared() -> u32;
        pub fn emu_alloc(bytes: usize) -> *mut u8;
        pub fn emu_free(p: *mut u8);
        pub fn emu_set_extent(p: u64, bytes: usize) -> i32;
        pub fn emu_check_range(p: u64, bytes: usize) -> i32;
        pub fn emu_launch(
            kernel: usize,
            grid: *const u32,
            block: *const u32,
            dynamic_bytes: u32,
            args: *const u64,
            error: *mut c_char,
            error_len: usize,
        ) -> i32;
    }
}

/// What `Driver::versions` says: there is no driver.
const EMULATED_VERSIONS: &str =
    "no CUDA driver and no CUDA version: emulated, the kernels built by the host C++ compiler";

/// Whether this build has the emulated device (a C++ compiler built it).
pub fn available() -> bool {
    cfg!(nadb_emu)
}

/// One kernel: its exported name and parameter kinds ('p' pointer, 'i'
/// 32-bit integer, 'l' 64-bit integer, 'f' f32, 'd' f64).
struct Kernel {
    name: String,
    kinds: Vec<u8>,
}

/// What a graph capture records.
#[derive(Clone)]
enum Op {
    Launch {
        kernel: KernelId,
        grid: [u32; 3],
        block: [u32; 3],
        shared: u32,
        args: Vec<u64>,
    },
    Copy {
        src: u64,
        dst: u64,
        bytes: usize,
    },
}

pub struct Emulator {
    kernels: Vec<Kernel>,
    capture: Mutex<Option<Vec<Op>>>,
}

impl Emulator {
    pub fn open() -> Result<Emulator, Unopened> {
        if let Ok(module) = std::env::var("NADB_EMU_REFUSE_MODULE") {
            return Err(Unopened {
                reason: crate::cuda::driver::module_refused(
                    &module,
                    "the emulated device",
                    "refused (NADB_EMU_REFUSE_MODULE, standing in for a driver that cannot load it)",
                    EMULATED_VERSIONS,
                ),
                device_present: true,
            });
        }
        #[cfg(nadb_emu)]
        {
            let c = |p: *const std::ffi::c_char| unsafe { std::ffi::CStr::from_ptr(p) };
            let kernels = (0..unsafe { ffi::emu_kernel_count() })
                .map(|i| Kernel {
                    name: c(unsafe { ffi::emu_kernel_name(i) })
                        .to_string_lossy()
                        .into_owned(),
                    kinds: c(unsafe { ffi::emu_kernel_kinds(i) }).to_bytes().to_vec(),
                })
                .collect();
            Ok(Emulator {
                kernels,
                capture: Mutex::new(None),
            })
        }
        #[cfg(not(nadb_emu))]
        Err(Unopened {
            reason: "this build has no emulated device (no C++ compiler when it was built)".into(),
            device_present: false,
        })
    }

    fn capturing(&self) -> std::sync::MutexGuard<'_, Option<Vec<Op>>> {
        self.capture.lock().expect("capture lock")
    }

    /// Refuses what a stream capture may not contain.
    fn not_capturing(&self, what: &str) -> Result<(), String> {
        match *self.capturing() {
            Some(_) => Err(format!("{what} while a graph capture is open")),
            None => Ok(()),
        }
    }

    /// Checks the launch's arguments against the kernel's parameters and
    /// packs them as the runtime reads them (one 64-bit word each).
    fn pack(&self, kernel: KernelId, args: &[Arg]) -> Result<Vec<u64>, String> {
        let k = &self.kernels[kernel];
        // Compared without allocating (this runs on every launch); the
        // strings are built only for the error.
        if !args.iter().map(kind).eq(k.kinds.iter().copied()) {
            let passed: String = args.iter().map(|a| kind(a) as char).collect();
            let wanted = String::from_utf8_lossy(&k.kinds);
            return Err(format!(
                "{}: the launch passes arguments ({passed}) where the kernel takes ({wanted}) \
                 (p pointer, i 32-bit integer, l 64-bit integer, f f32, d f64)",
                k.name
            ));
        }
        Ok(args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) | Arg::U64(p) => p,
                Arg::I32(v) => v as u32 as u64,
                Arg::U32(v) => v as u64,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect())
    }

    fn check_range(what: &str, ptr: u64, bytes: usize) -> Result<(), String> {
        if bytes == 0 || range_is_live(ptr, bytes) {
            Ok(())
        } else {
            Err(format!(
                "{what} of {bytes} B at 0x{ptr:x}: not inside one live device buffer"
            ))
        }
    }
}

fn kind(a: &Arg) -> u8 {
    match a {
        Arg::Ptr(_) => b'p',
        Arg::I32(_) | Arg::U32(_) => b'i',
        Arg::U64(_) => b'l',
        Arg::F32(_) => b'f',
    }
}

#[cfg(nadb_emu)]
fn range_is_live(ptr: u64, bytes: usize) -> bool {
    unsafe { ffi::emu_check_range(ptr, bytes) != 0 }
}

#[cfg(not(nadb_emu))]
fn range_is_live(_: u64, _: usize) -> bool {
    false
}

/// Runs one op now.
fn run(op: &Op) -> Result<(), String> {
    match op {
        Op::Launch {
            kernel,
            grid,
            block,
            shared,
            args,
        } => run_kernel(*kernel, grid, block, *shared, args),
        Op::Copy { src, dst, bytes } => {
            Emulator::check_range("device copy source", *src, *bytes)?;
            Emulator::check_range("device copy destination", *dst, *bytes)?;
            // Distinct live buffers or the same one: copy as memmove does.
            unsafe { std::ptr::copy(*src as *const u8, *dst as *mut u8, *bytes) };
            Ok(())
        }
    }
}

#[cfg(nadb_emu)]
fn run_kernel(
    kernel: KernelId,
    grid: &[u32; 3],
    block: &[u32; 3],
    shared: u32,
    args: &[u64],
) -> Result<(), String> {
    let mut error = vec![0u8; 1024];
    let failed = unsafe {
        ffi::emu_launch(
            kernel,
            grid.as_ptr(),
            block.as_ptr(),
            shared,
            args.as_ptr(),
            error.as_mut_ptr().cast(),
            error.len(),
        )
    };
    if failed == 0 {
        return Ok(());
    }
    let end = error.iter().position(|&b| b == 0).unwrap_or(error.len());
    Err(format!(
        "emulated device: {}",
        String::from_utf8_lossy(&error[..end])
    ))
}

#[cfg(not(nadb_emu))]
fn run_kernel(_: KernelId, _: &[u32; 3], _: &[u32; 3], _: u32, _: &[u64]) -> Result<(), String> {
    Err("this build has no emulated device".into())
}

impl Driver for Emulator {
    fn description(&self) -> String {
        "emulated device (the kernels compiled for this CPU, checked like compute-sanitizer)".into()
    }

    fn versions(&self) -> String {
        EMULATED_VERSIONS.into()
    }

    fn max_shared_bytes(&self) -> u32 {
        #[cfg(nadb_emu)]
        return unsafe { ffi::emu_max_dynamic_shared() };
        #[cfg(not(nadb_emu))]
        0
    }

    fn kernel_names(&self) -> Vec<String> {
        self.kernels.iter().map(|k| k.name.clone()).collect()
    }

    fn kernel(&self, name: &str) -> Result<KernelId, String> {
        self.kernels
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| format!("no kernel named {name} in this build"))
    }

    fn launch(
        &self,
        kernel: KernelId,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[Arg],
    ) -> Result<(), String> {
        let op = Op::Launch {
            kernel,
            grid: [grid.0, grid.1, grid.2],
            block: [block.0, block.1, block.2],
            shared: shared_mem_bytes,
            args: self.pack(kernel, args)?,
        };
        if let Some(recorded) = &mut *self.capturing() {
            recorded.push(op);
            return Ok(());
        }
        run(&op)
    }

    fn alloc(&self, bytes: usize) -> Result<u64, String> {
        self.not_capturing("an allocation")?;
        #[cfg(nadb_emu)]
        {
            let p = unsafe { ffi::emu_alloc(bytes) };
            if !p.is_null() {
                return Ok(p as u64);
            }
        }
        Err(format!(
            "the host has no {bytes} B for emulated device memory"
        ))
    }

    fn free(&self, ptr: u64) {
        #[cfg(nadb_emu)]
        unsafe {
            ffi::emu_free(ptr as *mut u8)
        };
        #[cfg(not(nadb_emu))]
        let _ = ptr;
    }

    fn set_live_bytes(&self, ptr: u64, bytes: usize) {
        #[cfg(nadb_emu)]
        {
            let known = unsafe { ffi::emu_set_extent(ptr, bytes) };
            assert!(
                known != 0,
                "emulated device: 0x{ptr:x} is not a device buffer of {bytes} B or more"
            );
        }
        #[cfg(not(nadb_emu))]
        let _ = (ptr, bytes);
    }

    fn upload(&self, src: &[u8], dst: u64) -> Result<(), String> {
        self.not_capturing("an upload from host memory")?;
        Self::check_range("upload", dst, src.len())?;
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: u64, dst: &mut [u8]) -> Result<(), String> {
        self.not_capturing("a download to host memory")?;
        Self::check_range("download", src, dst.len())?;
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<(), String> {
        let op = Op::Copy { src, dst, bytes };
        if let Some(recorded) = &mut *self.capturing() {
            recorded.push(op);
            return Ok(());
        }
        run(&op)
    }

    fn synchronize(&self) -> Result<(), String> {
        self.not_capturing("a synchronisation")
    }

    fn begin_capture(&self) -> Result<(), String> {
        let mut c = self.capturing();
        if c.is_some() {
            return Err("a graph capture is already open".into());
        }
        *c = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> Result<Box<dyn DriverGraph>, String> {
        match self.capturing().take() {
            Some(ops) if !ops.is_empty() => Ok(Box::new(EmulatedGraph { ops })),
            Some(_) => Err("the capture recorded nothing".into()),
            None => Err("no graph capture is open".into()),
        }
    }
}

/// A replay runs the recorded launches and copies in order.
struct EmulatedGraph {
    ops: Vec<Op>,
}

impl DriverGraph for EmulatedGraph {
    fn launch(&self) -> Result<(), String> {
        self.ops.iter().try_for_each(run)
    }
}
