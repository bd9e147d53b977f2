//! Assets and their points: the plain data that the feed, the market, the protocol and
//! the store all speak of. It imports nothing of the crate, so every arrow points here.

/// A tradable instrument, as listed by the `assets` action (`{"id":1,"name":"EURUSD"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    /// Database id; the `assetId` clients subscribe with.
    pub id: i32,
    /// Feed symbol, e.g. `EURUSD`.
    pub name: String,
}

/// One quote of one asset at one tick: what the store keeps and the wire carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The asset's id.
    pub asset_id: i32,
    /// UTC epoch seconds of the tick.
    pub time: i64,
    /// `(bid + ask) / 2`.
    pub value: f64,
}

/// The assets served by default and seeded by the first migration.
pub fn default_assets() -> Vec<Asset> {
    ["EURUSD", "USDJPY", "GBPUSD", "AUDUSD", "USDCAD"]
        .iter()
        .zip(1..)
        .map(|(name, id)| Asset {
            id,
            name: name.to_string(),
        })
        .collect()
}
