from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from tdm_r1.cli import app

runner = CliRunner()


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tdm_r1.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'transformers', 'diffusers', 'rapidocr', 'open_clip') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version_and_ls_data(shared_data) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "tdmbench" in result.output
    result = runner.invoke(app, ["ls", "data"])
    assert result.exit_code == 0, result.output
    assert "geneval" in result.output and "ok" in result.output


def test_ls_unknown_kind_is_a_clean_error() -> None:
    result = runner.invoke(app, ["ls", "gadgets"])
    assert result.exit_code == 2
    assert "choose rewards, models, benchmarks" in result.output


def test_reward_options_split_on_the_longest_registered_name() -> None:
    from tdm_r1.cli import parse_reward_options

    got = parse_reward_options(["hpsv2.1.model_path=/m", "ocr.workers=2", "hps.device=cpu"])
    assert got == {"hpsv2.1": {"model_path": "/m"}, "ocr": {"workers": 2}, "hps": {"device": "cpu"}}
