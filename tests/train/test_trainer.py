"""The TDM-R1 trainer on a tiny SD3 pipeline: what moves, what must not, resume, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tdm_r1.errors import ConfigError, MissingWeightsError
from tdm_r1.testing import trainkit

TESTS = Path(__file__).resolve().parent


def _snapshot(trainer) -> dict[str, list[torch.Tensor]]:
    return {
        r: [p.detach().clone() for p in trainer.adapter.role_parameters(r)] for r in trainer.adapter.roles
    }


def _moved(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return sum(float((x - y).abs().sum()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-checkpointing"])
def test_one_epoch_moves_the_three_roles_and_nothing_else(
    registered, tmp_path: Path, checkpointing: bool
) -> None:
    from tdm_r1.train.trainer import Trainer

    t = Trainer(trainkit.small_config(tmp_path, model={"gradient_checkpointing": checkpointing}))
    t.setup()
    assert set(t.adapter.roles) == {"generator", "fake", "surrogate", "surrogate_old"}
    base = {n: p.detach().clone() for n, p in t.adapter.transformer.named_parameters() if "lora_" not in n}
    before = _snapshot(t)
    assert _moved(before["surrogate"], before["surrogate_old"]) == 0  # the old copy starts equal
    metrics = t.train_epoch()
    after = _snapshot(t)
    for role in ("generator", "fake", "surrogate"):
        assert _moved(after[role], before[role]) > 0, role
    for n, p in t.adapter.transformer.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), f"frozen base weight {n} changed"
    # the fast EMA copy follows the surrogate but lags behind it
    assert (
        0
        < _moved(after["surrogate_old"], before["surrogate_old"])
        < _moved(after["surrogate"], before["surrogate"])
    )
    assert _moved(t.ema.shadow, after["generator"]) > 0  # the EMA generator is a separate average
    for key in ("reward_mean", "zero_std_groups", "gen_kl", "gen_rl", "fake_loss", "surrogate_loss"):
        assert key in metrics and metrics[key] == metrics[key], key


def test_distillation_is_the_same_trainer_without_reward(registered, tmp_path: Path) -> None:
    from tdm_r1.train.trainer import Trainer

    t = Trainer(
        trainkit.small_config(tmp_path, rewards={}, rollout={"group_size": 1, "prompts_per_epoch": 8})
    )
    t.setup()
    assert t.reward is None and set(t.adapter.roles) == {"generator", "fake"}
    before = _snapshot(t)
    metrics = t.train_epoch()
    after = _snapshot(t)
    assert _moved(after["generator"], before["generator"]) > 0 and _moved(after["fake"], before["fake"]) > 0
    assert metrics["gen_rl"] == 0.0 and "surrogate_loss" not in metrics


def test_fit_writes_a_registered_model_curves_and_metrics(registered, tmp_path: Path) -> None:
    from tdm_r1.models.preset import load_preset_file, resolve_model
    from tdm_r1.registry import MODELS
    from tdm_r1.train.trainer import Trainer

    cfg = trainkit.small_config(
        tmp_path, register_as="tiny-trained", max_epochs=2, eval_benchmarks=["toy-ocr"], eval_limit=2
    )
    run = Trainer(cfg).fit()
    # the scheduled evaluation went through the eval runner into the run folder
    csv = run / "eval" / "final" / "results" / "toy-ocr" / "partial" / "tiny-trained.limit2.csv"
    assert csv.is_file() and "ocr" in csv.read_text()
    preset = load_preset_file(run / "final" / "preset.json")
    assert (
        preset.kind == "rl"
        and preset.few_step_base == "tiny-trainer"
        and preset.in_domain == ("test-brightness",)
    )
    assert "tiny-trained" not in MODELS  # a run's model is found by its folder, not registered
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert (run / "curves.png").stat().st_size > 1000 and (run / "config.yaml").is_file()
    images = (
        resolve_model(run / "final").load(device="cpu").generate(["a photo of a circle"], [0], progress=False)
    )
    assert images.shape == (1, 3, 32, 32)


def test_bad_configurations_fail_before_any_compute(registered, tmp_path: Path) -> None:
    from tdm_r1.train.config import check_world, load_train_config
    from tdm_r1.train.trainer import Trainer

    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        trainkit.small_config(tmp_path, rollout={"group_size": 1})
    with pytest.raises(ConfigError, match="unknown config key 'method.beta_dop'.*beta_dpo"):
        load_train_config("toy-ocr", overrides=["method.beta_dop=3"])
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        check_world(trainkit.small_config(tmp_path), 3)
    # a reward whose weights are missing fails at setup, before the model is loaded
    cfg = trainkit.small_config(tmp_path, rewards={"pickscore": 1.0})
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError):
        Trainer(cfg).setup()
    assert time.perf_counter() - t0 < 10


RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from tdm_r1.testing import trainkit
trainkit.register(Path({folder!r}))
from tdm_r1.train.trainer import Trainer
cfg = trainkit.small_config(Path({tmp!r}), max_epochs={epochs}, output_dir={out!r})
Trainer(cfg).fit()
"""


