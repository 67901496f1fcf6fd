"""grok-serve under load: requests/s and p50/p95 latency at 1, 4 and 16 concurrent clients, batched
(`batching.max_batch_size=16`) vs one at a time (`=1`), then a bounded soak watching the server's memory.

Each setting runs `grok-serve` in its own process on 127.0.0.1 (torch on `--threads` threads); closed-loop clients
(threads) each send `--requests-per-client` report requests (`POST /v1/reports`: one SynthEye eye's OCT + CFP and its
demographic/systemic row, greedy, `--max-tokens` new tokens, no streaming). The soak sends `--soak` requests from 16
clients to the batched server and samples its resident memory every `--sample-every` requests.

    .venv/bin/python experiments/benchmarks/bench_serve.py --export artifacts/mllm --syntheye data/syntheye

The figures are ratios measured in one run on a shared machine; the script prints the load average with them.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[2]
ROW_COLUMNS = ("eye", "age_years", "sex", "sbp_mmhg", "dbp_mmhg", "hba1c_mmol_mol", "bmi_kg_m2")


def request_bodies(syntheye: Path, count: int, max_tokens: int) -> list[dict]:
    """Report requests for the first `count` eyes of a SynthEye folder (images inline, demographic/systemic row)."""
    import pandas as pd

    table = pd.read_parquet(syntheye / "biomarkers.parquet").head(count)
    bodies = []
    for _, row in table.iterrows():
        images = {
            modality: "data:image/png;base64," + base64.b64encode((syntheye / row[column]).read_bytes()).decode()
            for modality, column in (("oct", "oct_path"), ("cfp", "cfp_path"))
        }
        values = {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in ROW_COLUMNS if pd.notna(row[c])}
        bodies.append({"images": images, "biomarkers": values, "max_tokens": max_tokens})
    return bodies


class Server:
    """`python -m grok.cli.serve` in a child process on a free loopback port."""

    def __init__(self, export: Path, batch_size: int, threads: int, root: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [
            sys.executable, "-m", "grok.cli.serve", f"model_dir={export}", f"port={self.port}",
            f"num_threads={threads}", f"batching.max_batch_size={batch_size}", "batching.max_queue=256",
            "log_level=warning", f"paths.root_dir={root}",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"grok-serve exited: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("grok-serve did not start in 300 s")
            time.sleep(0.5)

    def batches(self) -> dict[str, int]:
        """Batch size -> batches run so far (from /healthz)."""
        return httpx.get(f"{self.url}/healthz", timeout=30).json()["batches"]

    def rss_mib(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def __exit__(self, *_) -> None:
        self.process.terminate()
        self.process.wait(60)


def run_clients(url: str, bodies: list[dict], clients: int, per_client: int) -> dict:
    """`clients` threads each sending `per_client` requests back to back; throughput and latency percentiles."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(timeout=600) as session:
            for k in range(per_client):
                body = bodies[(index * per_client + k) % len(bodies)]
                started = time.perf_counter()
                response = session.post(f"{url}/v1/reports", json=body)
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies if response.status_code == 200 else failures).append(
                        elapsed if response.status_code == 200 else response.text[:200]
                    )

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} request(s) failed, e.g. {failures[0]}")
    return {
        "clients": clients,
        "requests": len(latencies),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_s": round(float(np.percentile(latencies, 50)), 3),
        "p95_s": round(float(np.percentile(latencies, 95)), 3),
    }


def soak(server: Server, bodies: list[dict], total: int, every: int) -> list[dict]:
    """`total` requests from 16 clients, the server's RSS sampled every `every` requests."""
    samples = [{"requests": 0, "rss_mib": round(server.rss_mib(), 1)}]
    done = 0
    while done < total:
        batch = min(every, total - done)
        run_clients(server.url, bodies, 16, max(1, batch // 16))
        done += max(1, batch // 16) * 16
        samples.append({"requests": done, "rss_mib": round(server.rss_mib(), 1)})
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, default=ROOT / "artifacts" / "mllm")
    parser.add_argument("--syntheye", type=Path, default=ROOT / "data" / "syntheye")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server (1 leaves a core for HTTP)")
    parser.add_argument("--soak", type=int, default=2000)
    parser.add_argument("--soak-max-tokens", type=int, default=16)
    parser.add_argument("--sample-every", type=int, default=208)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if not (args.export / "mllm_config.yaml").is_file():
        raise SystemExit(f"{args.export} is not a GROK MLLM export: run `make demo` (or pass --export)")
    bodies = request_bodies(args.syntheye, 32, args.max_tokens)
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "grok-bench-serve"
    results: dict = {"export": str(args.export), "max_tokens": args.max_tokens, "threads": args.threads, "runs": []}
    results["load_before"] = [round(x, 2) for x in os.getloadavg()]
    for name, batch_size in (("batched", 16), ("one_at_a_time", 1)):
        with Server(args.export, batch_size, args.threads, root) as server:
            run_clients(server.url, bodies, 2, 2)  # warm-up
            for clients in args.clients:
                before = server.batches()
                figures = run_clients(server.url, bodies, clients, args.requests_per_client)
                batches = {k: v - before.get(k, 0) for k, v in server.batches().items() if v - before.get(k, 0)}
                mean_batch = sum(int(k) * v for k, v in batches.items()) / max(1, sum(batches.values()))
                load = round(os.getloadavg()[0], 2)
                results["runs"].append({"mode": name, "load_1min": load, **figures, "mean_batch": round(mean_batch, 1)})
                print(json.dumps(results["runs"][-1]), flush=True)
    if args.soak:
        soak_bodies = [{**body, "max_tokens": args.soak_max_tokens} for body in bodies]
        with Server(args.export, 16, args.threads, root) as server:
            run_clients(server.url, soak_bodies, 16, 2)  # warm-up
            started = time.perf_counter()
            results["soak"] = soak(server, soak_bodies, args.soak, args.sample_every)
            results["soak_wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps({"soak": results["soak"]}), flush=True)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(markdown(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def markdown(results: dict) -> str:
    """The figures as the Markdown tables docs/serve.md shows."""
    by = {(r["mode"], r["clients"]): r for r in results["runs"]}
    lines = [
        "| clients | batched req/s | one-at-a-time req/s | ratio | batched p50 / p95 (s) | one-at-a-time p50 / p95 (s) "
        "| mean batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for clients in sorted({c for _, c in by}):
        b, o = by[("batched", clients)], by[("one_at_a_time", clients)]
        lines.append(
            f"| {clients} | {b['requests_per_s']} | {o['requests_per_s']} | "
            f"{b['requests_per_s'] / o['requests_per_s']:.2f}x | {b['p50_s']} / {b['p95_s']} | "
            f"{o['p50_s']} / {o['p95_s']} | {b['mean_batch']} |"
        )
    if results.get("soak"):
        samples = results["soak"]
        lines += ["", "| requests | " + " | ".join(str(s["requests"]) for s in samples) + " |"]
        lines += ["|---" * (len(samples) + 1) + "|"]
        lines += ["| server RSS (MiB) | " + " | ".join(str(s["rss_mib"]) for s in samples) + " |"]
    lines += ["", f"load average before {results['load_before']}, after {results['load_after']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
