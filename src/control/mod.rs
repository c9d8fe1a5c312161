//! control layer.
