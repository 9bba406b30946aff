"""What the lean runtime loads: modules imported and wall time to first output, in a fresh process.

    python benchmarks/runtime_load.py ENGINE [--repeat 5] [--json]

Each repeat starts a new Python process that runs only ``Runtime().deserialize_engine`` +
``create_execution_context`` + ``execute`` on seeded random inputs, as a deployment would. It prints, per run, the
seconds from the first import to the first output on the host, and the reprobuild modules and heavy third-party
packages (pydantic, onnx, cupy) that process loaded; then the median time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from reprobuild.engine import Runtime
with open(sys.argv[1], "rb") as f:
    data = f.read()
engine = Runtime().deserialize_engine(data)
context = engine.create_execution_context()
rng = np.random.default_rng(0)
feeds = {b.name: rng.standard_normal(b.shape).astype(b.dtype) for b in engine.inputs if b.value is None}
outputs = context.execute(feeds)
seconds = time.perf_counter() - t0
ours = sorted(m for m in sys.modules if m == "reprobuild" or m.startswith("reprobuild."))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pydantic", "onnx", "cupy", "torch", "onnxruntime"})
print(json.dumps({"seconds": seconds, "modules": ours, "heavy": heavy,
                  "ops_modules": [m for m in ours if m.startswith("reprobuild.ops")],
                  "outputs": sorted(outputs)}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the last run's full record as JSON")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, args.engine], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"the runtime run failed ({out.returncode}):\n{out.stderr}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"{r['seconds']:.3f} s to first output, {len(r['modules'])} reprobuild modules "
              f"({len(r['ops_modules'])} under reprobuild.ops), third-party: {', '.join(r['heavy']) or 'none'}")
    print(f"median {statistics.median(r['seconds'] for r in runs):.3f} s over {len(runs)} fresh processes")
    if args.json:
        print(json.dumps(runs[-1], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
