//! The presence thread's table of this node's own connections: user → (connection id,
//! stored value). It is the whole store in embedded mode, and in cluster mode the source
//! of heartbeats (which user keys to refresh), of the resync after a Redis outage and of
//! the exact cleanup on shutdown.

use std::collections::HashMap;
use std::sync::Arc;

/// One connection of a user. Kept small (24 bytes): the stored JSON value is rebuilt
/// from it when written (`value`), and an anonymous user's key shares the id's string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cid: Arc<str>,
    /// Milliseconds since the epoch.
    pub connected_at: u64,
}

impl Entry {
    /// `{"serverId":…,"socketId":…,"connectedAt":ms}`
    pub fn value(&self, server_id: &str) -> Box<str> {
        super::entry_value(server_id, &self.cid, self.connected_at)
    }
}

#[derive(Debug, Default)]
pub struct Local {
    /// One user's entries; a single connection (the usual case) is stored inline.
    by_user: HashMap<Arc<str>, smallvec::SmallVec<[Entry; 1]>>,
    len: usize,
}

impl Local {
    pub fn insert(&mut self, user: &str, entry: Entry) {
        let key: Arc<str> = if *entry.cid == *user {
            entry.cid.clone()
        } else {
            user.into()
        };
        let list = self.by_user.entry(key).or_default();
        if let Some(e) = list.iter_mut().find(|e| e.cid == entry.cid) {
            *e = entry;
        } else {
            list.push(entry);
            self.len += 1;
        }
    }

    /// Removes connection `cid` of `user`; false when it was not there.
    pub fn remove(&mut self, user: &str, cid: &str) -> bool {
        let Some(list) = self.by_user.get_mut(user) else {
            return false;
        };
        let Some(i) = list.iter().position(|e| &*e.cid == cid) else {
            return false;
        };
        list.swap_remove(i);
        self.len -= 1;
        if list.is_empty() {
            self.by_user.remove(user);
        }
        true
    }

    pub fn get(&self, user: &str) -> &[Entry] {
        self.by_user.get(user).map(|v| v.as_slice()).unwrap_or(&[])
    }

    pub fn contains(&self, user: &str, cid: &str) -> bool {
        self.get(user).iter().any(|e| &*e.cid == cid)
    }

    /// Every user with at least one local connection.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.by_user.keys().map(|u| &**u)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.by_user
            .iter()
            .flat_map(|(u, list)| list.iter().map(move |e| (&**u, e)))
    }

    /// Connections in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn user_count(&self) -> usize {
        self.by_user.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(cid: &str) -> Entry {
        Entry {
            cid: cid.into(),
            connected_at: 1,
        }
    }

    #[test]
    fn insert_remove_count() {
        let mut t = Local::default();
        t.insert("u", e("a"));
        t.insert("u", e("b"));
        t.insert("u", e("a"));
        t.insert("v", e("c"));
        assert_eq!((t.len(), t.user_count()), (3, 2));
        assert!(t.contains("u", "b"));
        assert!(t.remove("u", "a"));
        assert!(!t.remove("u", "a"));
        assert!(t.remove("u", "b"));
        assert_eq!(t.get("u"), &[]);
        assert_eq!((t.len(), t.user_count()), (1, 1));
        assert_eq!(t.iter().count(), 1);
    }
}
