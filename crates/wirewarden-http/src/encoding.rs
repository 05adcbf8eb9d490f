//! Content codings (gzip, deflate, brotli) with size and ratio caps.
