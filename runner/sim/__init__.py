"""The provider simulator: Runway and fal.ai protocols over real HTTP on loopback.

No machine here reaches the providers and nobody should pay to test a sweep, so the runner's
provider plugins, the tests, the demo and the benchmarks talk to this server exactly as they
would to the real services; only the base URL differs. It keeps a billing ledger charged as the
providers charge (docs/providers.md), enforces their input rules and account limits, serves real
media files behind expiring signed URLs, serves fal's request history, prices and storage, and
injects faults.

    from runner.sim import Simulator, SimConfig
    with Simulator(SimConfig(concurrency={"runway": 2})) as sim:
        sim.runway_url, sim.fal_url, sim.keys

Or from a shell: `python -m runner.sim --port 8765`. With a state file (`SimConfig(state_path=...)`,
`Simulator(state_path=...)`, `--state FILE`) it outlives its process as a real provider does: a
simulator started on the same file answers for every task, upload and ledger entry of the earlier
ones, on the same port. docs/simulator.md is the manual.
"""

from runner.sim.config import Latency, SimConfig
from runner.sim.faults import KINDS, POINTS
from runner.sim.ledger import payload_sha256, read_ledger
from runner.sim.simulator import Simulator
from runner.sim.state import StateInUse

__all__ = ["KINDS", "POINTS", "Latency", "SimConfig", "Simulator", "StateInUse", "payload_sha256", "read_ledger"]
