"""The conformance kit: the suite every backend, ours and third-party, must pass.

    from rhapsody.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        def make_backend(self):
            return MyBackend()

Needs pytest, hypothesis and anyio (`pip install rhapsody-core[testing]`).
"""

from rhapsody.testing.conformance import BackendConformance
from rhapsody.testing.invariants import InvariantRecorder
from rhapsody.testing.machine import run_state_machine

__all__ = ["BackendConformance", "InvariantRecorder", "run_state_machine"]
