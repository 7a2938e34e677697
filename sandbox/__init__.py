"""The bundled reference ecosystem: eight small web apps (A1–A8) on loopback.

The readiness suite audits this sandbox by default, so that a run works on a fresh
machine with nothing else installed. Each app is a Starlette service with SQLite state,
a deep readiness check, telemetry emission to the command center (A8), an authenticated
admin API with fault knobs and feature flags. Start and stop it with
:mod:`sandbox.launcher`; see ``sandbox/README.md`` for routes, flags and knobs.

Importing this package imports nothing else: the launcher and the CLI stay light, and
each app process loads only its own module.
"""
