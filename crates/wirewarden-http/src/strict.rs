//! Strict request checks against request smuggling; hop-by-hop header removal.
