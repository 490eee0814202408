//! One page of a directory listing in bounded memory, from a store that lists
//! in key order.
//!
//! Registry listings (tags, repositories, referrers) are in name order, and a
//! page starts after a name (`last`). Object stores list keys in byte order,
//! where a directory `b` sorts as `b/`: `v1.0/` comes before `v1/` although
//! the name `v1` comes before `v1.0`. [`PageCollector`] keeps only the
//! `limit + 1` smallest names seen so far, and tells when reading on cannot
//! change them: a name that is still to come sorts after the last key read,
//! so it is either after that key's name or one of the few proper prefixes
//! of it followed there by a byte below `/` — and when none of those falls
//! inside the page, the page is final.

use std::collections::BTreeSet;

/// Children of a directory, by name, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub names: Vec<String>,
    /// More names follow the last one.
    pub more: bool,
}

pub struct PageCollector {
    after: Option<String>,
    limit: usize,
    /// The smallest names after `after` seen so far, at most `limit + 1`.
    best: BTreeSet<String>,
}

impl PageCollector {
    pub fn new(after: Option<&str>, limit: usize) -> PageCollector {
        PageCollector {
            after: after.map(str::to_string),
            limit,
            best: BTreeSet::new(),
        }
    }

    fn wanted(&self, name: &str) -> bool {
        self.after.as_deref().is_none_or(|a| name > a)
    }

    pub fn offer(&mut self, name: &str) {
        if !self.wanted(name) || self.best.contains(name) {
            return;
        }
        if self.best.len() > self.limit {
            match self.best.last() {
                Some(max) if name < max.as_str() => {
                    self.best.pop_last();
                }
                _ => return,
            }
        }
        self.best.insert(name.to_string());
    }

    /// Whether the page is final once every key up to `last_key` (relative to
    /// the directory, a directory's with its trailing `/`) has been offered.
    pub fn complete_after(&self, last_key: &str) -> bool {
        if self.best.len() <= self.limit {
            return false;
        }
        let max = self.best.last().expect("more than limit, so not empty");
        let bytes = last_key.as_bytes();
        // A name still to come that sorts before `max`: a proper prefix of
        // `last_key` that the key continues with a byte below '/'.
        !(1..bytes.len()).any(|i| {
            bytes[i] < b'/'
                && last_key.is_char_boundary(i)
                && self.wanted(&last_key[..i])
                && last_key[..i] < *max.as_str()
        })
    }

    pub fn finish(self) -> ListPage {
        let more = self.best.len() > self.limit;
        ListPage {
            names: self.best.into_iter().take(self.limit).collect(),
            more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names as a store lists them: keys in byte order, directories with '/'.
    fn key_order(names: &[&str]) -> Vec<String> {
        let mut keys: Vec<String> = names.iter().map(|n| format!("{n}/")).collect();
        keys.sort();
        keys
    }

    /// Feed keys one at a time, stopping as soon as the collector allows.
    fn page(names: &[&str], after: Option<&str>, limit: usize) -> (ListPage, usize) {
        let mut c = PageCollector::new(after, limit);
        let keys = key_order(names);
        let mut read = 0;
        for k in &keys {
            read += 1;
            c.offer(k.trim_end_matches('/'));
            if c.complete_after(k) {
                break;
            }
        }
        (c.finish(), read)
    }

    #[test]
    fn pages_in_name_order_from_key_order() {
        let names = ["1", "1.0", "1.0.1", "1.1", "2", "v1", "v1-rc", "v1.0"];
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort();
        for limit in 1..=names.len() + 1 {
            let mut after: Option<String> = None;
            let mut seen = Vec::new();
            loop {
                let (p, _) = page(&names, after.as_deref(), limit);
                assert!(p.names.len() <= limit);
                seen.extend(p.names.clone());
                if !p.more {
                    break;
                }
                after = p.names.last().cloned();
            }
            assert_eq!(seen, sorted, "limit {limit}");
        }
    }

    #[test]
    fn stops_reading_once_the_page_is_settled() {
        let names: Vec<String> = (0..1000).map(|i| format!("t{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (p, read) = page(&refs, Some("t0100"), 10);
        assert_eq!(p.names.first().map(String::as_str), Some("t0101"));
        assert_eq!(p.names.len(), 10);
        assert!(p.more);
        assert!(read < 200, "read {read} keys for a page of 10");
    }

    #[test]
    fn keeps_only_a_page_worth() {
        let mut c = PageCollector::new(None, 3);
        for n in ["e", "d", "c", "b", "a", "a"] {
            c.offer(n);
            assert!(c.best.len() <= 4);
        }
        assert_eq!(
            c.finish(),
            ListPage {
                names: vec!["a".into(), "b".into(), "c".into()],
                more: true
            }
        );
    }
}
