"""Engine targets: damaged bytes, structurally mutated headers, and consistent forgeries that reach the layers.

Every engine that loads is run (``exercise.run_engine``): on random inputs, and sometimes through bench, verify,
compare, the divergence locator or the command line.
"""

from __future__ import annotations

import random

import msgpack

from tests.fuzz.case import Case, Target
from tests.fuzz.exercise import Context, cli, run_engine
from tests.fuzz.forge import forge
from tests.fuzz.mutate import mutate_bytes, mutate_document, pick, resign_engine, split_engine
from tests.fuzz.outcome import Skip


def engine_bytes(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    data = mutate_bytes(rng, seed.engine)
    return Case(lambda: run_engine(rng, data, ctx, seed), data, ".engine", [f"{seed.name}: bytes damaged"])


def engine_header(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    header, buffer = split_engine(seed.engine)
    doc = mutate_document(rng, header)
    try:
        data = resign_engine(seed.engine, doc, buffer, fix_manifest_digest=rng.random() < 0.8)
    except (TypeError, ValueError, OverflowError, msgpack.PackException):
        raise Skip("msgpack cannot write the mutated header") from None
    return Case(lambda: run_engine(rng, data, ctx, seed), data, ".engine", [f"{seed.name}: header mutated"])


def engine_forgery(rng: random.Random, ctx: Context) -> Case:
    seed = pick(rng, ctx.seeds)
    try:
        data, notes = forge(rng, seed.engine)
    except (TypeError, ValueError, OverflowError, msgpack.PackException):
        raise Skip("msgpack cannot write the forged header") from None
    renamed = any("renamed" in note for note in notes) and rng.random() < 0.5

    def run() -> None:
        if renamed:  # the oracle for names from a file: inspect prints them escaped
            cli(["inspect", ctx.case_file("renamed.engine", data)])
        run_engine(rng, data, ctx, seed)

    return Case(run, data, ".engine", [f"{seed.name}:", *notes])


TARGETS = (
    Target("engine_bytes", "engine", engine_bytes, 0.10, 400,
           "bit flips, truncation, zeroed, duplicated and spliced ranges anywhere in a CPU engine"),
    Target("engine_header", "engine", engine_header, 0.15, 500,
           "the msgpack header mutated structurally (keys deleted or renamed, values replaced by huge, negative, "
           "NaN, deep or mistyped values, list entries duplicated), re-signed (trailer, mostly the manifest digest)"),
    Target("engine_forgery", "engine", engine_forgery, 0.40, 1200,
           "consistent forgeries: attributes deleted, changed or added, shapes, batch, dtypes, constant values "
           "(Gather indices, pads), weight shapes, tactics, ops, workspaces, wiring, names, memory plans; header, "
           "embedded manifest and memory plan rewritten together and every digest re-signed, so the layer "
           "checks, preparation and execution are reached"),
)
