"""On-disk kernel cache: written on first use, reused by the next process,
and kept in a writable place when the package directory is read-only."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import numba
import pytest

from fastce import _config

_EVALUATE = textwrap.dedent(
    """
    import logging, numba, numpy as np, fastce
    logging.basicConfig(level=logging.INFO, format="LOG %(name)s %(message)s")
    x = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]])
    m = fastce.evaluate(np.array([0, 1, 2]), logits=x, top_k=(1, 2))
    print("RESULT", m.to_json())
    print("CACHE_DIR", numba.config.CACHE_DIR)
    """
)


def _run(script, env, timeout=600):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, elapsed


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(extra)
    return env


def _cache_lines(text, kind):
    """numba's NUMBA_DEBUG_CACHE lines of one kind ("data saved", "data loaded") for the score kernel."""
    return [line for line in text.splitlines() if f"[cache] {kind}" in line and "score_tasks" in line]


def test_second_process_loads_kernels_from_disk(tmp_path):
    cache = tmp_path / "numba-cache"
    env = _clean_env(NUMBA_CACHE_DIR=str(cache), NUMBA_DEBUG_CACHE="1")
    first, t_first = _run(_EVALUATE, env)
    files = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert any(name.startswith("kernels.score_tasks") and name.endswith(".nbc") for name in files), files
    assert any(name.startswith("kernels.score_tasks") and name.endswith(".nbi") for name in files), files
    assert _cache_lines(first.stdout + first.stderr, "data saved"), "first run compiled nothing into the cache"
    # The first use says it compiles (fastce's logger), once per top-level kernel, and how long it took.
    log = [line for line in first.stderr.splitlines() if line.startswith("LOG fastce ")]
    assert ("LOG fastce compiling fastce kernel score_tasks_short (float64 2-D input, logits in float64 math), first use "
            "with this numba cache") in log, log
    assert any(line.startswith("LOG fastce compiled fastce kernel score_tasks_short in ") for line in log), log
    assert len([line for line in log if "compiling fastce kernel score_tasks_short" in line]) == 1, log

    second, t_second = _run(_EVALUATE, env)
    out = second.stdout + second.stderr
    assert _cache_lines(out, "data loaded"), out[-3000:]
    assert not _cache_lines(out, "data saved"), "second run recompiled the kernel"
    assert "compiling fastce kernel" not in second.stderr, "a cache hit was reported as a compile"
    result = [line for line in first.stdout.splitlines() if line.startswith("RESULT")]
    assert result == [line for line in second.stdout.splitlines() if line.startswith("RESULT")]
    # Loading is far cheaper than compiling; a relative check only.
    assert t_second < t_first


def test_read_only_package_falls_back_to_a_writable_dir(tmp_path):
    """End to end, without compiling: import fastce in a process where the package dir is not writable."""
    home = tmp_path / "home"
    home.mkdir()
    script = textwrap.dedent(
        """
        import importlib.util, os, tempfile
        package = importlib.util.find_spec("fastce").submodule_search_locations[0]
        real = tempfile.NamedTemporaryFile
        def refuse_package_dir(*args, dir=None, **kwargs):
            # simulate a read-only site-packages (the tests may run as root, where chmod is not enough)
            if dir is not None and os.path.abspath(dir).startswith(os.path.abspath(package)):
                raise PermissionError(13, "read-only file system", dir)
            return real(*args, dir=dir, **kwargs)
        tempfile.NamedTemporaryFile = refuse_package_dir
        import numba
        import fastce
        from fastce import _config, groups
        import numpy as np
        groups._size_of(np.zeros(3, np.int64))  # a cached kernel of fastce's
        print("NUMBA_CONFIG", repr(numba.config.CACHE_DIR))
        print("CACHE_DIR", _config.FALLBACK_CACHE_DIR)
        """
    )
    proc, _ = _run(script, _clean_env(HOME=str(home)))
    chosen = proc.stdout.split("CACHE_DIR", 1)[1].strip()
    assert chosen == os.path.join(str(home), ".cache", "fastce", "numba")
    assert any(name.startswith("groups._size_of") for _, _, names in os.walk(chosen) for name in names)
    assert "NUMBA_CONFIG ''" in proc.stdout  # the host's own numba functions cache where they did


