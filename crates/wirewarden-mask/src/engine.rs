//! The engine: named profiles, the rules that choose one per target and principal, and the
//! TOML configuration that describes both.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use wirewarden_core::{Principal, Protocol, Target};

use crate::custom::{CustomDetector, Validator};
use crate::detect::{Detector, DetectorSet};
use crate::profile::{FieldRule, Limits, Profile, ProfileBuilder};
use crate::rules::{Glob, Selector};
use crate::strategy::{MaskKey, Strategy};
use crate::{Error, Result};

/// When a profile applies: every criterion that is not empty must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    profile: String,
    targets: Vec<Glob>,
    protocols: Vec<Protocol>,
    subjects: Vec<Glob>,
    groups: Vec<String>,
}

impl Selection {
    /// Choose `profile` (by name) when the criteria added below match.
    #[must_use]
    pub fn profile(profile: impl Into<String>) -> Self {
        Self {
            profile: profile.into(),
            ..Self::default()
        }
    }

    /// Only for targets whose name matches one of these globs.
    #[must_use]
    pub fn target(mut self, glob: &str) -> Self {
        self.targets.push(Glob::new(glob));
        self
    }

    /// Only for targets speaking this protocol.
    #[must_use]
    pub fn protocol(mut self, p: Protocol) -> Self {
        self.protocols.push(p);
        self
    }

    /// Only for principals whose subject matches one of these globs.
    #[must_use]
    pub fn subject(mut self, glob: &str) -> Self {
        self.subjects.push(Glob::new(glob));
        self
    }

    /// Only for principals in one of these groups.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    fn matches(&self, target: &Target, principal: &Principal) -> bool {
        (self.targets.is_empty()
            || self
                .targets
                .iter()
                .any(|g| g.matches(target.name.as_bytes())))
            && (self.protocols.is_empty() || self.protocols.contains(&target.protocol))
            && (self.subjects.is_empty()
                || self
                    .subjects
                    .iter()
                    .any(|g| g.matches(principal.subject.as_bytes())))
            && (self.groups.is_empty() || self.groups.iter().any(|g| principal.groups.contains(g)))
    }
}

/// Named profiles and the selections that choose among them.
#[derive(Debug, Clone)]
pub struct Engine {
    profiles: BTreeMap<String, Arc<Profile>>,
    selections: Vec<Selection>,
    default: Arc<Profile>,
}

/// Builds an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineBuilder {
    key: Option<Arc<MaskKey>>,
    profiles: Vec<ProfileBuilder>,
    selections: Vec<Selection>,
    default: Option<String>,
}

impl EngineBuilder {
    /// The key shared by every profile that does not set its own.
    #[must_use]
    pub fn key(mut self, key: MaskKey) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Adds a profile.
    #[must_use]
    pub fn profile(mut self, p: ProfileBuilder) -> Self {
        self.profiles.push(p);
        self
    }

    /// Adds a selection; the first that matches wins.
    #[must_use]
    pub fn select(mut self, s: Selection) -> Self {
        self.selections.push(s);
        self
    }

    /// The profile used when no selection matches. Without one, a built-in profile runs every
    /// detector and redacts.
    #[must_use]
    pub fn default_profile(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into());
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    /// A profile that does not build, a duplicate profile name, or a selection or default
    /// naming an unknown profile.
    pub fn build(self) -> Result<Engine> {
        let mut profiles = BTreeMap::new();
        for pb in self.profiles {
            let p = pb.key_if_unset(self.key.as_ref()).build()?;
            let name = p.name().to_owned();
            if profiles.insert(name.clone(), Arc::new(p)).is_some() {
                return Err(Error::config(format!("profile {name}"), "defined twice"));
            }
        }
        for s in &self.selections {
            if !profiles.contains_key(&s.profile) {
                return Err(Error::UnknownProfile {
                    name: s.profile.clone(),
                });
            }
        }
        let default = match &self.default {
            Some(n) => profiles
                .get(n)
                .cloned()
                .ok_or_else(|| Error::UnknownProfile { name: n.clone() })?,
            None => Arc::new(Profile::builder("default").build()?),
        };
        Ok(Engine {
            profiles,
            selections: self.selections,
            default,
        })
    }
}

impl Engine {
    /// A builder.
    #[must_use]
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The profile named `name` (as a policy decision names it).
    ///
    /// # Errors
    /// [`Error::UnknownProfile`]: the caller must refuse rather than send values unmasked.
    pub fn profile(&self, name: &str) -> Result<&Arc<Profile>> {
        self.profiles
            .get(name)
            .ok_or_else(|| Error::UnknownProfile {
                name: name.to_owned(),
            })
    }

    /// The profile for `principal` talking to `target`: the first matching selection, else
    /// the default profile.
    #[must_use]
    pub fn select(&self, target: &Target, principal: &Principal) -> &Arc<Profile> {
        self.selections
            .iter()
            .find(|s| s.matches(target, principal))
            .and_then(|s| self.profiles.get(&s.profile))
            .unwrap_or(&self.default)
    }

    /// The default profile.
    #[must_use]
    pub fn default_profile(&self) -> &Arc<Profile> {
        &self.default
    }

