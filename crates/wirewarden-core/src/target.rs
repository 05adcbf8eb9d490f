//! Where a command is going: the upstream system and its protocol.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The wire protocol spoken with a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protocol {
    /// PostgreSQL frontend/backend protocol 3.x.
    Postgres,
    /// Redis RESP2/RESP3.
    Redis,
    /// HTTP/1.1 or HTTP/2.
    Http,
}

impl Protocol {
    /// The lowercase name used in configuration and exports.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Http => "http",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "redis" => Ok(Self::Redis),
            "http" | "https" => Ok(Self::Http),
            _ => Err(Error::UnknownName {
                kind: "protocol",
                input: s.to_owned(),
            }),
        }
    }
}

/// A named upstream that policy and audit refer to (`crm-db`, `session-cache`).
///
/// The name is the stable handle used in rules; `database` narrows it for protocols that
/// have one (a Postgres database, a Redis logical database number, an HTTP host).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Target {
    /// The configured name of the target.
    pub name: String,
    /// The protocol spoken with it.
    pub protocol: Protocol,
    /// The database or namespace within it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl Target {
    /// A target named `name` speaking `protocol`.
    ///
    /// # Errors
    /// [`Error::Empty`] if `name` is empty.
    pub fn new(name: impl Into<String>, protocol: Protocol) -> Result<Self, Error> {
        let name = name.into();
        if name.is_empty() {
            return Err(Error::Empty {
                what: "target name",
            });
        }
        Ok(Self {
            name,
            protocol,
            database: None,
        })
    }

    /// Sets the database or namespace.
    #[must_use]
    pub fn with_database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.database {
            Some(db) => write!(f, "{}://{}/{}", self.protocol, self.name, db),
            None => write!(f, "{}://{}", self.protocol, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for p in [Protocol::Postgres, Protocol::Redis, Protocol::Http] {
            assert_eq!(p.as_str().parse::<Protocol>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!("mysql".parse::<Protocol>().is_err());
    }

    #[test]
    fn target_display_and_serde() {
        let t = Target::new("crm", Protocol::Postgres)
            .unwrap()
            .with_database("sales");
        assert_eq!(t.to_string(), "postgres://crm/sales");
        let back: Target = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(Target::new("", Protocol::Redis).is_err());
    }
}
