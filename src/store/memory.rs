//! The embedded default store: points kept in memory for the history window only.
//!
//! Everything works without a database; history simply does not survive a restart.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{Store, StoreError, StoreKind};
use crate::asset::{Asset, Point};

/// Assets and the most recent points, in memory.
pub struct MemoryStore {
    assets: Vec<Asset>,
    points: Mutex<VecDeque<Point>>,
    capacity: usize,
}

impl MemoryStore {
    /// A store of `assets` keeping at most `capacity` points (oldest dropped first).
    pub fn new(assets: Vec<Asset>, capacity: usize) -> MemoryStore {
        MemoryStore {
            assets,
            points: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    fn points(&self) -> std::sync::MutexGuard<'_, VecDeque<Point>> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn load_assets(&self) -> Result<Vec<Asset>, StoreError> {
        let mut assets = self.assets.clone();
        assets.sort_by_key(|a| a.id);
        Ok(assets)
    }

    fn load_points_since(&self, since: i64) -> Result<Vec<Point>, StoreError> {
        let mut found: Vec<Point> = self
            .points()
            .iter()
            .filter(|p| p.time >= since)
            .copied()
            .collect();
        found.sort_by_key(|p| (p.asset_id, p.time));
        found.dedup_by_key(|p| (p.asset_id, p.time));
        Ok(found)
    }

    fn write_points(&self, batch: &[Point]) -> Result<(), StoreError> {
        let mut points = self.points();
        points.extend(batch);
        let excess = points.len().saturating_sub(self.capacity);
        points.drain(..excess);
        Ok(())
    }

    fn delete_points_before(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let mut points = self.points();
        let mut deleted = 0u64;
        points.retain(|p| {
            let drop = p.time < before && deleted < u64::from(limit);
            deleted += u64::from(drop);
            !drop
        });
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asset::default_assets;

    fn p(asset_id: i32, time: i64) -> Point {
        Point {
            asset_id,
            time,
            value: 1.5,
        }
    }

    #[test]
    fn round_trip_ordered_and_without_duplicates() {
        let store = MemoryStore::new(default_assets(), 100);
        store.write_points(&[p(2, 5), p(1, 6), p(1, 5)]).unwrap();
        store.write_points(&[p(1, 5)]).unwrap();
        let got = store.load_points_since(5).unwrap();
        assert_eq!(got, [p(1, 5), p(1, 6), p(2, 5)]);
        assert_eq!(store.load_points_since(6).unwrap(), [p(1, 6)]);
        assert_eq!(store.load_assets().unwrap().len(), 5);
    }

    #[test]
    fn capacity_and_retention() {
        let store = MemoryStore::new(default_assets(), 3);
        store
            .write_points(&[p(1, 1), p(1, 2), p(1, 3), p(1, 4)])
            .unwrap();
        assert_eq!(store.load_points_since(0).unwrap().len(), 3);
        assert_eq!(store.delete_points_before(4, 1).unwrap(), 1);
        assert_eq!(store.delete_points_before(4, 10).unwrap(), 1);
        assert_eq!(store.load_points_since(0).unwrap(), [p(1, 4)]);
    }
}
