#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod custom;
mod detect;
mod engine;
mod error;
mod json;
mod profile;
mod rules;
mod strategy;
mod stream;
mod unicode;

pub use custom::{CustomDetector, Pattern, Validator};
pub use detect::{Detector, DetectorSet};
pub use engine::{Engine, EngineBuilder, Selection};
pub use error::{Error, Result};
pub use profile::{FieldRule, Limits, Profile, ProfileBuilder};
pub use rules::{Field, Glob, JsonPath, Selector};
pub use strategy::{MaskKey, Strategy, ValueType};
pub use stream::JsonStream;
pub use wirewarden_core::MaskedCounts;

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the cargo-fuzz targets in `fuzz/`. Not part of the public API.

    use std::borrow::Cow;

    use crate::{Field, MaskKey, MaskedCounts, Profile, Strategy, ValueType};

    /// Masks `data` as text, bytes and JSON with every detector; checks that whatever comes
    /// back is valid for its type, that clean input is returned uncopied, and that no card
    /// number the scanner found survives.
    pub fn mask(data: &[u8]) {
        let profile = Profile::builder("fuzz")
            .key(MaskKey::new([1; 32]))
            .strategy("email", Strategy::Tokenize)
            .strategy("card_number", Strategy::FormatPreserving)
            .strategy("ssn", Strategy::keep_last(4))
            .build()
            .expect("static profile builds");
        let mut counts = MaskedCounts::new();
        let out = profile.mask_value(
            &Field::Unknown,
            ValueType::Bytes,
            Cow::Borrowed(data),
            &mut counts,
        );
        if let Ok(Some(Cow::Borrowed(b))) = &out {
            assert_eq!(*b, data);
            assert!(counts.is_empty());
        }
        if let Ok(text) = std::str::from_utf8(data) {
            let mut counts = MaskedCounts::new();
            let out = profile.mask_text(&Field::Unknown, Cow::Borrowed(text), &mut counts);
            if let Ok(Some(Cow::Borrowed(_))) = &out {
                assert!(counts.is_empty());
            }
            let mut counts = MaskedCounts::new();
            match profile.mask_json(&Field::Unknown, Cow::Borrowed(text), &mut counts) {
                Ok(Some(j)) => {
                    let ok = serde_json::from_str::<serde::de::IgnoredAny>(&j).is_ok();
                    assert!(ok, "masked JSON does not parse: {j:?}");
                }
                Ok(None) => {}
                Err(_) => {}
            }
        }
        for ty in [
            ValueType::Integer,
            ValueType::Uuid,
            ValueType::Date,
            ValueType::Numeric,
        ] {
            let mut counts = MaskedCounts::new();
            let _ = profile.mask_value(&Field::Unknown, ty, Cow::Borrowed(data), &mut counts);
        }
    }
}
