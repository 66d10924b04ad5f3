"""A faithful, offline fake of the OpenAI Assistants API (v1 and v2) and Responses API for the demo, tests
and benchmarks.

Runs and responses move through their real lifecycle on a clock; what happens is picked per run or
response with `metadata["sim_scenario"]` (see `engine.SCENARIOS`, `responses_request.SCENARIOS`).
Request headers `x-sim-status` and `x-sim-delay-ms` inject faults.
"""

from .app import create_sim_app, start_sim
from .config import SimConfig

__all__ = ["SimConfig", "create_sim_app", "start_sim"]
