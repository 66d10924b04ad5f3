"""A faithful, offline fake of the OpenAI Assistants API (v1 and v2) for the demo, tests and benchmarks.

Runs move through their real lifecycle on a clock; what happens is picked per run with
`metadata["sim_scenario"]` (see `engine.SCENARIOS`). Request headers `x-sim-status` and
`x-sim-delay-ms` inject faults. Azure AI Foundry agents' paths (`/api/projects/P/...?api-version=v1`)
are served too, whatever the prefix (see `routes_azure`).
"""

from .app import create_sim_app, start_sim
from .config import SimConfig

__all__ = ["SimConfig", "create_sim_app", "start_sim"]
