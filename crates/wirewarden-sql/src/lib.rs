#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod error;

pub use error::{Error, Result};
pub use wirewarden_core::CommandClass;

pub mod lexer;

pub use lexer::{LexOptions, Limits, StringKind, Token, TokenKind, tokenize};
mod split;

pub use split::split;
mod classify;
mod tables;

pub use classify::{Analysis, Classifier, Prepared, PreparedEffect, Statement};
