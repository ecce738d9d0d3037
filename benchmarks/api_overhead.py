"""The model server's overhead: `/infer` throughput against calling the model in-process, and
N concurrent clients (throughput, p50/p99 latency, 5xx count, ledger total = queries answered).

    python benchmarks/api_overhead.py [--checkpoint zoo/standard.pt] [--seconds 10]
        [--batches 1,256] [--clients 1,2,4,8,16,32] [--output logits] [--json OUT]

A `multirobust serve` process is started on a free port of 127.0.0.1 (logits output, no keys,
no budget, a fresh ledger), and this process is the client: each figure is the median over
``--repeats`` windows of ``--seconds`` seconds, the in-process model timed in windows
interleaved with the HTTP ones, so that load from other jobs hits both alike. The ratio
(HTTP images/s ÷ in-process images/s) is the figure of merit. Client threads and the server
share the machine's cores: on a small machine the client's JSON encoding is part of the cost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from multirobust import data, models
from multirobust.api import Ledger, infer_request

ROOT = Path(__file__).resolve().parents[1]


def start_server(
    checkpoint: Path, ledger: Path, output: str, max_batch: int
) -> tuple[subprocess.Popen, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "multirobust",
            "serve",
            "--checkpoint",
            str(checkpoint),
            "--port",
            "0",
            "--output",
            output,
            "--max-batch",
            str(max_batch),
            "--max-body-bytes",
            str(64 * 2**20),
            "--ledger",
            str(ledger),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    url = ""
    while not url:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        found = re.search(r"at (http://[0-9.]+:\d+)/v2/models/(\S+);", line)
        if found:
            url = f"{found.group(1)}/v2/models/{found.group(2)}"
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, url


def in_process(model: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    """Images per second of ``model(x)`` under inference mode, over ``seconds``."""
    done, start = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - start < seconds:
            model(x)
            done += x.shape[0]
    return done / (time.perf_counter() - start)


def http_window(url: str, body: bytes, images: int, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads posting ``body`` for ``seconds``; throughput and latency."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client() -> None:
        mine, seen = [], {}
        with httpx.Client(timeout=120, headers={"Content-Type": "application/json"}) as c:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.post(f"{url}/infer", content=body)
                except httpx.HTTPError as err:
                    with lock:
                        errors.append(repr(err))
                    continue
                mine.append(time.perf_counter() - t0)
                seen[r.status_code] = seen.get(r.status_code, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in seen.items():
                codes[k] = codes.get(k, 0) + v

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    ok = codes.get(200, 0)
    lat = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "batch": images,
        "requests": sum(codes.values()),
        "answered": ok,
        "requests_per_s": ok / took,
        "images_per_s": ok * images / took,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "status": {str(k): v for k, v in sorted(codes.items())},
        "server_errors": sum(v for k, v in codes.items() if k >= 500),
        "transport_errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "zoo" / "standard.pt")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--clients", default="1,2,4,8,16,32")
    parser.add_argument("--output", default="logits")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    clients = [int(c) for c in args.clients.split(",")]
    model = models.load(args.checkpoint)
    images = data.load("mnist", "test", limit=max(batches)).images
    tmp = Path(tempfile.mkdtemp(prefix="api-overhead-"))
    proc, url = start_server(args.checkpoint, tmp / "ledger.sqlite", args.output, max(batches))
    results: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "output": args.output,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "batches": [],
        "concurrency": [],
    }
    try:
        for b in batches:
            x = images[:b]
            body = json.dumps(infer_request(x.numpy())).encode()
            t0 = time.perf_counter()
            for _ in range(5):
                json.dumps(infer_request(x.numpy()))
            encode_ms = 1000 * (time.perf_counter() - t0) / 5
            local, remote = [], []
            for _ in range(args.repeats):  # interleaved, so the machine's load hits both alike
                local.append(in_process(model, x, args.seconds))
                remote.append(http_window(url, body, b, 1, args.seconds))
            best = sorted(remote, key=lambda r: r["images_per_s"])[len(remote) // 2]
            row = {
                "batch": b,
                "body_bytes": len(body),
                "client_encode_ms": encode_ms,
                "in_process_images_per_s": statistics.median(local),
                "http": best,
                "ratio": best["images_per_s"] / statistics.median(local),
            }
            results["batches"].append(row)
            print(
                f"batch {b:>4}: in-process {row['in_process_images_per_s']:>9.0f} img/s, "
                f"/infer {best['images_per_s']:>8.0f} img/s (ratio {row['ratio']:.3f}), "
                f"p50 {best['p50_ms']:.1f} ms, p99 {best['p99_ms']:.1f} ms, "
                f"body {len(body) / 1e6:.2f} MB, "
                f"client JSON encode {encode_ms:.1f} ms",
                flush=True,
            )
        body = json.dumps(infer_request(images[:1].numpy())).encode()
        book = Ledger(tmp / "ledger.sqlite")
        for n in clients:
            before = book.answered()
            r = http_window(url, body, 1, n, args.seconds)
            after = book.answered()
            r["ledger_queries"] = after[0] - before[0]
            r["ledger_matches"] = r["ledger_queries"] == r["answered"]
            results["concurrency"].append(r)
            print(
                f"{n:>2} clients, batch 1: {r['requests_per_s']:>7.1f} req/s, "
                f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, 5xx {r['server_errors']}, "
                f"transport errors {r['transport_errors']}, ledger {r['ledger_queries']} = "
                f"answered {r['answered']}: {r['ledger_matches']}",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
