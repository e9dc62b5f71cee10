//! A tape autograd in one page.
//!
//! A `Var` is a value and, if anything it depends on wants a gradient, the
//! index of the tape node that made it. Each op (see `ops`) computes its
//! output and hands the tape a closure that maps the output's gradient to
//! its inputs' gradients, capturing (by reference count, not by copy) what
//! it needs. `backward` walks the tape once from the end, freeing each
//! intermediate gradient as soon as it has been passed on; leaves
//! (parameters, or inputs that asked for it) keep theirs.
//!
//! A tape made with `Tape::no_grad()` records nothing: closures are never
//! built and every intermediate value is freed as soon as it is dropped,
//! which is how inference runs.

use crate::tensor::Tensor;
use std::cell::RefCell;
use std::rc::Rc;

/// Maps the output gradient, and which inputs want one, to input gradients.
pub type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Vec<Option<Tensor>>>;

struct Node {
    /// The op that made it, for anomaly reports.
    op: &'static str,
    inputs: Vec<Option<usize>>,
    /// None for leaves.
    backward: Option<BackwardFn>,
}

#[derive(Clone)]
pub struct Var {
    value: Rc<Tensor>,
    node: Option<usize>,
}

impl Var {
    /// A value no gradient flows to (data, targets, frozen weights).
    pub fn constant(t: Tensor) -> Var {
        Var {
            value: Rc::new(t),
            node: None,
        }
    }

    pub fn value(&self) -> &Tensor {
        &self.value
    }

    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The value, shared: cheap, and what an op's backward closure captures.
    pub fn shared(&self) -> Rc<Tensor> {
        self.value.clone()
    }

    /// The value, moved out if no one else holds it.
    pub fn into_tensor(self) -> Tensor {
        Rc::try_unwrap(self.value).unwrap_or_else(|shared| (*shared).clone())
    }
}

pub struct Tape {
    recording: bool,
    /// Check every op's output (and, in backward, every gradient) for NaN
    /// and infinity, and keep the first offender.
    detect_anomaly: bool,
    anomaly: RefCell<Option<String>>,
    nodes: RefCell<Vec<Node>>,
}

impl Default for Tape {
    fn default() -> Tape {
        Tape::new()
    }
}

impl Tape {
    pub fn new() -> Tape {
        Tape {
            recording: true,
            detect_anomaly: false,
            anomaly: RefCell::new(None),
            nodes: RefCell::new(Vec::new()),
        }
    }

    pub fn no_grad() -> Tape {
        Tape {
            recording: false,
            ..Tape::new()
        }
    }

    /// A recording tape that checks every value it sees for NaN and infinity.
    pub fn detecting_anomalies() -> Tape {
        Tape {
            detect_anomaly: true,
            ..Tape::new()
        }
    }

    /// The first non-finite value seen, described (with `detecting_anomalies`).
    pub fn anomaly(&self) -> Option<String> {
        self.anomaly.borrow().clone()
    }

    fn check(&self, t: &Tensor, what: impl FnOnce() -> String) {
        if self.detect_anomaly && self.anomaly.borrow().is_none() && !t.all_finite() {
            *self.anomaly.borrow_mut() = Some(what());
        }
    }

    /// A value whose gradient `backward` will report (a parameter).
    pub fn leaf(&self, value: Rc<Tensor>) -> Var {
        let node = self.recording.then(|| {
            self.push(Node {
                op: "leaf",
                inputs: Vec::new(),
                backward: None,
            })
        });
        Var { value, node }
    }

    fn push(&self, node: Node) -> usize {
        let mut nodes = self.nodes.borrow_mut();
        nodes.push(node);
        nodes.len() - 1
    }

    /// Whether an op on `inputs` will be recorded: a forward that keeps
    /// something only for its backward can skip it when not.
    pub fn wants_grad(&self, inputs: &[&Var]) -> bool {
        self.recording && inputs.iter().any(|v| v.node.is_some())
    }

    /// Records `value = op(inputs)`. `backward` is only kept when some input
    /// wants a gradient.
    pub fn record(
        &self,
        op: &'static str,
        value: impl Into<Rc<Tensor>>,
        inputs: &[&Var],
        backward: impl FnOnce(&Tensor, &[bool]) -> Vec<Option<Tensor>> + 'static,
    ) -> Var {
        let value = value.into();
        self.check(&value, || {
            format!(
                "{op} produced a non-finite value (output {:?})",
                value.shape()
            )
        });
        let wanted = self.wants_grad(inputs);
        let node = wanted.then(|| {
            self.push(Node {
                op,
                inputs: inputs.iter().map(|v| v.node).collect(),
                backward: Some(Box::new(backward)),
            })
        });
        Var { value, node }
    }

    /// Gradients of the one-element `loss` with respect to every leaf. The
    /// tape is spent afterwards.
    pub fn backward(&self, loss: &Var) -> Gradients {
        assert_eq!(loss.value.numel(), 1, "backward from a non-scalar");
        let nodes = std::mem::take(&mut *self.nodes.borrow_mut());
        let mut grads: Vec<Option<Tensor>> = (0..nodes.len()).map(|_| None).collect();
        let Some(root) = loss.node else {
            return Gradients(grads);
        };
        grads[root] = Some(Tensor::full_as(loss.shape(), 1.0, &loss.value));
        for (id, node) in nodes.into_iter().enumerate().rev() {
            let Some(backward) = node.backward else {
                continue; // a leaf keeps its gradient
            };
            let Some(grad_out) = grads[id].take() else {
                continue; // did not reach the loss
            };
            let wanted: Vec<bool> = node.inputs.iter().map(Option::is_some).collect();
            let input_grads = backward(&grad_out, &wanted);
            for (input, grad) in node.inputs.iter().zip(input_grads) {
                if let (Some(input), Some(grad)) = (input, grad) {
                    self.check(&grad, || {
                        format!(
                            "the backward of {} produced a non-finite gradient {:?}",
                            node.op,
                            grad.shape()
                        )
                    });
                    match &mut grads[*input] {
                        Some(acc) => acc.add_assign(&grad),
                        slot => *slot = Some(grad),
                    }
                }
            }
        }
        Gradients(grads)
    }
}

/// What `Tape::backward` found, looked up by the leaf `Var`.
pub struct Gradients(Vec<Option<Tensor>>);

impl Gradients {
    pub fn get(&self, leaf: &Var) -> Option<&Tensor> {
        self.0.get(leaf.node?)?.as_ref()
    }

    pub fn take(&mut self, leaf: &Var) -> Option<Tensor> {
        self.0.get_mut(leaf.node?)?.take()
    }
}
