"""The GPU pass runs end to end with tiny settings on a CPU, so it is ready when a GPU is at hand."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_pass_measures_every_model_with_tiny_settings_on_a_cpu():
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_pass", "--tiny", "--device", "cpu"], cwd=REPO,
                         capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                                              "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = out.stdout.splitlines()
    for what in ("CTC tiny float32", "Whisper tiny.en", "Silero VAD", "voice encoder (float32)",
                 "voice encoder (bfloat16)", "DNSMOS",
                 "end-to-end build"):
        row = next((r for r in rows if r.startswith(what)), None)
        assert row is not None, (what, out.stdout)
        assert float(row.split()[-2].replace(",", "")) > 0, row
    assert "FAILED" not in out.stdout
