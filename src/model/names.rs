//! Names that keys refer to by number: network names of the networks file (the `src_net` and
//! `dst_net` dimensions key on a small id so shards never touch a string). One process-wide,
//! append-only interner: an id, once given, means the same name until the process exits, across
//! every reload of the tables that hand ids out, so rows keyed before a reload format correctly
//! after it and two prefixes with the same name aggregate as one key.
//!
//! City labels (`Paris, FR`) by GeoNames id live here too, for the `src_city` / `dst_city`
//! keys, which are the GeoIP database's own ids: a reload replaces labels it knows and keeps
//! the others, so a key seen before a reload still formats.
//!
//! Written where tables are built (start-up, reloads: off the shards); read where keys are
//! formatted (the I/O core, tools). Shards only copy ids.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// The largest number of distinct names (ids are `u16`; 0 means "no name").
pub const MAX_NAMES: usize = u16::MAX as usize;

#[derive(Default)]
struct Interner {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u16>,
}

fn interner() -> &'static RwLock<Interner> {
    static I: OnceLock<RwLock<Interner>> = OnceLock::new();
    I.get_or_init(Default::default)
}

/// The id of `name` (≥ 1), giving it one if it has none; `None` once [`MAX_NAMES`] are taken.
pub fn intern(name: &str) -> Option<u16> {
    let mut i = interner().write().unwrap_or_else(|e| e.into_inner());
    if let Some(&id) = i.ids.get(name) {
        return Some(id);
    }
    if i.names.len() >= MAX_NAMES {
        return None;
    }
    let s: Arc<str> = Arc::from(name);
    i.names.push(s.clone());
    let id = i.names.len() as u16;
    i.ids.insert(s, id);
    Some(id)
}

/// The id `name` has, if it has one.
pub fn id_of(name: &str) -> Option<u16> {
    interner().read().unwrap_or_else(|e| e.into_inner()).ids.get(name).copied()
}

/// The name of id `id` (`None` for 0 and for ids never given).
pub fn name(id: u16) -> Option<Arc<str>> {
    let i = interner().read().unwrap_or_else(|e| e.into_inner());
    i.names.get(usize::from(id).checked_sub(1)?).cloned()
}

fn cities() -> &'static RwLock<HashMap<u32, Arc<str>>> {
    static C: OnceLock<RwLock<HashMap<u32, Arc<str>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Records city labels by GeoNames id (a load of a City database).
pub fn set_cities(labels: impl IntoIterator<Item = (u32, Arc<str>)>) {
    cities().write().unwrap_or_else(|e| e.into_inner()).extend(labels);
}

/// The label of city `id` (`None` for 0 and for ids no load gave a label).
pub fn city(id: u32) -> Option<Arc<str>> {
    cities().read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_shared_by_equal_names() {
        let a = intern("names-test-a").unwrap();
        let b = intern("names-test-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(intern("names-test-a"), Some(a));
        assert_eq!(name(a).as_deref(), Some("names-test-a"));
        assert_eq!(name(0), None);
    }
}
