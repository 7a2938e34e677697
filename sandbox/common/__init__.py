"""The layer every sandbox app shares: config, SQLite, work queue, knobs, middleware,
telemetry emission, probes, the admin API and the app factory (one concept per module)."""
