"""Speed measurements run by hand (``python -m benchmarks.<name>``), not part of the test suite.

``pipelines`` is imported first: it filters the warnings Beam logs on import on a machine without
GCP clients, which every benchmark would otherwise print before it could quiet the libraries.
"""
import contextlib
import os
import tempfile

import pipelines  # noqa: F401


@contextlib.contextmanager
def scratch_dir(prefix: str):
    """A temporary directory that is also the temp root of this process and its children while the
    block runs, so that what libraries leave behind there (Beam's runner and worker directories,
    torch's kernel cache) is removed with it."""
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.environ["TMPDIR"], tempfile.tempdir = tmp, tmp
        try:
            yield tmp
        finally:
            tempfile.tempdir = saved_dir
            if saved_env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved_env