    /// An engine from its TOML configuration.
    ///
    /// ```toml
    /// key = "…64 hex digits…"        # or key_env = "WIREWARDEN_MASK_KEY"
    /// default_profile = "strict"
    ///
    /// [[profile]]
    /// name = "support"
    /// detectors = ["card_number", "ssn", "email"]   # default: all
    /// default_strategy = "redact"
    /// strategies = { card_number = { kind = "partial", keep_last = 4 }, email = "tokenize" }
    /// rules = [
    ///   { column = "*ssn*", strategy = "null" },
    ///   { json_path = "$..password", strategy = "redact" },
    /// ]
    /// custom = [{ name = "employee_id", pattern = 'EMP-\d{6}' }]
    ///
    /// [[select]]
    /// profile = "support"
    /// targets = ["crm-*"]
    /// groups = ["support"]
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for anything malformed or unknown, and the errors of
    /// [`EngineBuilder::build`].
    pub fn from_toml(text: &str) -> Result<Self> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| Error::config("mask configuration", e.to_string()))?;
        cfg.into_builder()?.build()
    }
}

// === configuration ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    key: Option<String>,
    key_env: Option<String>,
    default_profile: Option<String>,
    #[serde(default)]
    limits: Option<Limits>,
    #[serde(default, rename = "profile")]
    profiles: Vec<ProfileConfig>,
    #[serde(default)]
    select: Vec<SelectConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileConfig {
    name: String,
    detectors: Option<Vec<String>>,
    default_strategy: Option<Strategy>,
    #[serde(default)]
    strategies: BTreeMap<String, Strategy>,
    #[serde(default)]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    custom: Vec<CustomConfig>,
    #[serde(default)]
    ssn_unformatted: bool,
    json_in_text: Option<bool>,
    limits: Option<Limits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    column: Option<String>,
    redis_key: Option<String>,
    json_path: Option<String>,
    header: Option<String>,
    strategy: Option<Strategy>,
    entity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomConfig {
    name: String,
    pattern: Option<String>,
    dictionary: Option<Vec<String>>,
    validator: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectConfig {
    profile: String,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    protocols: Vec<Protocol>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

impl Config {
    fn into_builder(self) -> Result<EngineBuilder> {
        let mut b = Engine::builder();
        let key = match (&self.key, &self.key_env) {
            (Some(_), Some(_)) => {
                return Err(Error::config("key", "set key or key_env, not both"));
            }
            (Some(k), None) => Some(MaskKey::from_hex(k)?),
            (None, Some(var)) => {
                let v = std::env::var(var).map_err(|_| {
                    Error::config("key_env", format!("environment variable {var} is not set"))
                })?;
                Some(MaskKey::from_hex(v.trim())?)
            }
            (None, None) => None,
        };
        if let Some(k) = key {
            b = b.key(k);
        }
        for p in self.profiles {
            b = b.profile(p.into_builder(self.limits)?);
        }
        for s in self.select {
            let mut sel = Selection::profile(s.profile);
            for t in &s.targets {
                sel = sel.target(t);
            }
            for p in s.protocols {
                sel = sel.protocol(p);
            }
            for t in &s.subjects {
                sel = sel.subject(t);
            }
            for g in s.groups {
                sel = sel.group(g);
            }
            b = b.select(sel);
        }
        if let Some(d) = self.default_profile {
            b = b.default_profile(d);
        }
        Ok(b)
    }
}

impl ProfileConfig {
    fn into_builder(self, limits: Option<Limits>) -> Result<ProfileBuilder> {
        let mut b = Profile::builder(&self.name).ssn_unformatted(self.ssn_unformatted);
        if let Some(names) = &self.detectors {
            let mut set = DetectorSet::empty();
            for n in names {
                if n == "all" {
                    set = DetectorSet::all();
                } else {
                    let d = Detector::from_name(n).ok_or_else(|| {
                        Error::config(
                            format!("profile {}", self.name),
                            format!("unknown detector {n:?}"),
                        )
                    })?;
                    set = set.with(d);
                }
            }
            b = b.detectors(set);
        }
        if let Some(s) = self.default_strategy {
            b = b.default_strategy(s);
        }
        for (entity, s) in self.strategies {
            b = b.strategy(entity, s);
        }
        for c in self.custom {
            let d = match (c.pattern, c.dictionary) {
                (Some(p), None) => CustomDetector::pattern(&c.name, &p)?,
                (None, Some(words)) => CustomDetector::dictionary(&c.name, words)?,
                _ => {
                    return Err(Error::config(
                        format!("custom detector {}", c.name),
                        "set exactly one of pattern and dictionary",
                    ));
                }
            };
            let d = match c.validator {
                Some(v) => d.with_validator(Validator::from_name(&v)?),
                None => d,
            };
            b = b.custom(d);
        }
        for r in self.rules {
            let sel = match (r.column, r.redis_key, r.json_path, r.header) {
                (Some(c), None, None, None) => Selector::column(&c),
                (None, Some(k), None, None) => Selector::redis_key(&k),
                (None, None, Some(p), None) => Selector::json_path(&p)?,
                (None, None, None, Some(h)) => Selector::header(&h),
                _ => {
                    return Err(Error::config(
                        format!("rule in profile {}", self.name),
                        "set exactly one of column, redis_key, json_path and header",
                    ));
                }
            };
            let mut rule = FieldRule::new(sel, r.strategy.unwrap_or_else(Strategy::redact));
            if let Some(e) = r.entity {
                rule.entity = e;
            }
            b = b.rule(rule);
        }
        if let Some(on) = self.json_in_text {
            b = b.json_in_text(on);
        }
        if let Some(l) = self.limits.or(limits) {
            b = b.limits(l);
        }
        Ok(b)
    }
}
