#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod conformance;
mod error;
pub mod oidc;
mod postgres;
mod process;
mod redis;
mod tls;

pub use error::{Error, Result};
pub use postgres::{Postgres, PostgresBuilder, PostgresTls};
pub use process::{free_port, random_secret};
pub use redis::{Redis, RedisBuilder};
pub use tls::{TlsKey, TlsMaterial};
