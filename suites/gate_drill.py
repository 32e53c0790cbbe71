"""The benchmark gate's drill: how often it fails unchanged code, and how often it catches a
training step made slower from outside the project. Not a test (it takes minutes): its numbers go
in docs/reports.md (Gating CI) and beside the limits in trainclaims/benchgate.py.

    python suites/gate_drill.py --out /tmp/drill [--runs 10] [--slowed 3] [--factor 1.1] [--busy] [-k EXPR]

It runs ``pytest -m benchmark suites/test_bench_throughput.py`` once for a baseline, then ``--runs``
times unchanged and ``--slowed`` times with every optimizer step followed by a busy wait of
``factor - 1`` times the time since that step's ``zero_grad`` (a pytest plugin of the drill's own,
loaded through ``PYTEST_PLUGINS``: nothing in the project or its command line changes), each rerun
judged against the baseline by the gate (``trainclaims.gating.gate_benchmarks``). ``--busy`` keeps
one core busy (a ``while True: pass`` process) during the reruns; ``-k`` runs only the benchmarks
pytest's ``-k`` selects. Prints, per benchmark, each
rerun's change and call, the false alarms and catches, and its limit with the false alarms its
baseline's rounds imply there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "trainclaims_drill_slowstep"
PLUGIN_CODE = '''"""The drill's slowdown: each optimizer step followed by a busy wait of (FACTOR - 1) times the time
since its zero_grad, so that the whole training step takes FACTOR times as long."""
import os
import time

import torch

FACTOR = float(os.environ["TRAINCLAIMS_DRILL_FACTOR"])
_zero_grad = torch.optim.Optimizer.zero_grad
_started = {}


def zero_grad(self, *args, **kwargs):
    _started[id(self)] = time.perf_counter()
    return _zero_grad(self, *args, **kwargs)


def _wait(optimizer, args, kwargs):
    start = _started.get(id(optimizer))
    if start is None:
        return
    until = time.perf_counter() + (FACTOR - 1) * (time.perf_counter() - start)
    while time.perf_counter() < until:
        pass


torch.optim.Optimizer.zero_grad = zero_grad
from torch.optim.optimizer import register_optimizer_step_post_hook

register_optimizer_step_post_hook(_wait)
'''


def bench_run(out: Path, name: str, extra_env: dict[str, str] | None = None, select: str = "") -> Path:
    """One run of the benchmark module; its benchmarks.json."""
    report = out / name
    env = {**os.environ, **(extra_env or {})}
    env.pop("PYTEST_XDIST_WORKER", None)
    args = [sys.executable, "-m", "pytest", "suites/test_bench_throughput.py", "-m", "benchmark", "--device=cpu"]
    args += ["-p", "no:cacheprovider", "-p", "no:xdist", "-q", f"--report-dir={report}"]
    args += ["-k", select] if select else []
    start = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    load = open("/proc/loadavg").read().split()[0]
    print(f"  {name}: exit {done.returncode} in {time.perf_counter() - start:.0f} s (load {load})", flush=True)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-2000:], sep="\n")
    return report / "benchmarks.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--slowed", type=int, default=3)
    parser.add_argument("--factor", type=float, default=1.1)
    parser.add_argument("--busy", action="store_true", help="keep one core busy during the reruns")
    parser.add_argument("--baseline", type=Path, default=None, help="a baseline benchmarks.json (else one is run)")
    parser.add_argument("-k", dest="select", default="", help="only the benchmarks this pytest -k expression selects")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from trainclaims.benchgate import benchmark_noise
    from trainclaims.gating import gate_benchmarks, read_bench_baseline

    args.out.mkdir(parents=True, exist_ok=True)
    plugins = args.out / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / f"{PLUGIN}.py").write_text(PLUGIN_CODE)
    slowed_env = {
        "PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]),
        "PYTEST_PLUGINS": PLUGIN,
        "TRAINCLAIMS_DRILL_FACTOR": str(args.factor),
    }
    print(f"baseline (load {open('/proc/loadavg').read().split()[0]})", flush=True)
    baseline_file = args.baseline or bench_run(args.out, "baseline", select=args.select)
    baseline = read_bench_baseline(baseline_file)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    results: dict[str, list[tuple[str, str, float | None]]] = {}
    try:
        plan = [("unchanged", k, {}) for k in range(args.runs)]
        plan += [("slowed", k, slowed_env) for k in range(args.slowed)]
        for kind, k, env in plan:
            current = read_bench_baseline(bench_run(args.out, f"{kind}-{k}", env, args.select))
            outcome = gate_benchmarks(baseline, current)
            for result in outcome.comparisons:
                results.setdefault(result.new.short, []).append((kind, result.status, result.change))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    summary = {}
    print(f"\n{'benchmark':<64} {'limit':>5}  unchanged: false alarms, changes   slowed x{args.factor}: caught")
    for row in baseline:
        calls = results.get(row.short, [])
        same = [(s, c) for kind, s, c in calls if kind == "unchanged"]
        slow = [(s, c) for kind, s, c in calls if kind == "slowed"]
        alarms = sum(s in ("slower", "inconclusive") for s, _ in same)
        caught = sum(s in ("slower", "inconclusive") for s, _ in slow)
        noise = benchmark_noise([row])
        changes = [c for _, c in same if c is not None]
        print(
            f"{row.short:<64} {row.limit():>5.0%}  {alarms}/{len(same)} "
            f"{[f'{c:+.1%}' for _, c in same if c is not None]}   {caught}/{len(slow)} "
            f"{[f'{c:+.1%}:{s}' for s, c in slow if c is not None]}"
        )
        if noise is not None:
            print(f"{'':<64}        {noise.summary()}")
        summary[row.short] = {
            "limit": row.limit(),
            "unchanged": same,
            "slowed": slow,
            "false_alarms": alarms,
            "caught": caught,
            "unchanged_change_range": [min(changes), max(changes)] if changes else None,
            "unchanged_change_sd": statistics.pstdev(changes) if len(changes) > 1 else None,
            "noise": noise.to_json() if noise else None,
        }
    report = {"args": {**vars(args), "out": str(args.out)}, **summary}
    (args.out / "drill.json").write_text(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
