//! The upstream client: one origin, pooled connections, never reused after a protocol error.
