"""Resident memory of an idle API process (it must not import torch; aim under 150 MB).

Starts `descent serve` on the embedded default, makes a few requests (submit, read, list, docs),
then reads VmRSS from /proc and checks that torch is not loaded (no torch shared objects mapped).

    python benchmarks/api_memory.py
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._services import ROOT, free_port, start, stop, wait_until  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        api = start(
            ["serve", "--port", str(port)], {"DESCENT_DATA_DIR": tmp}, Path(tmp) / "api.log"
        )
        try:
            http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            wait_until(lambda: http.get("/healthz").status_code == 200, what="API up")
            spec = {
                "model": {"name": "mlp"},
                "data": {"name": "digits"},
                "optimizer": {"name": "adam"},
            }
            for _ in range(20):
                job = http.post("/v1/jobs", json=spec).json()
                http.get(f"/v1/jobs/{job['id']}")
                http.get(f"/v1/jobs/{job['id']}/metrics")
            http.get("/v1/jobs")
            http.get("/openapi.json")
            time.sleep(1)
            memory = rss_mb(api.pid)
            maps = Path(f"/proc/{api.pid}/maps").read_text()
        finally:
            stop(api)
    report = {
        "benchmark": "api_memory",
        "idle_rss_mb": round(memory, 1),
        "torch_loaded": "libtorch" in maps,
        "bar_mb": 150,
    }
    print(json.dumps(report, indent=2))
    (ROOT / "benchmarks" / "results" / "api_memory.json").write_text(
        json.dumps(report, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
