//! [`Attrs`]: the attribute maps of every record, kept sorted on one vector.
//!
//! A `BTreeMap` allocated a node per map and searched it per entry when decoded; its nodes,
//! key comparisons and drops were ~10% of `obs`'s CPU under spans. Records carry a few
//! entries each, where a sorted vector ([`litemap::LiteMap`]) has the same order and the
//! same lookups for one allocation, and a decoded map arrives sorted (every map is encoded
//! from one), so decoding appends. The wrapper serializes every map as a map: `LiteMap`
//! writes an empty one as a sequence to human-readable formats, which is neither the Avro
//! schema's map nor `{}` in JSON.

use std::ops::{Deref, DerefMut};

use litemap::LiteMap;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// String-to-string attributes, as every table stores them (`Map(LowCardinality(String),
/// String)`): sorted by key, keys unique, a later insert of a key replacing its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attrs(LiteMap<String, String>);

impl Attrs {
    /// An empty map, allocating nothing.
    pub const fn new() -> Self {
        Self(LiteMap::new_vec())
    }

    /// A map of borrowed pairs, for fixed label sets and tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

impl Deref for Attrs {
    type Target = LiteMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Attrs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, String)> for Attrs {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(LiteMap::from_iter(iter))
    }
}

impl Extend<(String, String)> for Attrs {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

impl IntoIterator for Attrs {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_tuple_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a String, &'a String);
    type IntoIter = <&'a LiteMap<String, String> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Attrs {
    type Item = (&'a String, &'a mut String);
    type IntoIter = <&'a mut LiteMap<String, String> as IntoIterator>::IntoIter;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl std::ops::Index<&str> for Attrs {
    type Output = String;
    /// The value of `key`; panics when there is none, as `BTreeMap`'s does.
    fn index(&self, key: &str) -> &String {
        self.0
            .get(key)
            .expect("no entry for the key in the attributes")
    }
}

impl Serialize for Attrs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for Attrs {
    /// Asks for a map, as `BTreeMap` does (`LiteMap`'s own asks for anything, which
    /// serde_arrow cannot trace a schema from).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AttrsVisitor)
    }
}

/// Builds [`Attrs`] from a serialized map: entries in key order (every map written from
/// `Attrs`) are appended; any others are merged once at the end.
struct AttrsVisitor;

impl<'de> Visitor<'de> for AttrsVisitor {
    type Value = Attrs;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of strings to strings")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut access: M) -> Result<Attrs, M::Error> {
        // A size hint is the input's claim: bounded, so a corrupt one allocates little.
        let mut map = LiteMap::with_capacity(access.size_hint().unwrap_or(0).min(1024));
        let mut unsorted = Vec::new();
        while let Some((k, v)) = access.next_entry::<String, String>()? {
            if let Some(entry) = map.try_append(k, v) {
                unsorted.push(entry);
            }
        }
        map.extend(unsorted);
        Ok(Attrs(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        Attrs::from_pairs(pairs)
    }

    #[test]
    fn keys_are_sorted_and_unique_and_the_last_value_wins() {
        let mut a = attrs(&[("b", "1"), ("a", "2"), ("b", "3")]);
        a.insert("c".into(), "4".into());
        a.extend([("a".to_string(), "5".to_string())]);
        let got: Vec<(String, String)> = a.clone().into_iter().collect();
        assert_eq!(
            got,
            [("a", "5"), ("b", "3"), ("c", "4")].map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(a["b"], "3");
        assert_eq!(a.get("z"), None);
    }

    #[test]
    fn empty_and_full_maps_are_json_objects() {
        assert_eq!(serde_json::to_string(&Attrs::new()).unwrap(), "{}");
        let a = attrs(&[("k", "v"), ("a", "b")]);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":"b","k":"v"}"#);
        let back: Attrs = serde_json::from_str(r#"{"k":"v","a":"b","a":"c"}"#).unwrap();
        assert_eq!(back, attrs(&[("a", "c"), ("k", "v")]));
        let empty: Attrs = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
    }
}
