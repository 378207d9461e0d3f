"""The ``speechmill`` console command: every subcommand reaches its entry point with its options."""
import os
import subprocess
import sys

import pytest

SPEECHMILL = os.path.join(os.path.dirname(sys.executable), "speechmill")


def speechmill(*args):
    return subprocess.run([SPEECHMILL, *args], capture_output=True, text=True, timeout=300)


def test_console_command_is_installed_and_lists_subcommands():
    r = speechmill("--help")
    assert r.returncode == 0, r.stderr
    for name in ("build", "compact", "report", "verify", "export", "train", "synthesize"):
        assert f"  {name} " in r.stdout


@pytest.mark.parametrize("args, prog", [
    (["build", "--help"], "pipelines.build_corpus"),
    (["compact", "--help"], "pipelines.compact"),
    (["report", "--help"], "pipelines.report"),
    (["verify", "--help"], "pipelines.verify"),
    (["export", "--help"], "pipelines.export_lhotse"),
    (["train", "clvp", "--help"], "pipelines.train_clvp"),
    (["synthesize", "--help"], "pipelines.synthesize"),
])
def test_subcommands_show_their_entry_points_help(args, prog):
    r = speechmill(*args)
    assert r.returncode == 0, r.stderr
    assert prog in r.stdout and "--" in r.stdout


def test_unknown_subcommand_and_bad_options_exit_2(tmp_path):
    r = speechmill("bulid")
    assert r.returncode == 2 and "unknown subcommand 'bulid'" in r.stderr
    r = speechmill("train", "nothing")
    assert r.returncode == 2 and "tortoise" in r.stderr
    r = speechmill("build", "--sources", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "out"),
                   "--min_clip_s", "-1")
    assert r.returncode == 2 and "--min_clip_s" in r.stderr
