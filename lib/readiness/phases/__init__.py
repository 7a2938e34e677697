"""The audit phases: one package per notebook, named in the phase registry.

Each package holds what its notebook's cells call: the code that gathers evidence, judges it
into checks and writes the phase's reports. A phase package may import ``readiness.phasekit``
(the phase context and what phases share) and every layer below it; it never imports
another phase package. The contract in ``.importlinter`` names the packages by wildcard
(``readiness.phases.*``), so a new phase package is held to it without an edit.
"""

from readiness.params.registry import REGISTRY

#: The phase packages, as the registry names them (a new phase is listed by its entry there).
__all__ = [spec.package for spec in REGISTRY]
