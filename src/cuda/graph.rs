//! CUDA graphs: record what a closure enqueues on the stream once, replay
//! it with one launch. The sampler (`bridge::sample`) captures its whole
//! loop, every network evaluation and posterior step, as one graph.
//!
//! Rules for a captured body: its inputs and outputs are allocated before
//! the capture (the graph reads and writes those addresses on every
//! replay); everything it allocates inside is dropped by its end (the pool
//! hands those buffers to the graph, see `memory`); it never waits for the
//! device. Run the body once uncaptured first, so the kernels are loaded
//! and the pool holds buffers of every size it needs. A body that breaks
//! these rules (an upload, a download, a wait, a buffer the pool would
//! take from the driver) makes `capture` fail naming the first such call;
//! the driver captures in global mode, so it refuses them as well.

use super::driver::DriverGraph;
use super::{opened, Gpu};
use crate::error::{Error, Result};

pub struct Graph {
    graph: Box<dyn DriverGraph>,
    /// The pool buffers the captured work uses, held until the graph drops.
    buffers: Vec<(u64, usize)>,
    /// Kernel launches recorded in the graph (each replay runs them all).
    pub kernels: u64,
}

impl Graph {
    /// Captures the work `body` enqueues.
    pub fn capture(body: impl FnOnce()) -> Result<Graph> {
        let gpu = opened();
        gpu.check()?;
        let launches_before = gpu.launches();
        gpu.pool.begin_capture();
        if let Err(e) = gpu.driver().begin_capture() {
            gpu.pool.end_capture().ok();
            return Err(Error(format!("CUDA graph capture: {e}")));
        }
        body();
        let graph = gpu.driver().end_capture();
        let buffers = gpu.pool.end_capture();
        gpu.check()?;
        let buffers = buffers.map_err(|e| Error(format!("CUDA graph capture: {e}")))?;
        let graph = match graph {
            Ok(g) => g,
            Err(e) => {
                gpu.pool.unpin(&buffers);
                return Err(Error(format!("CUDA graph capture: {e}")));
            }
        };
        Ok(Graph {
            graph,
            buffers,
            kernels: gpu.launches() - launches_before,
        })
    }

    /// Replays the captured work (asynchronously, one launch).
    pub fn launch(&self) -> Result<()> {
        let gpu: &Gpu = opened();
        gpu.check()?;
        if let Err(e) = self.graph.launch() {
            // The device may be left in any state: keep the failure.
            gpu.fail(format!("CUDA graph launch: {e}"));
            return gpu.check();
        }
        gpu.count_graph_launch();
        Ok(())
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        opened().pool.unpin(&self.buffers);
    }
}
