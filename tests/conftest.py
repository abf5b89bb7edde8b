"""Shared test configuration."""

import os

from hypothesis import settings

# CI runs the property tests with the full example count; `HYPOTHESIS_PROFILE=dev` for speed.
settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
