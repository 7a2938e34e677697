"""The eight reference apps, one module each; :func:`load_definition` finds one by id.

Modules are imported lazily so that a process serving A3 never imports A8's code.
"""

from __future__ import annotations

import importlib

from sandbox.catalog import role
from sandbox.common.context import AppDefinition


def load_definition(app_id: str) -> AppDefinition:
    """The :class:`AppDefinition` exported as ``DEFINITION`` by the app's module."""
    module = importlib.import_module(role(app_id).module)
    definition: AppDefinition = module.DEFINITION
    return definition
