//! Response body masking: see the crate documentation.
