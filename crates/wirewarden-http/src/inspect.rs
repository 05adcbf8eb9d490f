//! The inspection layer: strict checks, route → command, the gate, masked responses.
