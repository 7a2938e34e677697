"""The configuration layer: the one params model, its sections, and the phase registry.

Everything here is pure data and validation: it reads YAML and environment variables and imports
nothing else from the library, so every other layer may depend on it. The registry
(``registry``) is the one table of phases: their order, notebooks, titles, check-id prefixes,
attestation claims, what they change and what they need from the audited ecosystem.
"""

__all__ = ["apps", "autonomy", "contracts", "growth", "model", "ops", "registry", "sections"]
