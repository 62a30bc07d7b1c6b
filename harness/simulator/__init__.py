"""Protocol-faithful Voice Live simulator: the embedded default target and the harness's ground truth.

See docs/simulator.md. ``Simulator`` runs on an asyncio loop you own; ``start_simulator`` runs one
in a background thread (tests); ``SimulatorProcess`` runs one as a child process (CLI, Locust).
"""

from .profiles import Profile, ProfileError, load_profile
from .runner import SimulatorProcess, SimulatorThread, start_simulator
from .server import Simulator

__all__ = ["Simulator", "SimulatorProcess", "SimulatorThread", "start_simulator", "Profile", "ProfileError",
           "load_profile"]
