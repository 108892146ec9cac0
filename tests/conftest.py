"""Hypothesis profiles, registered once: the first example of a kernel pays JIT compilation, so no
deadline. ``HYPOTHESIS_PROFILE=thorough`` runs more examples."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
