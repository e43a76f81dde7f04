"""Experiments: scenarios, grids, the demo, the in-memory federation and the report. The only
package that may import `market`, `aggregator` and `trainer` together; nothing imports it."""
