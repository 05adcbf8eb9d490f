//! Hyper server settings with strict limits, for HTTP/1.1 and HTTP/2.
