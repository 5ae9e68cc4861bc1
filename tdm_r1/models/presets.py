"""Registered model presets (``tdmbench ls models``).

Imported by the model registry on first lookup: keep it free of torch / diffusers imports.
Numbers and their sources: each preset's ``sources`` field, from the Luo-Yihong/TDM README @ 81b019f
(released LoRAs, 4-step DPM-Solver sampling), Luo-Yihong/TDM-R1 (README: the Z-Image checkpoint;
``config/tdmr1_clean.py`` @ 397c77f and ``scripts/train_tdmr1_pub.py`` @ 1ee7d9f: the SD3.5-M LoRA and
sampler) and the Z-Image / Z-Image-Turbo model cards (Tongyi-MAI; report arXiv:2511.22699).
"""

from __future__ import annotations

from pathlib import Path

from tdm_r1.models.families import SD3_TEXT
from tdm_r1.models.preset import SD3_LORA_TARGETS, ModelPreset, register_preset
from tdm_r1.models.spec import SamplingSpec
from tdm_r1.weights import WeightFile, declare

# ------------------------------------------------------------------------------------ weight files
SD35_MEDIUM = WeightFile(
    key="sd3.5-medium.pipeline",
    hub_id="stabilityai/stable-diffusion-3.5-medium",
    filename=None,
    size="16 GB",
    env="TDMBENCH_SD35_MEDIUM_PATH",
    option="--model-path",
    description="Stable Diffusion 3.5 Medium diffusers pipeline (gated: accept the license on the Hub)",
)
Z_IMAGE = WeightFile(
    key="z-image.pipeline",
    hub_id="Tongyi-MAI/Z-Image",
    filename=None,
    size="21 GB",
    env="TDMBENCH_Z_IMAGE_PATH",
    option="--model-path",
    description="Z-Image (base) diffusers pipeline",
)
Z_IMAGE_TURBO = WeightFile(
    key="z-image-turbo.pipeline",
    hub_id="Tongyi-MAI/Z-Image-Turbo",
    filename=None,
    size="25 GB",
    env="TDMBENCH_Z_IMAGE_TURBO_PATH",
    option="--model-path",
    description="Z-Image-Turbo diffusers pipeline",
)
TDM_SD35_LORA = WeightFile(
    key="tdm-sd3.5-medium.lora",
    hub_id="Luo-Yihong/TDM_sd3-5_lora",
    filename="tdm_sd3-5_lora.ckpt",
    size="75 MB",
    env="TDMBENCH_TDM_SD35_LORA",
    option="--lora-path",
    description="TDM 4-step LoRA for SD3.5-Medium (EMA list, r=32, alpha=64)",
)
TDM_R1_Z_IMAGE_LORA = WeightFile(
    key="tdm-r1-z-image.lora",
    hub_id="Luo-Yihong/TDM-R1",
    filename="tdmr1_zimage_ema.ckpt",
    size="130 MB",
    env="TDMBENCH_TDM_R1_Z_IMAGE_LORA",
    option="--lora-path",
    description="TDM-R1 4-step LoRA for Z-Image-Turbo (EMA list, r=32, alpha=64)",
)
declare(SD35_MEDIUM, Z_IMAGE, Z_IMAGE_TURBO, TDM_SD35_LORA, TDM_R1_Z_IMAGE_LORA)

# ------------------------------------------------------------------------------------ SD3.5-Medium
# T5 length 128 (77 CLIP + 128 T5 = 205 tokens): what TDM-R1 (and Flow-GRPO) encode prompts with, and the
# SD3 family's own default (families.SD3_TEXT, the one source); diffusers' pipeline default is 256. Stated
# here too because it is part of these presets' identity (results already measured carry it).
_SD3_OPTIONS = {"max_sequence_length": SD3_TEXT.max_sequence_length}

register_preset(
    ModelPreset(
        name="sd3.5-medium",
        family="sd3",
        hub_id=SD35_MEDIUM.hub_id,
        model_file=SD35_MEDIUM,
        sampling=SamplingSpec(
            steps=40,
            guidance=4.5,
            shift=3.0,
            solver="euler",
            spacing="flowmatch",
            height=512,
            width=512,
        ),
        kind="base",
        options=_SD3_OPTIONS,
        sources="Flow-GRPO / TDM-R1 baseline: 40 steps, CFG 4.5, FlowMatch Euler shift 3; evaluated at 512 and 1024",
    )
)
register_preset(
    ModelPreset(
        name="tdm-sd3.5-medium-4step",
        family="sd3",
        hub_id=SD35_MEDIUM.hub_id,
        model_file=SD35_MEDIUM,
        sampling=SamplingSpec(
            steps=4,
            guidance=1.0,
            shift=3.0,
            solver="dpmsolver++",
            height=512,
            width=512,
        ),
        kind="distilled",
        lora=TDM_SD35_LORA,
        lora_format="tdm-ema",
        lora_rank=32,
        lora_alpha=64.0,
        lora_targets=SD3_LORA_TARGETS,
        options=_SD3_OPTIONS,
        sources="TDM LoRA (Luo-Yihong/TDM_sd3-5_lora); TDM-R1 samples it with DPM-Solver++, flow_shift 3, "
        "4 steps, guidance 1, 512px",
    )
)

