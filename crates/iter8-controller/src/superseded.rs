//! The versions of Experiments this controller has itself written over, so that a reconcile
//! of a copy the watch cache has not yet replaced is skipped instead of run again.
//!
//! An iteration writes status twice; the watch event of the first write triggers a reconcile
//! that often still reads the first (or an even older) copy from the cache. Run on that copy
//! it redoes work already done: it re-applies the split or asks the analytics service again,
//! then fails its status write with a 409 conflict. With 50 experiments that was a quarter
//! of all reconciles (see docs/performance.md). Resource versions are opaque, so this keeps
//! the exact versions replaced rather than comparing them.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per Experiment key, the resource versions this controller replaced by its own writes
/// since the cache last showed a version it did not replace.
#[derive(Debug, Default)]
pub struct Superseded(Mutex<HashMap<String, Vec<String>>>);

impl Superseded {
    /// Records that a write of ours replaced version `old` of Experiment `key`.
    pub fn replaced(&self, key: &str, old: Option<&str>) {
        let (Some(old), Ok(mut map)) = (old, self.0.lock()) else {
            return;
        };
        map.entry(key.to_string())
            .or_default()
            .push(old.to_string());
    }

    /// Records a status write of Experiment `key` that produced version `written`, made on
    /// version `base` of a copy first read at version `read` (`base` is newer after a
    /// conflict). A write the API server found to change nothing keeps its base's version,
    /// which is then current, not replaced: marking it would skip every reconcile of the
    /// experiment until someone else changed it.
    pub fn wrote(&self, key: &str, read: Option<&str>, base: Option<&str>, written: Option<&str>) {
        if read != written {
            self.replaced(key, read);
        }
        if base != read && base != written {
            self.replaced(key, base);
        }
    }

    /// Whether `version` of `key` is one we already replaced. Any other version is our latest
    /// write or newer (the cache only moves forward), so the record of `key` is dropped.
    pub fn is_stale(&self, key: &str, version: Option<&str>) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        let stale = version.is_some_and(|v| {
            map.get(key)
                .is_some_and(|replaced| replaced.iter().any(|r| r == v))
        });
        if !stale {
            map.remove(key);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_written_over_are_stale_until_a_newer_one_is_seen() {
        let superseded = Superseded::default();
        assert!(
            !superseded.is_stale("ns/a", Some("1")),
            "nothing written yet"
        );
        superseded.replaced("ns/a", Some("1"));
        superseded.replaced("ns/a", Some("2"));
        assert!(superseded.is_stale("ns/a", Some("1")));
        assert!(superseded.is_stale("ns/a", Some("2")));
        assert!(
            !superseded.is_stale("ns/b", Some("2")),
            "another experiment"
        );
        assert!(!superseded.is_stale("ns/a", Some("3")), "our latest write");
        assert!(
            !superseded.is_stale("ns/a", Some("1")),
            "forgotten once the cache caught up"
        );
    }

    #[test]
    fn a_write_replaces_the_versions_it_was_made_on_unless_it_changed_nothing() {
        let superseded = Superseded::default();
        superseded.wrote("ns/a", Some("1"), Some("1"), Some("2"));
        assert!(
            superseded.is_stale("ns/a", Some("1")),
            "the copy written over"
        );

        // After a conflict: the copy read and the fresh base are both older than the write.
        let superseded = Superseded::default();
        superseded.wrote("ns/a", Some("1"), Some("2"), Some("3"));
        assert!(superseded.is_stale("ns/a", Some("1")));
        assert!(superseded.is_stale("ns/a", Some("2")));

        // A write that changed nothing keeps the version: it is current, never stale.
        let superseded = Superseded::default();
        superseded.wrote("ns/a", Some("1"), Some("1"), Some("1"));
        assert!(!superseded.is_stale("ns/a", Some("1")));
        // ... also when it was made on a fresh base after a conflict.
        let superseded = Superseded::default();
        superseded.wrote("ns/a", Some("1"), Some("2"), Some("2"));
        assert!(
            superseded.is_stale("ns/a", Some("1")),
            "the copy read is older"
        );
        assert!(
            !superseded.is_stale("ns/a", Some("2")),
            "the base is current"
        );
    }

    #[test]
    fn a_copy_without_a_version_is_never_stale() {
        let superseded = Superseded::default();
        superseded.replaced("ns/a", None);
        assert!(!superseded.is_stale("ns/a", None));
    }
}
