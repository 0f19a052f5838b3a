-- The floor probe's tables: `items`, about as wide as a VM row, read by primary key; `writes`, one
-- row per D1 write the probe makes.
CREATE TABLE items (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  node_id TEXT NOT NULL,
  state TEXT NOT NULL,
  generation INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  description TEXT NOT NULL
);
CREATE TABLE writes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  item_id TEXT NOT NULL,
  at INTEGER NOT NULL
);
