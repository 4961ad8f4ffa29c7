"""The provider simulator: providers' protocols over real HTTP on loopback.

No machine here reaches the providers and nobody should pay to test a sweep, so the runner's
provider plugins, the tests, the demo and the benchmarks talk to this server exactly as they
would to the real services; only the base URL differs. Each provider's protocol is a
`ProviderSim` registered by its plugin (`register_simulators`: Runway and fal.ai by the built-in
plugins, others by theirs), hosted under `/<provider>` on one port over shared machinery: a
billing ledger charged as the providers charge (docs/providers.md), their input rules and
account limits, real media files behind expiring signed URLs, and fault injection.

    from runner.sim import Simulator, SimConfig
    with Simulator(SimConfig(concurrency={"runway": 2})) as sim:
        sim.url("runway"), sim.keys["runway"], sim.endpoints("fal")

Or from a shell: `python -m runner.sim --port 8765`. With a state file (`SimConfig(state_path=...)`,
`Simulator(state_path=...)`, `--state FILE`) it outlives its process as a real provider does: a
simulator started on the same file answers for every task, upload and ledger entry of the earlier
ones, on the same port. docs/simulator.md is the manual.
"""

from typing import Any

from runner.sim.config import Latency, SimConfig
from runner.sim.faults import KINDS
from runner.sim.ledger import payload_sha256, read_ledger
from runner.sim.provider import ProviderSim
from runner.sim.server import Request, Response, json_response
from runner.sim.simulator import Simulator
from runner.sim.state import StateInUse
from runner.sim.tasks import Task

__all__ = ["KINDS", "POINTS", "Latency", "ProviderSim", "Request", "Response", "SimConfig", "Simulator", "StateInUse",
           "Task", "json_response", "payload_sha256", "read_ledger"]


def __getattr__(name: str) -> Any:
    """`POINTS`: the fault points of every installed provider simulator, and `download` (computed
    when asked, since which simulators there are depends on the plugins installed)."""
    if name == "POINTS":
        from runner import plugins
        from runner.sim.faults import Points

        return Points.of(plugins.simulators().values()).names
    raise AttributeError(f"module 'runner.sim' has no attribute {name!r}")
