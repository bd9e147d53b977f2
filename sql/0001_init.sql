-- 0001_init: the assets the feed is polled for, and one point per asset and second.
-- Applied once, in its own transaction, by `ws_assets migrate` or at start-up.
-- Never edit this file after release: put changes in a new sql/NNNN_name.sql.

CREATE TABLE assets (
    id   integer PRIMARY KEY,
    name text    NOT NULL UNIQUE
);

INSERT INTO assets (id, name) VALUES
    (1, 'EURUSD'),
    (2, 'USDJPY'),
    (3, 'GBPUSD'),
    (4, 'AUDUSD'),
    (5, 'USDCAD');

CREATE TABLE points (
    asset_id integer          NOT NULL REFERENCES assets (id),
    time     timestamptz      NOT NULL,
    value    double precision NOT NULL,
    PRIMARY KEY (asset_id, time)
);

-- Warm-up reads every asset since a time, and retention deletes the oldest rows first.
CREATE INDEX points_time_idx ON points (time);
