"""SynthEye throughput: wall and CPU time to write N subjects (2 eyes, 4 images each) with W worker processes.

    .venv/bin/python experiments/benchmarks/bench_synth.py --n-subjects 1000 --num-workers 2
    .venv/bin/python experiments/benchmarks/bench_synth.py --n-subjects 100 --num-workers 2 --volume-slices 25

The target is 1,000 subjects in under a minute on 2 cores. The machine may be shared: the load average is printed
with the figures, and CPU seconds (this process plus its workers) show what the work costs without contention.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from grok.data.synth import write_syntheye


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    """Generate a dataset into a temporary folder and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subjects", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=224, help="OCT and CFP side in pixels")
    parser.add_argument("--volume-slices", type=int, default=0, help="B-scans per OCT volume (0 = no volumes)")
    parser.add_argument("--volume-formats", default="folder,tiff", help="comma-separated: folder, tiff")
    args = parser.parse_args()
    load_before = os.getloadavg()
    timings: dict[str, float] = {}
    volume = {"enabled": args.volume_slices > 0, "num_slices": max(args.volume_slices, 1),
              "formats": args.volume_formats.split(",")}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
        write_syntheye(Path(tmp) / "syntheye", n_subjects=args.n_subjects, seed=args.seed, num_workers=args.num_workers,
                       oct_height=args.size, oct_width=args.size, cfp_size=args.size, progress=False,
                       oct_volume=volume, timings=timings)  # fmt: skip
        wall, cpu = time.perf_counter() - wall_start, _cpu_seconds() - cpu_start
        size_mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
        volume_mb = sum(p.stat().st_size for p in Path(tmp).glob("syntheye/oct_volume/**/*") if p.is_file()) / 2**20
    images = 4 * args.n_subjects
    print(f"subjects {args.n_subjects}  eyes {2 * args.n_subjects}  images {images}  size {args.size}px  "
          f"workers {args.num_workers}  cores {os.cpu_count()}")  # fmt: skip
    print(f"wall {wall:.1f} s  ({args.n_subjects / wall:.1f} subjects/s, {images / wall:.0f} images/s)")
    print(f"cpu  {cpu:.1f} s  ({1000 * cpu / (2 * args.n_subjects):.1f} ms per eye, both images and its row)")
    print(f"dataset {size_mb:.0f} MiB  load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    if args.volume_slices:
        eyes = 2 * args.n_subjects
        print(f"OCT volumes ({args.volume_slices} slices, {args.volume_formats}): {timings['volumes'] / eyes:.3f} s "
              f"per eye to render and write (summed over workers; all work {timings['eyes'] / eyes:.3f} s per eye), "
              f"{volume_mb / eyes:.2f} MiB per eye")  # fmt: skip


if __name__ == "__main__":
    main()
