//! datapath layer.
