"""Reading and checking a build's options imports none of the heavy libraries, so --help, an option
error and the first refusals answer at once."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "apache_beam", "transformers", "datasketch", "onnxruntime", "webdataset", "pyarrow")

CHECK = """
import sys
from pipelines.build_corpus import main
code = main(sys.argv[1:])
print("CODE", code)
print("LOADED", sorted({m.split('.')[0] for m in sys.modules} & set(%r)))
""" % (HEAVY,)


def loaded_after(args, tmp_path):
    out = subprocess.run([sys.executable, "-c", CHECK, *args], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("CODE", "LOADED")))
    return int(lines["CODE"]), lines["LOADED"], out.stderr


def test_an_option_error_and_a_refusal_load_no_heavy_library(tmp_path):
    code, loaded, err = loaded_after(["--sources", "s.txt", "--output", "out", "--min_snr_db", "loud"], tmp_path)
    assert code == 2 and "--min_snr_db" in err and loaded == "[]", (loaded, err)
    code, loaded, err = loaded_after(["--sources", str(tmp_path / "missing.txt"), "--output", "out"], tmp_path)
    assert code == 2 and "sources file not found" in err and loaded == "[]", (loaded, err)
    assert not (tmp_path / "out").exists()


def test_help_loads_no_heavy_library(tmp_path):
    check = ("import sys\nfrom pipelines.build_corpus import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert "--sources" in out.stdout and "LOADED []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]