# ------------------------------------------------------------------------------------------ Z-Image
register_preset(
    ModelPreset(
        name="z-image",
        family="z-image",
        hub_id=Z_IMAGE.hub_id,
        model_file=Z_IMAGE,
        sampling=SamplingSpec(
            steps=50,
            guidance=5.0,  # diffusers guidance_scale 4 (model card); tdmbench convention is 1 + that
            shift=6.0,  # the checkpoint's scheduler_config.json
            solver="euler",
            spacing="z-image",
            height=1024,
            width=1024,
        ),
        kind="base",
        sources="Z-Image model card: 50 steps, guidance_scale 4 (= 5 here), scheduler shift 6; "
        "sigmas of ZImagePipeline in diffusers >= 0.37",
    )
)
register_preset(
    ModelPreset(
        name="z-image-turbo",
        family="z-image",
        hub_id=Z_IMAGE_TURBO.hub_id,
        model_file=Z_IMAGE_TURBO,
        sampling=SamplingSpec(
            steps=9,
            guidance=1.0,  # diffusers guidance_scale 0
            shift=3.0,
            solver="euler",
            spacing="zero-terminal",
            height=1024,
            width=1024,
        ),
        kind="distilled",
        sources="Z-Image-Turbo model card: num_inference_steps=9 ('8 DiT forwards'), guidance_scale 0, shift 3",
    )
)
register_preset(
    ModelPreset(
        name="z-image-4step",
        family="z-image",
        hub_id=Z_IMAGE_TURBO.hub_id,
        model_file=Z_IMAGE_TURBO,
        sampling=SamplingSpec(
            steps=5,
            guidance=1.0,  # diffusers guidance_scale 0
            shift=3.0,
            solver="euler",
            spacing="zero-terminal",
            height=1024,
            width=1024,
        ),
        kind="rl",
        lora=TDM_R1_Z_IMAGE_LORA,
        lora_format="tdm-ema",
        lora_rank=32,
        lora_alpha=64.0,
        lora_targets=("to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"),
        sources="TDM-R1 README: Z-Image-Turbo + LoRA r=32/alpha=64, num_inference_steps=5 ('4 DiT forwards'), "
        "guidance_scale 0, 1024x1024",
    )
)

# ---------------------------------------------------------------------------------- toy world (lead)
# The toy world's models ship inside the package (tdm_r1/toyworld/weights, see its MODEL_CARD.md):
# a tiny SD3 pipeline (two CLIP text encoders on the real CLIP tokenizer, no T5: zeros as long as
# the CLIP tokenizer, 20 tokens) and LoRA folders for the few-step student and the RL runs.
TOY_WEIGHTS = Path(__file__).resolve().parent.parent / "toyworld" / "weights"
TOY_OPTIONS = {"max_sequence_length": 20}
TOY_BENCHMARKS = ("toy-geneval", "toy-ocr")

register_preset(
    ModelPreset(
        name="toy-teacher",
        family="sd3",
        hub_id=str(TOY_WEIGHTS / "toy-teacher"),
        sampling=SamplingSpec(steps=50, guidance=5.0, shift=1.0, height=64, width=64),
        kind="toy",
        dtype="float32",
        options=dict(TOY_OPTIONS),
        benchmarks=TOY_BENCHMARKS,
        sources="toy world teacher: 50 Euler steps x CFG 5 = 100 NFE (tdm_r1/toyworld/weights/MODEL_CARD.md)",
    )
)
TOY_4STEP = register_preset(
    ModelPreset(
        name="toy-4step",
        family="sd3",
        hub_id=str(TOY_WEIGHTS / "toy-teacher"),
        sampling=SamplingSpec(steps=4, guidance=1.0, shift=1.0, spacing="trailing", height=64, width=64),
        kind="distilled",
        lora=str(TOY_WEIGHTS / "toy-4step"),
        lora_format="peft",
        dtype="float32",
        options=dict(TOY_OPTIONS),
        baseline="toy-teacher",
        benchmarks=TOY_BENCHMARKS,
        sources="TDM distillation of toy-teacher (tdmbench distill), 4 Euler steps (trailing spacing), no CFG",
    )
)
# the RL runs: toy-4step with another LoRA
for _reward, _suffix in (("geneval", ""), ("ocr", ""), ("geneval", "-nosur"), ("ocr", "-nosur")):
    register_preset(
        TOY_4STEP.with_overrides(
            name=f"toy-4step-r1-{_reward}{_suffix}",
            kind="rl",
            lora=str(TOY_WEIGHTS / f"toy-4step-r1-{_reward}{_suffix}"),
            options=dict(TOY_OPTIONS),
            few_step_base="toy-4step",
            in_domain=(_reward,),
            sources=(
                f"TDM-R1 on toy-4step with the {_reward} reward (tdmbench train --reward {_reward})"
                if not _suffix
                else f"ablation of toy-4step-r1-{_reward}: the same run with the surrogate-reward term off "
                "(--set method.surrogate_term=false)"
            ),
        )
    )
# TDM-R1 from binary likes (issue 15): a simulated rater (likes-sim) likes an image when toy
# GenEval judges it correct, each answer flipped with probability `noise`; one label per image.
# The 25% run scales the surrogate's learning rate by the labels' reliability (1 - 2 noise)^2:
# its Adam optimiser takes steps of the same size whatever the labels' noise (docs/likes.md).
for _noise, _extra in (("00", ""), ("10", ""), ("25", ", surrogate lr x0.25 = (1 - 2 x 0.25)^2")):
    register_preset(
        TOY_4STEP.with_overrides(
            name=f"toy-4step-r1-likes-n{_noise}",
            kind="rl",
            lora=str(TOY_WEIGHTS / f"toy-4step-r1-likes-n{_noise}"),
            options=dict(TOY_OPTIONS),
            few_step_base="toy-4step",
            in_domain=("geneval",),  # the rater's likes are toy GenEval correctness
            sources=(
                f"TDM-R1 on toy-4step from 6,400 binary likes (100 epochs), likes-sim rater over toy GenEval "
                f"correct with {int(_noise)}% label noise{_extra} (tdmbench train --config toy-likes-sim)"
            ),
        )
    )
# <<< end of the toy-world presets
