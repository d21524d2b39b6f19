"""``iotclass features segments FOLDER`` with ``--workers 2`` against ``--workers 1``, both in
the same run, as whole commands (process start, imports, kernel loading and the CSV write
included), and whether the two tables are byte for byte the same.

    python -m benchmarks.workers                   # the shared captures (../shared/datasets)
    python -m benchmarks.workers FOLDER            # any folder of captures
    python -m benchmarks.workers --generated 16    # 16 days of one home (4 generated, 12 copies)

A command of a few seconds is bounded by what does not spread (a worker's start, the parent's
concatenation and write); the generated corpus shows the ratio on work large enough for the
spread to matter. On a machine whose cores are busy with other jobs the ratio falls: the
figure is the cores this run got, which the load average printed beside it tells.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def _iotclass() -> list[str]:
    return [sys.executable, "-m", "classifier.cli"]


def run_features(folder: str, workers: int, out: str) -> float:
    """Wall seconds of one ``iotclass features segments FOLDER --workers N`` command."""
    cmd = _iotclass() + ["features", "segments", folder, "--workers", str(workers), "--out", out]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"workers: {' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return took


DISTINCT = 4     # generated captures beyond these are copies of them (generating is the slow part)


def generate(folder: str, n: int, seconds: float) -> int:
    """``n`` captures of one home, ``seconds`` each: seeds 1..4 generated, the rest copies of
    those (each file is read and featurised on its own, so a copy costs the same work);
    returns the packets."""
    from benchmarks.parsing import write_day_capture
    made: list[tuple[str, int]] = []
    for i in range(1, n + 1):
        path = os.path.join(folder, f"home-{i}.pcap")
        if i <= DISTINCT:
            made.append((path, write_day_capture(path, seconds=seconds, seed=i)))
        else:
            src, packets = made[(i - 1) % DISTINCT]
            shutil.copyfile(src, path)
            made.append((path, packets))
    return sum(p for _, p in made)


def measure(folder: str, repeat: int, workers: int) -> dict:
    tmp = tempfile.mkdtemp(prefix="iotclass-workers-")
    try:
        one, many = os.path.join(tmp, "one.csv"), os.path.join(tmp, "many.csv")
        run_features(folder, 1, one)     # untimed: numba's on-disk cache filled, files in the page cache
        t1, tn = [], []
        for _ in range(repeat):          # interleaved, so that a change of load hits both
            t1.append(run_features(folder, 1, one))
            tn.append(run_features(folder, workers, many))
        with open(one) as fh:
            rows = sum(1 for _ in fh) - 1
        return {"folder": folder, "workers": workers, "rows": rows, "seconds_one": min(t1),
                "seconds_many": min(tn), "speedup": min(t1) / min(tn),
                "identical": filecmp.cmp(one, many, shallow=False),
                "load_average": os.getloadavg()[0], "cores": len(os.sched_getaffinity(0))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="captures (default: ../shared/datasets)")
    ap.add_argument("--generated", type=int, default=0, metavar="N",
                    help="N captures of one home instead, --hours each (4 generated, the rest copies of them)")
    ap.add_argument("--hours", type=float, default=24.0, help="hours of each generated capture (24: about 2 M packets)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs of each command")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    gen_dir = None
    try:
        if args.generated:
            gen_dir = tempfile.mkdtemp(prefix="iotclass-corpus-")
            packets = generate(gen_dir, args.generated, args.hours * 3600)
            folder = gen_dir
        else:
            from classifier.shared import datasets_root
            folder = args.folder or datasets_root()
            packets = None
            if folder is None or not os.path.isdir(folder):
                print("workers: no folder of captures (expected ../shared/datasets; or --generated N)",
                      file=sys.stderr)
                return 1
        r = measure(folder, args.repeat, args.workers)
        r["generated_packets"] = packets
    finally:
        if gen_dir is not None:
            shutil.rmtree(gen_dir, ignore_errors=True)
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return 0 if r["identical"] else 1
    what = (f"{args.generated} generated captures, {packets:,} packets" if packets is not None else r["folder"])
    print(f"iotclass features segments on {what}: {r['rows']:,} rows")
    print(f"  --workers 1          {r['seconds_one']:8.2f} s  (best of {args.repeat})")
    print(f"  --workers {r['workers']:<10d} {r['seconds_many']:8.2f} s  speed-up {r['speedup']:.2f}x "
          f"(goal >= 1.6x on 2 cores)")
    print(f"  tables identical: {'yes' if r['identical'] else 'NO'}; {r['cores']} cores, "
          f"load average {r['load_average']:.2f} at the end")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
