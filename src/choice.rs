//! Settings written as text. Every typed choice (strategy, resize, augment, loss, optimizer,
//! schedule, ...) is defined once, next to the code that uses it, as a type with `FromStr` (the
//! one parser: flags, the TOML file and grid values all go through it, so the error lists the
//! valid forms) and `Display` (the canonical text written back to `config.toml`).
//! [`text_setting!`](crate::text_setting) gives such a type serde support through that text.

/// Implements `Serialize` (as `Display`) and `Deserialize` (through `FromStr`) for a typed
/// choice, so it is a plain string in TOML and JSON files.
#[macro_export]
macro_rules! text_setting {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
