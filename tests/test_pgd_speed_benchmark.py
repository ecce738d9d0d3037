"""benchmarks/pgd_speed.py compares like with like, with every option (device, arch, bf16,
channels_last): multirobust's PGD makes the bare loop's 40 forward and backward passes plus only
the contract's clean and result passes, and (in fp32) lands on the bare loop's very points.

On the CPU these only prove that the code paths work (bf16 autocast is slow on CPUs); the GPU
figures come from running the same script on a CUDA machine. Timings are printed, not tested.
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
        pytest.param(  # PreAct ResNet-18 on the CPU: ~25 s of the default suite's budget
            ["--arch", "preact_resnet18", "--n", "2", "--channels-last"],
            "channels_last",
            marks=pytest.mark.slow,
        ),
        (["--checkpoint", "zoo/standard.pt", "--n", "4", "--autocast", "bf16"], "bf16 autocast"),
    ],
)
def test_pgd_speed_runs_with_the_gpu_options_on_cpu(tmp_path, args, setting):
    result = _run(tmp_path, *args, "--repeats", "1", "--device", "cpu")
    assert setting in result["setting"] and result["device"] == "cpu"
    rows = {r["run"]: r for r in result["rows"]}
    assert list(rows) == [
        "bare loop",
        "multirobust pgd (all 40 steps)",
        "multirobust pgd (early stop)",
    ]
    bare, full, early = rows.values()
    passes = lambda r: (r["forward_passes_per_image"], r["backward_passes_per_image"])  # noqa: E731
    assert passes(bare) == (40, 40)
    # The contract adds exactly one clean pass and one pass at the result, no backward pass.
    assert passes(full) == (42, 40)
    assert early["backward_passes_per_image"] <= 40
    if setting != "bf16 autocast":  # bf16 rounds differently in the two loss reductions
        assert result["max_abs_difference_bare_vs_all_steps"] <= 1e-6
        assert full["robust_accuracy"] == bare["robust_accuracy"]
