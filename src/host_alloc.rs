//! The binary's global allocator: the system's, except that large blocks
//! (activations, gradients, patch and scratch buffers: 1 MiB and up) are
//! kept when freed and handed out again for the next request of their size
//! class, instead of going back to the kernel.
//!
//! Why: glibc serves blocks of 32 MiB and more (a 256x256x128 f32
//! activation is 32 MiB) with a fresh mmap each time, and trims the heap
//! behind smaller ones, so every op's output was first-touch page faults:
//! 10.5% of a 256x256 CPU restoration's time (perf, cpu-clock). A reused
//! block costs a memset where zeroed memory is asked for, nothing otherwise.
//!
//! Bounds: at most SLOTS blocks and MAX_HELD bytes are kept; beyond that a
//! block goes back to the system. Sizes are rounded up to a size class
//! (1/16 of their power of two) so that nearby sizes share blocks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Smallest block kept.
const MIN_KEPT: usize = 1 << 20;
/// Most blocks kept at once.
const SLOTS: usize = 64;
/// Most bytes kept at once.
const MAX_HELD: usize = 1 << 30;
/// Blocks are kept only for this alignment or less (what the system's
/// allocator gives large blocks anyway).
const KEPT_ALIGN: usize = 16;

struct Held {
    blocks: [(usize, usize); SLOTS],
    count: usize,
    bytes: usize,
}

pub struct RecyclingAllocator {
    held: Mutex<Held>,
}

impl RecyclingAllocator {
    pub const fn new() -> RecyclingAllocator {
        RecyclingAllocator {
            held: Mutex::new(Held {
                blocks: [(0, 0); SLOTS],
                count: 0,
                bytes: 0,
            }),
        }
    }

    /// A kept block of exactly `size` bytes (a size class), if any.
    fn take(&self, size: usize) -> Option<*mut u8> {
        let mut held = self.held.lock().ok()?;
        let count = held.count;
        let i = held.blocks[..count].iter().position(|&(_, s)| s == size)?;
        let (ptr, _) = held.blocks[i];
        held.blocks[i] = held.blocks[count - 1];
        held.count -= 1;
        held.bytes -= size;
        Some(ptr as *mut u8)
    }

    /// Keeps a block; false when there is no room for it.
    fn give(&self, ptr: *mut u8, size: usize) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        if held.count == SLOTS || held.bytes + size > MAX_HELD {
            return false;
        }
        let count = held.count;
        held.blocks[count] = (ptr as usize, size);
        held.count += 1;
        held.bytes += size;
        true
    }
}

impl Default for RecyclingAllocator {
    fn default() -> Self {
        RecyclingAllocator::new()
    }
}

/// The size class of a large block: rounded up to 1/16 of its power of two.
fn class(size: usize) -> usize {
    let step = size.next_power_of_two() / 16;
    size.div_ceil(step) * step
}

fn kept(layout: Layout) -> bool {
    layout.size() >= MIN_KEPT && layout.align() <= KEPT_ALIGN
}

/// The layout the system allocates a kept block with.
fn system_layout(layout: Layout) -> Layout {
    // SAFETY: the class is at least the size, a multiple of 65536 (so of the
    // alignment, at most 16), and far below isize::MAX for any size the
    // caller's layout allowed.
    unsafe { Layout::from_size_align_unchecked(class(layout.size()), layout.align()) }
}

// SAFETY: every block handed out is either fresh from `System` with at least
// the requested size and alignment, or a kept block of the same size class
// (so at least the requested size) that the system allocated with alignment
// at most KEPT_ALIGN and that nothing else holds since it was freed.
unsafe impl GlobalAlloc for RecyclingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !kept(layout) {
            return System.alloc(layout);
        }
        let system = system_layout(layout);
        match self.take(system.size()) {
            Some(ptr) => ptr,
            None => System.alloc(system),
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !kept(layout) {
            return System.alloc_zeroed(layout);
        }
        let system = system_layout(layout);
        match self.take(system.size()) {
            Some(ptr) => {
                std::ptr::write_bytes(ptr, 0, layout.size());
                ptr
            }
            None => System.alloc_zeroed(system),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !kept(layout) {
            return System.dealloc(ptr, layout);
        }
        let system = system_layout(layout);
        if !self.give(ptr, system.size()) {
            System.dealloc(ptr, system);
        }
    }
}
