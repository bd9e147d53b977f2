//! Assets and their points: the plain data every other module speaks in.

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