def _run(tmp: Path, folder: Path, out: Path, epochs: int, **popen) -> subprocess.Popen:
    code = RUNNER.format(tests=str(TESTS), folder=str(folder), tmp=str(tmp), epochs=epochs, out=str(out))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code], env=env, **popen)


def test_sigkill_then_resume_continues_as_if_uninterrupted(tiny_folder: Path, tmp_path: Path) -> None:
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert _run(tmp_path, tiny_folder, ref, 3).wait(timeout=300) == 0
    proc = _run(tmp_path, tiny_folder, killed, 3)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step-00000002" / "COMPLETE").is_file():
        assert time.time() < deadline and proc.poll() is None, "no checkpoint before the deadline"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _run(tmp_path, tiny_folder, killed, 3).wait(timeout=300) == 0

    def metrics(run: Path) -> list[dict]:
        return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = metrics(ref), metrics(killed)
    # wall-clock and memory are measurements of the machine, not of the algorithm
    keep = lambda m: {k: v for k, v in m.items() if not k.startswith(("time_", "peak_mem"))}  # noqa: E731
    assert [keep(m) for m in a] == [keep(m) for m in b[-len(a) :]]
    from safetensors.torch import load_file

    wa = load_file(ref / "final" / "lora" / "adapter_model.safetensors")
    wb = load_file(killed / "final" / "lora" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


TWO_PROC = """
import os, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from tdm_r1.testing import trainkit
trainkit.register(Path({folder!r}))
from tdm_r1.train.trainer import Trainer
cfg = trainkit.small_config(Path({tmp!r}), max_epochs=2, output_dir={out!r})
Trainer(cfg).fit()
"""


def test_two_cpu_processes_match_one_with_the_same_global_batch(tiny_folder: Path, tmp_path: Path) -> None:
    """gloo, 2 processes x micro-batch 2 == 1 process x micro-batch 4: same rewards, losses and LoRA."""
    from safetensors.torch import load_file

    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        script = tmp_path / f"run{nproc}.py"
        script.write_text(
            TWO_PROC.format(tests=str(TESTS), folder=str(tiny_folder), tmp=str(tmp_path), out=str(out))
        )
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            str(script),
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[nproc] = out
    m1 = [json.loads(x) for x in (runs[1] / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (runs[2] / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(m1, m2, strict=True):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], rel=1e-5)
        for key in ("gen_kl", "gen_cfg", "gen_rl", "surrogate_group_weight"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-7), key
    w1 = load_file(runs[1] / "final" / "lora" / "adapter_model.safetensors")
    w2 = load_file(runs[2] / "final" / "lora" / "adapter_model.safetensors")
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-3, atol=1e-6), k
