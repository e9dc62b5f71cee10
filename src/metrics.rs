//! Metrics (spec section 8). Being written.
