"""benchmarks/pgd_speed.py runs end to end with the GPU options (device, arch, bf16, channels_last).

On the CPU these only prove that the code paths work (bf16 autocast is slow on CPUs); the GPU
figures come from running the same script on a CUDA machine.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path, *args):
    out = tmp_path / "speed.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, str(_ROOT / "benchmarks" / "pgd_speed.py"), *args, "--json", str(out)],
        check=True,
        env=env,
        cwd=_ROOT,
        capture_output=True,
        timeout=600,
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "args, setting",
    [
        (["--arch", "preact_resnet18", "--n", "2", "--channels-last"], "channels_last"),
        (["--checkpoint", "zoo/standard.pt", "--n", "4", "--autocast", "bf16"], "bf16 autocast"),
    ],
)
def test_pgd_speed_runs_with_the_gpu_options_on_cpu(tmp_path, args, setting):
    result = _run(tmp_path, *args, "--repeats", "1", "--device", "cpu")
    assert setting in result["setting"] and result["device"] == "cpu"
    names = [r["run"] for r in result["rows"]]
    assert names == ["bare loop", "multirobust pgd (all 40 steps)", "multirobust pgd (early stop)"]
    for row in result["rows"]:
        assert row["median_seconds"] > 0 and 0.0 <= row["robust_accuracy"] <= 1.0
