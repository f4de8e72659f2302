//! A growable bitset of document numbers, used for live sets and filters.

/// A set of document numbers stored as one bit per number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocSet {
    words: Vec<u64>,
    len: usize,
}

impl DocSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, doc: u64) {
        let (w, b) = ((doc / 64) as usize, doc % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.len += 1;
        }
    }

    pub fn remove(&mut self, doc: u64) {
        let (w, b) = ((doc / 64) as usize, doc % 64);
        if let Some(word) = self.words.get_mut(w)
            && *word & (1 << b) != 0
        {
            *word &= !(1 << b);
            self.len -= 1;
        }
    }

    #[inline]
    pub fn contains(&self, doc: u64) -> bool {
        let (w, b) = ((doc / 64) as usize, doc % 64);
        self.words.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Members in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as u64;
                w &= w - 1;
                Some(i as u64 * 64 + b)
            })
        })
    }

    /// Keeps only the members also in `other`.
    pub fn intersect_with(&mut self, other: &DocSet) {
        self.words.truncate(other.words.len());
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
        self.len = self.words.iter().map(|w| w.count_ones() as usize).sum();
    }
}

impl FromIterator<u64> for DocSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut set = DocSet::new();
        for d in iter {
            set.insert(d);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_iter() {
        let mut s: DocSet = [3, 64, 200, 3].into_iter().collect();
        assert_eq!(s.len(), 3);
        assert!(s.contains(64) && !s.contains(65) && !s.contains(100_000));
        s.remove(64);
        s.remove(64);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![3, 200]);
        let other: DocSet = [200, 5].into_iter().collect();
        s.intersect_with(&other);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![200]);
        assert_eq!(s.len(), 1);
    }
}
