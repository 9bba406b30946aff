"""``build --devices``: one builder per GPU, in parallel, each in a process of its own and each writing its own
engine and manifest; then whether the devices chose the same tactics.

Builders on different GPUs do not disturb each other's timing: each holds only its own device's timing lock (keyed
by the GPU's PCI bus id) and runs in its own process (its own CUDA context, its own GIL). GPUs of one model normally
choose alike; where timing noise made one choose differently, ``reprobuild diff`` shows it, and a replay of one
device's manifest on another (``build --replay A.dev0.manifest.json --device 1``) gives device 0's engine there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from reprobuild.core.errors import UsageError
from reprobuild.kernels.backend import MULTI_DEVICE_ENV
from reprobuild.manifest import Manifest, read_manifest


def parse_devices(text: str) -> tuple[int, ...] | str:
    """'all' or a comma-separated list of distinct GPU indices ('0,1')."""
    if text.strip() == "all":
        return "all"
    try:
        devices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'all' nor a list of GPU indices such as 0,1") from None
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise argparse.ArgumentTypeError(f"{text!r}: give each GPU index once, each 0 or more")
    return devices


def device_path(path: str, device: int) -> str:
    """'model.engine' -> 'model.dev1.engine'; 'model.manifest.json' -> 'model.dev1.manifest.json'."""
    for suffix in (".manifest.json", ".engine"):
        if path.endswith(suffix):
            return f"{path[:-len(suffix)]}.dev{device}{suffix}"
    return f"{path}.dev{device}"


@dataclass(frozen=True)
class DeviceBuild:
    device: int
    engine_path: str
    manifest_path: str
    seconds: float


#: The build command (``reprobuild.cli.build.run``), handed in by that command: a module-level function, so that
#: the spawned workers receive it by reference and this module need not import the command that imports it.
BuildCommand = Callable[[argparse.Namespace], int]


def _build_on(run: BuildCommand, args: argparse.Namespace, device: int) -> DeviceBuild:
    """One device's build, in a worker process: the build command itself, quiet, on ``device``."""
    os.environ.update(MULTI_DEVICE_ENV)
    engine_path, manifest_path = device_path(args.output, device), device_path(args.manifest, device)
    child = argparse.Namespace(**{**vars(args), "devices": None, "device": device, "output": engine_path,
                                  "manifest": manifest_path, "quiet": True, "json": False, "verbose": 0})
    started = time.perf_counter()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        run(child)
    return DeviceBuild(device, engine_path, manifest_path, time.perf_counter() - started)


def build_on_devices(run: BuildCommand, args: argparse.Namespace,
                     devices: Sequence[int]) -> tuple[list[DeviceBuild], float]:
    """Every device's build by ``run`` (the build command), in parallel processes (spawned: no CUDA state is
    inherited); and the wall time."""
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(devices), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_build_on, run, args, device) for device in devices]
        results = [f.result() for f in futures]
    return results, time.perf_counter() - started


def choice_differences(manifests: Sequence[Manifest]) -> list[str]:
    """Per layer where a device chose another tactic than the first device: 'LAYER: dev0 TACTIC, dev1 TACTIC'."""
    lines = []
    for index, layer in enumerate(manifests[0].pinned.layers):
        choices = []
        for other in manifests:
            theirs = other.pinned.layers[index] if index < len(other.pinned.layers) else None
            choices.append(theirs.tactic.label if theirs is not None else "(no such layer)")
        if len(set(choices)) > 1:
            lines.append(f"{layer.name}: " + ", ".join(choices))
    return lines


def report(results: Sequence[DeviceBuild], wall: float) -> tuple[str, bool]:
    """The text ``build --devices`` prints, and whether every device built the same engine."""
    manifests = [read_manifest(r.manifest_path) for r in results]
    digests = [m.engine.sha256 if m.engine is not None else "?" for m in manifests]  # each build records its own
    lines = [f"device {r.device}  {r.engine_path}  sha256 {digest[:16]}  {r.seconds:.2f} s"
             for r, digest in zip(results, digests)]
    longest = max(r.seconds for r in results)
    lines.append(f"{len(results)} builds in parallel: {wall:.2f} s of wall time; the longest build took "
                 f"{longest:.2f} s, all of them {sum(r.seconds for r in results):.2f} s")
    differences = choice_differences(manifests)
    identical = len(set(digests)) == 1
    if not differences:
        lines.append("every device chose the same tactic for every layer"
                     + ("; the engines are identical" if identical else
                        "; the engines differ (reprobuild diff shows where: golden outputs or environment)"))
    else:
        devices = ", ".join(f"dev{r.device}" for r in results)
        lines.append(f"the devices chose differently in {len(differences)} layer(s) ({devices}):")
        lines += [f"  {line}" for line in differences]
        lines.append(f"to make every device's engine the same, replay one device's manifest on the others: "
                     f"reprobuild build MODEL --replay {results[0].manifest_path} --device N")
    return "\n".join(lines), identical


def check_devices_options(args: argparse.Namespace) -> None:
    """What --devices cannot be combined with (--device is in its argparse group: refused before this)."""
    if args.timing_cache:
        raise UsageError("--timing-cache cannot be used with --devices: builders in parallel would write one file")
    if args.json:
        raise UsageError("--json is not available with --devices yet; each device's manifest holds the build")
