"""Connecting to Ray: a cluster already running, a local instance, or one at an address."""

from __future__ import annotations

import logging

import ray

from ..errors import InvalidInputError

log = logging.getLogger(__name__)


def connect(ray_address: str = "auto", *, num_cpus: int | None = None) -> None:
    """Make sure this process is connected to Ray. `ray_address`: "auto" (the instance this process already
    joined, else a running cluster, else a new local instance), "local" (a new local instance, `num_cpus` CPUs)
    or a cluster's address ("HOST:PORT" or "ray://HOST:PORT")."""
    if not isinstance(ray_address, str) or not ray_address:
        raise InvalidInputError(f"ray must be 'auto', 'local' or a cluster address, got {ray_address!r}")
    if ray.is_initialized():
        return
    options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if ray_address == "local":
        ray.init(num_cpus=num_cpus, **options)
    elif ray_address == "auto":
        try:
            ray.init(address="auto", **options)
        except ConnectionError:
            log.info("no running Ray cluster found: starting a local instance")
            ray.init(num_cpus=num_cpus, **options)
    else:
        ray.init(address=ray_address, **options)
