"""The one way the jobs join Ray: a named cluster, or an embedded one that stays embedded."""

from __future__ import annotations

import os

import ray


def connect(address: str | None = None) -> None:
    """Join ``address`` ("auto", "host:6379", "ray://host:10001"), or start an embedded Ray
    with every core of this machine.

    The embedded case passes ``address="local"``: a plain ``ray.init()`` would pick up a
    cluster that ``ray start`` once ran here (a live one, or the address file a killed one
    leaves in /tmp/ray) and then refuse the CPU count it was given.
    """
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