@pytest.fixture
def isolated_cache_config(monkeypatch):
    """Run _configure_cache_dir with NUMBA_CACHE_DIR unset and fastce's and numba's settings restored afterwards."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "", raising=False)
    monkeypatch.setattr(_config, "FALLBACK_CACHE_DIR", _config.FALLBACK_CACHE_DIR)
    return monkeypatch


def _package_pycache():
    return os.path.join(os.path.dirname(os.path.abspath(_config.__file__)), "__pycache__")


def test_writable_package_dir_keeps_numba_default(isolated_cache_config):
    isolated_cache_config.setattr(_config, "_writable", lambda path: True)
    _config._configure_cache_dir()
    assert numba.config.CACHE_DIR == "" and _config.FALLBACK_CACHE_DIR is None


def test_read_only_package_dir_uses_user_cache(isolated_cache_config, tmp_path):
    isolated_cache_config.setenv("HOME", str(tmp_path))
    seen = []

    def writable(path):
        seen.append(path)
        return path != _package_pycache()

    isolated_cache_config.setattr(_config, "_writable", writable)
    _config._configure_cache_dir()
    assert seen[0] == _package_pycache()
    assert _config.FALLBACK_CACHE_DIR == os.path.join(str(tmp_path), ".cache", "fastce", "numba")
    assert numba.config.CACHE_DIR == ""  # fastce's kernels only (see _package_stamps)


def test_read_only_home_too_uses_temp_dir(isolated_cache_config, tmp_path):
    isolated_cache_config.setenv("HOME", str(tmp_path / "home"))
    isolated_cache_config.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    home_cache = os.path.join(str(tmp_path / "home"), ".cache", "fastce", "numba")
    isolated_cache_config.setattr(_config, "_writable", lambda path: path not in (_package_pycache(), home_cache))
    _config._configure_cache_dir()
    chosen = _config.FALLBACK_CACHE_DIR
    assert chosen.startswith(str(tmp_path / "tmp") + os.sep) and "fastce-numba" in chosen
    assert stat.S_IMODE(os.stat(chosen).st_mode) == 0o700 and numba.config.CACHE_DIR == ""


def test_a_temp_cache_dir_others_can_write_is_refused(isolated_cache_config, tmp_path):
    # Another local user who made the predictable directory first (mode 0777) would have had fastce's process
    # unpickle the index files they planted there.
    isolated_cache_config.setenv("HOME", str(tmp_path / "home"))
    isolated_cache_config.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    home_cache = os.path.join(str(tmp_path / "home"), ".cache", "fastce", "numba")
    real_writable = _config._writable
    isolated_cache_config.setattr(_config, "_writable",
                                  lambda path: path not in (_package_pycache(), home_cache) and real_writable(path))
    planted = tmp_path / "tmp" / f"fastce-numba-{os.getuid()}"
    planted.mkdir(parents=True)
    planted.chmod(0o777)

    def own_directory():  # refused, a directory of this process's own instead
        chosen = _config.FALLBACK_CACHE_DIR
        assert chosen != str(planted) and os.path.basename(chosen).startswith("fastce-numba-")
        assert stat.S_IMODE(os.stat(chosen).st_mode) == 0o700
        shutil.rmtree(chosen)

    _config._configure_cache_dir()
    own_directory()
    planted.rmdir()
    (tmp_path / "elsewhere").mkdir()
    planted.symlink_to(tmp_path / "elsewhere")  # a symlink to a directory is refused too
    _config._configure_cache_dir()
    own_directory()
    planted.unlink()
    _config._configure_cache_dir()
    assert _config.FALLBACK_CACHE_DIR == str(planted)


def test_explicit_numba_cache_dir_is_respected(isolated_cache_config, tmp_path):
    isolated_cache_config.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    _config._configure_cache_dir()
    assert numba.config.CACHE_DIR == "" and _config.FALLBACK_CACHE_DIR is None


def test_an_unwritable_numba_cache_dir_falls_back_for_fastce(isolated_cache_config, tmp_path):
    # import fastce failed ("no locator available") with NUMBA_CACHE_DIR, the package dir and HOME unwritable.
    isolated_cache_config.setenv("NUMBA_CACHE_DIR", str(tmp_path / "unwritable"))
    isolated_cache_config.setenv("HOME", str(tmp_path / "home"))
    real_writable = _config._writable
    isolated_cache_config.setattr(_config, "_writable",
                                  lambda path: path != str(tmp_path / "unwritable") and real_writable(path))
    _config._configure_cache_dir()
    assert _config.FALLBACK_CACHE_DIR == os.path.join(str(tmp_path / "home"), ".cache", "fastce", "numba")


def test_writable_probe(tmp_path):
    assert _config._writable(str(tmp_path / "new" / "dir"))
    target = tmp_path / "file"
    target.write_text("not a directory")
    assert not _config._writable(str(target))
    assert not _config._writable(str(target / "below"))
    assert not list(tmp_path.glob("new/dir/.fastce-probe-*"))  # the probe cleans up


def test_kernel_sources_lists_every_module_numba_compiles():
    decorated = re.compile(r"^\s*@(kernel|kernel_step|njit|overload|intrinsic|register_jitable)\b", re.MULTILINE)
    found = {
        name[:-3] for name in os.listdir(_config.PACKAGE_DIR)
        if name.endswith(".py") and decorated.search(pathlib.Path(_config.PACKAGE_DIR, name).read_text())
    }
    assert found | {"_config"} == set(_config.KERNEL_SOURCES)  # _config: the globals kernels read


def test_fastce_functions_carry_the_kernel_sources_stamp_and_others_do_not(tmp_path):
    from fastce import compare_kernels, groups

    for dispatcher in (groups._size_of, compare_kernels._compare_tasks_short):
        assert dispatcher._cache._cache_file._source_stamp[1] == _config.kernel_sources_stamp()
    module = tmp_path / "user_module.py"
    module.write_text("import numba\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import user_module
    finally:
        sys.path.remove(str(tmp_path))
    assert type(user_module.f._cache._impl.locator).__name__ != "PackageStampLocator"


def test_an_edit_of_another_kernel_module_recompiles(tmp_path):
    # numba keys a cached function on its own file: compare_kernels' cached kernels, which link kernels.py's steps,
    # kept the old steps after an edit of kernels.py (a stale result beside evaluate's new one).
    package = tmp_path / "src" / "fastce"
    shutil.copytree(_config.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    env = _clean_env(NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_DEBUG_CACHE="1", PYTHONPATH=str(tmp_path / "src"))
    script = "import numpy as np\nfrom fastce import groups\nprint('SIZE', groups._size_of(np.zeros(3, np.int64)))"

    def cache_events():
        proc, _ = _run(script, env)
        assert "SIZE 3" in proc.stdout
        out = proc.stdout + proc.stderr
        return [kind for kind in ("data saved", "data loaded")
                for line in out.splitlines() if f"[cache] {kind}" in line and "_size_of" in line]

    assert cache_events() == ["data saved"]
    assert cache_events() == ["data loaded"]
    with open(package / "kernels.py", "a") as source:
        source.write("\n# an edit\n")
    assert cache_events() == ["data saved"]
