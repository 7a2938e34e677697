"""A8's telemetry store: the event contract (:mod:`.schema`) and the SQLite store (:mod:`.store`)."""
