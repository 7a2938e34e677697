"""What phases are built from: the phase context a notebook opens, and what two or more phases use.

``context`` is the object a notebook opens with ``open_phase``: params, run folder, clients,
recording, the ``@part`` applicability guard and the production write guard. The other
modules were moved down from the phase that first needed them once a second phase did: the
Stripe micro price step (00 and 05), the telemetry event contract (06 and 07), the
command-center probes (05, 06 and 11), the sign-up journey (04 and 07) and the
Observatory-style header grading (07, 10 and 11). This layer may import ``score``,
``report``, ``probe``, ``core``, ``stats`` and ``params``; it never imports a phase package.
"""

__all__ = ["command_center", "context", "event_contract", "observatory", "signup_journey", "stripe_price"]
