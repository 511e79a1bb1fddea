"""Where a deployment profile's costs are measured on the Ray backend.

Training stays where the trial runs (a CPU worker, or the GPUs ``--gpus-per-trial`` gives it).
A profile's costs (``latency_ms@long``, ...) are measured:

- ``device: cpu``: in the trial's worker, holding the machine's CPU lock exclusively while timing
  (``nas.engine.device_lock.DeviceLock``), exactly as ``latency_ms`` is;
- ``device: cuda`` (or ``cuda:<index>``): by a separate Ray task that asks for one whole GPU and no
  CPU (:data:`GPU_TASK`), so Ray places it on a node with a free GPU whatever the trial's worker
  has. It asks for no CPU because the trial's worker, which waits for it, already holds its CPUs:
  on a cluster whose CPUs are all held by trials, a task asking for one more would wait forever.
  On the GPU it holds that GPU's lock (mode ``mutex``) while timing, so two measurements never
  share a device, also across drivers. Ray decides which GPU: the index of ``cuda:<index>``
  applies to the local backend only. While it waits, the trial's worker gives up its shared CPU
  lock, so timings on its machine are not held up.

Before trials start, :func:`check_cluster` refuses (one line) a CUDA profile when the Ray
cluster has no GPU; a local Ray started by the search is given this machine's GPUs when a
profile needs one (:func:`local_gpus`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

from nas.errors import UserError

__all__ = ["GPU_TASK", "check_cluster", "local_gpus", "measure_options", "profile_runner"]

GPU_TASK = {"num_gpus": 1, "num_cpus": 0}


def measure_options(profile) -> Optional[dict]:
    """The Ray resource request of a separate measurement task for ``profile``; None when the
    trial's own worker measures it (a CPU profile)."""
    return dict(GPU_TASK) if profile.device_type == "cuda" else None


def _gpu_profiles(space) -> list:
    return [name for name, p in space.profiles.items() if measure_options(p) is not None]


def check_cluster(space, resources: Mapping[str, float]) -> None:
    """UserError (one line, naming the first CUDA profile) if the Ray cluster, whose total
    resources are ``resources`` (``ray.cluster_resources()``), has no GPU for it."""
    names = _gpu_profiles(space)
    if names and float(resources.get("GPU", 0)) < 1:
        p = space.profiles[names[0]]
        raise UserError(f"{space.source}: deploy.{names[0]}.device: {p.device!r} is not allowed here "
                        f"(the Ray cluster has no GPU; its resources: {dict(resources)})")


def local_gpus(space, requested: int) -> Optional[int]:
    """``num_gpus`` for a local ``ray.init``: ``requested`` (workers x GPUs per trial), or, when
    that is 0 and a profile measures on CUDA, None (Ray counts this machine's GPUs)."""
    return None if requested == 0 and _gpu_profiles(space) else requested


def _measure_on_gpu(arch_json: str, io, request, latency, seed: int, plugins: list, lock_mode: str) -> dict:
    """Body of the GPU task: the profile's costs on the GPU Ray assigned (visible as ``cuda``)."""
    from dataclasses import replace

    import ray

    from evaluators.profile_costs import ProfileRequest, measure_profile
    from nas.engine.device_lock import DeviceLock
    from search_spaces import ArchSpec
    from search_spaces.plugins import load_plugins

    load_plugins(plugins or ())
    gpu = ray.get_gpu_ids()[0] if ray.get_gpu_ids() else 0
    lock = DeviceLock(f"cuda-gpu{gpu}", mode=lock_mode)
    try:
        request = ProfileRequest(replace(request.profile, device="cuda"), request.metrics)
        return measure_profile(ArchSpec.from_json(arch_json), io, request, latency, seed=seed, lock=lock.exclusive)
    finally:
        lock.close()


def _ray_submit(options: dict, fn: Callable, *args):
    import ray

    return ray.get(ray.remote(**options)(fn).remote(*args))


def profile_runner(settings, lock, *, plugins: list = (), lock_mode: str = "rw",
                   submit: Optional[Callable] = None) -> Callable:
    """The ``measure_profile`` hook ``evaluate`` calls in a Ray trial: CPU profiles here under
    ``lock`` (the trial's :class:`~nas.engine.device_lock.DeviceLock`), CUDA profiles by a GPU task
    (``submit(options, fn, *args)``, default: a Ray task, waited for)."""
    from evaluators.profile_costs import measure_profile

    submit = submit or _ray_submit
    mode = "mutex" if lock_mode == "rw" else lock_mode  # nothing trains on the measurement's GPU

    def run(arch, io, request) -> dict:
        options = measure_options(request.profile)
        if options is None:
            return measure_profile(arch, io, request, settings.latency, seed=settings.seed, lock=lock.exclusive)
        with lock.released():  # waiting on another device: let this machine's timings in
            return submit(options, _measure_on_gpu, arch.to_json(), io, request, settings.latency, settings.seed,
                          list(plugins), mode)

    return run
