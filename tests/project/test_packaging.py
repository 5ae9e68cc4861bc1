"""The wheel holds the whole package, and a non-editable install runs the CLI from anywhere.

A hand-written package list once left ``tdm_r1.cli`` (the entry point), ``tdm_r1.apps.arena`` and
``tdm_r1.train.methods`` out of the wheel. The build is now discovered (setup.py); this test
builds the wheel from the tracked files (and new ones git does not ignore), checks that every such file of the package folders is
in it (Python or data: presets, toy weights, templates), installs it into a fresh virtual
environment whose dependencies come from this one, and runs ``tdmbench`` from a folder outside
the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Source folder -> its import path in the wheel (rewards/ and benchmarks/ live under tdm_r1).
FOLDERS = {"tdm_r1": "tdm_r1", "rewards": "tdm_r1/rewards", "benchmarks": "tdm_r1/benchmarks"}
#: Tracked files of those folders that are developer tools, not part of the package.
NOT_SHIPPED = ("benchmarks/perf/",)


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout (the wheel is built from the tracked files)")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return [f for f in out.split("\0") if f]


def _expected_wheel_paths(tracked: list[str]) -> set[str]:
    out = set()
    for f in tracked:
        top, _, rest = f.partition("/")
        if top in FOLDERS and rest and not f.startswith(NOT_SHIPPED):
            out.add(f"{FOLDERS[top]}/{rest}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built without isolation from a copy of the tracked files (nothing is written
    into the checkout)."""
    tracked = _tracked()
    src = tmp_path_factory.mktemp("src")
    for f in tracked:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (whl,) = dist.glob("tdmbench-*.whl")
    return whl


def test_the_wheel_holds_every_tracked_file_of_the_package(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _expected_wheel_paths(_tracked())
    assert {
        "tdm_r1/cli/__init__.py",
        "tdm_r1/apps/arena/__init__.py",
        "tdm_r1/train/methods/__init__.py",
    } <= expected
    missing = sorted(expected - names)
    assert not missing, f"{len(missing)} tracked file(s) not in the wheel, e.g. {missing[:5]}"
    # rewards / benchmarks are unrelated projects on the package index: never top-level names
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"tdm_r1", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}


def test_a_fresh_non_editable_install_runs_the_cli_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies come from this environment (its folder is added as a plain path: its own
    # .pth files, among them the editable install's finder, are not run, so only the wheel's tdm_r1 exists)
    (Path(purelib) / "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "TDMBENCH_CACHE": str(tmp_path / "cache"),
        "TDMBENCH_RESULTS": str(elsewhere / "results"),
        "HF_HUB_OFFLINE": "1",
    }
    tdmbench = str(venv / "bin" / "tdmbench")

    def run(*args: str) -> str:
        res = subprocess.run(
            [tdmbench, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=240
        )
        assert res.returncode == 0, f"tdmbench {' '.join(args)}: {res.stdout[-2000:]}{res.stderr[-2000:]}"
        return res.stdout

    where = subprocess.run(
        [str(py), "-c", "import tdm_r1, tdm_r1.rewards; print(tdm_r1.__file__); print(tdm_r1.rewards.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv) for p in where), where
    assert "train" in run("--help") and "eval" in run("--help")
    models = run("ls", "models")
    assert "toy-4step" in models and "z-image-4step" in models
    out = run("eval", "--model", "toy-4step", "--benchmark", "toy-ocr", "--limit", "1")
    assert "8 images generated" in out, out
    (csv,) = (elsewhere / "results" / "toy-ocr" / "partial").glob("toy-4step.limit1.csv")
    assert "ocr" in csv.read_text()
