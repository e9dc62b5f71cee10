//! Degradations (spec section 6). Being written.
