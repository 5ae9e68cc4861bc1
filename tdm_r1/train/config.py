"""Configuration of the TDM-R1 trainer (and of TDM distillation: the same trainer, reward off).

Layers: dataclass defaults < ``--config`` YAML (a file, or a shipped recipe ``recipes/NAME.yaml``) <
``--set a.b=c`` < explicit CLI flags. Unknown keys are errors. Values follow the public TDM-R1 recipe
(Luo-Yihong/TDM-R1 ``config/tdmr1_clean.py`` @ 397c77f and its launch scripts) unless a field says
otherwise; the toy presets scale them down.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdm_r1.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


@dataclass
class ModelConfig:
    #: Preset of the generator's starting point (its LoRA, if any, becomes role "generator").
    name: str = "toy-4step"
    #: Teacher / reference preset (its pipeline must be the model's base); None = the model's own base.
    teacher: str | None = None
    #: Sampling steps K of the generator (None = the preset's).
    steps: int | None = None
    #: Euler sigma spacing of the generator's schedule (None = the preset's; "trailing" makes every
    #: one of K steps do work, see ``tdm_r1.models.sampling``).
    spacing: str | None = None
    device: str | None = None
    #: "bfloat16" / "float16" / "float32" (None = the preset's on accelerators, float32 on the CPU).
    dtype: str | None = None
    lora_rank: int = 32
    lora_alpha: float = 64.0
    #: LoRA target modules of the new roles (None = the family's attention projections).
    lora_targets: list[str] | None = None
    #: The starting LoRA's weight (``ModelPreset.lora_scale``; None = the preset's); folded into its weights.
    lora_scale: float | None = None
    #: Text length (T5 tokens on SD3) the recipe was tuned with; the model and teacher presets must
    #: encode with it, checked before anything loads (None = no check). TDM-R1's SD3.5 recipes: 128.
    max_sequence_length: int | None = None
    #: Initialise a missing generator role like this ("zeros" = start from the teacher).
    generator_init: str = "zeros"
    gradient_checkpointing: bool = False
    offload_text_encoders: bool = True
    height: int | None = None
    width: int | None = None


@dataclass
class DataConfig:
    #: "toy" (the toy grammar) or "file" (a .txt / .jsonl prompts file with metadata).
    source: str = "toy"
    #: Toy task mix: task -> weight (see ``tdm_r1.toyworld.grammar.TASKS``).
    toy_tasks: dict[str, float] = field(default_factory=lambda: {"text": 1.0})
    path: str | None = None
    #: Toy split: "train" (the teacher's prompts), "rl" (train minus the RL-held-out prompts of
    #: ``tdm_r1.toyworld.holdout``; the toy RL presets) or "test".
    split: str = "train"


@dataclass
class RolloutConfig:
    #: Prompts per epoch (groups) and images per prompt (group size G).
    prompts_per_epoch: int = 48
    group_size: int = 24
    #: Images per generation call per process.
    batch_size: int = 16
    #: Reward scoring overlaps the next rollout chunk (thread pool).
    async_rewards: bool = True


@dataclass(eq=False)
class MethodConfig:
    """The ``method:`` section: the method's name, TDM-R1's options and the options shared by all
    methods, and one sub-section per method that brings its own options (``method.flow_grpo``,
    ``method.dgpo``, a plug-in's): the options dataclass its registry entry names.

    A config records the sections of every method shipped with tdmbench (so a config's identity does
    not depend on which plug-ins a process loaded) and that of its own method (see
    :func:`method_sections`); ``cfg.method.<section>`` reads one.
    """

    #: Training method (``tdmbench ls methods``; ``tdm_r1.registry.METHODS``); "tdm-r1" without
    #: rewards is "distill". The fields below up to ``distill_cfg_weight`` are TDM-R1's;
    #: ``adv_std``, ``adv_clip``, ``micro_batch``, ``shift`` and ``min_step`` are shared by all methods.
    name: str = "tdm-r1"
    #: Boundaries drawn per micro-batch (TDM-R1's num_train_timesteps).
    num_train_timesteps: int = 2
    #: Global micro-batch size (split evenly over processes).
    micro_batch: int = 96
    #: Teacher CFG scale of the normaliser's guided x0 (real_guidance_scale).
    teacher_cfg: float = 4.5
    #: Scale of the "CFG as reward" direction (3.5 in TDM-R1's code).
    cfg_reward_scale: float = 3.5
    tdm_weight: float = 0.3
    #: Boundaries j < trunc_steps get the surrogate-reward term.
    trunc_steps: int = 4
    #: Ablation switch: false drops the surrogate-reward term from the generator loss (everything
    #: else, including the surrogate's own training and the loss weights, is unchanged).
    surrogate_term: bool = True
    #: Surrogate CFG when it supplies the reward direction.
    rl_cfg: float = 4.5
    beta_dpo: float = 10.0
    clip_range: float = 1e-3
    reg_threshold: float = 0.05
    #: L2 anchor of the surrogate to the reference (train.beta).
    anchor_beta: float = 1e-3
    use_tweight: bool = True
    t_min_dgpo: float = 300.0
    t_min_dgpo_reward: float = 300.0
    #: Timesteps kept between a boundary and a noisy query.
    margin: float = 20.0
    #: Steps of the schedule shorter than this (in sigma) are never trained on: a zero-length
    #: step (Z-Image's zero-terminal schedule) or a near-zero one (sigma 0.001 -> 0) does no work.
    min_step: float = 0.005
    fake_anchor: float = 0.02
    #: Advantage std: "global" (TDM-R1 / Flow-GRPO) or "group".
    adv_std: str = "global"
    adv_clip: float = 5.0
    #: Surrogate reference: "frozen" (the base; the public code) or "ema" (the paper's dynamic EMA).
    reference: str = "frozen"
    reference_ema_decay: float = 0.99
    old_decay_min: float = 0.001
    old_decay_max: float = 0.3
    #: Flow shift used to draw noise levels in un-shifted time (None = the model's shift).
    shift: float | None = None
    #: Generator-loss weights without reward (TDM distillation): reverse KL and CFG reward.
    distill_kl_weight: float = 1.0
    distill_cfg_weight: float = 1.0
    #: TDM-R1 instruments every N epochs (0 = off; they change no training number):
    #: ``tdm_r1.train.diagnostics``.
    diagnostics_every: int = 0
    #: Noise queries averaged per sample in the surrogate-ranking instrument (``sur_*_q``).
    diagnostics_queries: int = 4

    @classmethod
    def config_sections(cls, data: Any) -> dict[str, type]:
        """The options sections of a ``method:`` mapping (``tdm_r1.config`` calls this)."""
        return method_sections(str(data.get("name", "tdm-r1")) if isinstance(data, dict) else "tdm-r1")

    def __post_init__(self) -> None:
        # the defaults; ``tdm_r1.config.from_dict`` replaces them with the parsed sections
        self.sections: dict[str, Any] = {n: tp() for n, tp in method_sections(self.name).items()}

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"method config has no option or section {name!r}")

    def __eq__(self, other: object) -> bool:
        from tdm_r1.config import to_dict

        return isinstance(other, MethodConfig) and to_dict(self) == to_dict(other)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    #: Generator lr = lr * generator_lr_scale (lr/4 in TDM-R1).
    generator_lr_scale: float = 0.25
    surrogate_lr_scale: float = 1.0
    fake_lr_scale: float = 1.0
    generator_betas: tuple[float, float] = (0.0, 0.999)
    fake_betas: tuple[float, float] = (0.0, 0.999)
    surrogate_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    #: Micro-steps per optimiser update; 0 = all micro-steps of an epoch (one update per epoch,
    #: the public recipe: 1152 samples per update).
    grad_accum: int = 0
    #: Generator EMA decay (per generator update).
    ema_decay: float = 0.9
    #: EMA warm-up: effective decay min(decay, (1 + n) / (10 + n)) after n updates (the public
    #: EMA wrapper's), so a short run's EMA does not lag behind its start.
    ema_warmup: bool = True


@dataclass
class TrainConfig:
    #: Run name (the run folder is <runs>/<name>).
    name: str = "tdm-r1"
    seed: int = 42
    #: Run folder (default: $TDMBENCH_RUNS/<name>).
    output_dir: str | None = None
    #: Rewards and weights; empty = TDM distillation (no reward, no surrogate).
    rewards: dict[str, float] = field(default_factory=dict)
    reward_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: The run's length (work, not time): results depend on it, never on the machine's speed.
    max_epochs: int = 10000
    #: Safety cap in minutes (0 = none): the run stops after the epoch that crosses it and says so
    #: (``stopped_by`` in ``<run>/run.json``); a run cut short by it is not a reproducible result.
    max_minutes: float = 0.0
    #: Epochs between checkpoints (0 = only at the end of the run).
    checkpoint_every: int = 10
    #: Evaluate the EMA generator every N epochs (0 = only at the end) on these benchmarks.
    eval_every: int = 0
    eval_benchmarks: list[str] = field(default_factory=list)
    #: Export the EMA generator after these epochs to ``<run>/exports/epoch-<N>`` (for a budget
    #: curve evaluated later, e.g. by the arena); the final one is always ``<run>/final``.
    export_epochs: list[int] = field(default_factory=list)
    eval_limit: int | None = None
    eval_batch_size: int = 32
    #: Register the final EMA generator under this preset name (run folder keeps preset.json).
    register_as: str | None = None
    #: "tensorboard", "wandb" (when installed) or "none"; metrics.jsonl is always written.
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self) -> None:
        for key in ("prompts_per_epoch", "group_size", "batch_size"):
            if getattr(self.rollout, key) < 1:
                raise ConfigError(f"rollout.{key} must be >= 1, got {getattr(self.rollout, key)}")
        if self.max_epochs < 1:
            raise ConfigError(
                f"max_epochs must be >= 1, got {self.max_epochs} (0 epochs would register an untrained model)"
            )
        if self.max_minutes < 0:
            raise ConfigError(f"max_minutes must be >= 0 (0 = no limit), got {self.max_minutes}")
        if any(not 1 <= e <= self.max_epochs for e in self.export_epochs):
            raise ConfigError(
                f"export_epochs must lie in 1..max_epochs={self.max_epochs}, got {self.export_epochs}"
            )
        if self.rewards and not any(w != 0 for w in self.rewards.values()):
            raise ConfigError(
                f"every reward weight is 0 ({self.rewards}): training would see a constant reward; "
                "give a reward a nonzero weight"
            )
        if self.rewards and self.rollout.group_size < 2:
            raise ConfigError(
                "rollout.group_size must be >= 2 with a reward: advantages compare the images of one prompt "
                f"(got {self.rollout.group_size})"
            )
        if self.method.reference not in ("frozen", "ema"):
            raise ConfigError(f"method.reference must be 'frozen' or 'ema', got {self.method.reference!r}")
        if self.method.adv_std not in ("global", "group"):
            raise ConfigError(f"method.adv_std must be 'global' or 'group', got {self.method.adv_std!r}")
        if self.data.source not in ("toy", "file"):
            raise ConfigError(f"data.source must be 'toy' or 'file', got {self.data.source!r}")
        if self.data.source == "file" and not self.data.path:
            raise ConfigError("data.source=file needs data.path (a .txt or .jsonl prompts file)")
        for w in self.rewards.values():
            if w != w:  # NaN
                raise ConfigError("reward weights must be numbers")
        if self.method.num_train_timesteps < 1 or self.method.micro_batch < 1:
            raise ConfigError("method.num_train_timesteps and method.micro_batch must be >= 1")
        if self.method.diagnostics_every < 0 or self.method.diagnostics_queries < 1:
            raise ConfigError(
                "method.diagnostics_every must be >= 0 (0 = off), method.diagnostics_queries >= 1"
            )
        if self.optim.grad_accum < 0:
            raise ConfigError("optim.grad_accum must be >= 0 (0 = one update per epoch)")
        if self.checkpoint_every < 0:
            raise ConfigError(
                f"checkpoint_every must be >= 0 epochs (0 = only at the end), got {self.checkpoint_every}"
            )
        check_method_name(self)

    @property
    def distill(self) -> bool:
        """A config without rewards: TDM distillation (the surrogate and the reward are off)."""
        return not self.rewards

    @property
    def method_name(self) -> str:
        """The registered method this config trains: a method's ``without_reward`` entry when the
        config has no reward ("tdm-r1" without rewards is "distill")."""
        from tdm_r1.registry import METHODS

        name = self.method.name
        if not self.rewards and name in METHODS:
            return METHODS.meta(name).get("without_reward") or name
        return name

    @property
    def samples_per_epoch(self) -> int:
        return self.rollout.prompts_per_epoch * self.rollout.group_size

    @property
    def micro_per_block(self) -> int:
        """Consecutive micro-batches that share one group (1 when a micro-batch holds whole groups)."""
        g, mb = self.rollout.group_size, self.method.micro_batch
        return g // mb if g > mb else 1

    def run_dir(self) -> Path:
        from tdm_r1.paths import runs_dir

        return Path(self.output_dir) if self.output_dir else runs_dir() / self.name


def method_sections(selected: str) -> dict[str, type]:
    """Options sections (name -> dataclass) of a ``method:`` section that selects ``selected``: those
    of the built-in methods, always, and the selected method's (a plug-in's, registered with
    ``options=`` and ``section=``). Imports the options classes only: no torch."""
    from tdm_r1.registry import METHODS, load_target

    chosen = METHODS.canonical(selected) if selected in METHODS else None
    out: dict[str, type] = {}
    for name in METHODS.names_in_order():
        meta = METHODS.meta(name)
        if meta.get("section") and (meta.get("builtin") or name == chosen):
            opts = meta["options"]
            out[meta["section"]] = (
                load_target(opts, f"options of method {name!r}") if isinstance(opts, str) else opts
            )
    return out


def check_method_name(cfg: TrainConfig) -> None:
    """A reward method without a reward, or a reward-free method with one, fails here (before any
    model); whether a method takes a reward is its registry entry's ``reward``."""
    from tdm_r1.registry import METHODS

    name = cfg.method.name
    if name not in METHODS:
        return  # the registry's did-you-mean error comes with the first lookup (dry run, trainer)
    meta = METHODS.meta(name)
    if not meta.get("reward", True) and cfg.rewards:
        reward_methods = [n for n in METHODS.names_in_order() if METHODS.meta(n).get("reward", True)]
        raise ConfigError(
            f"method.name={name} trains without a reward but rewards={cfg.rewards}: drop the rewards "
            f"(rewards: {{}}) or choose a reward method ({', '.join(reward_methods)})"
        )
    if meta.get("reward", True) and not meta.get("without_reward") and not cfg.rewards:
        raise ConfigError(
            f"method.name={name} is an RL method and needs a reward, but rewards is empty: "
            "give --reward NAME (or rewards: {NAME: 1.0}); distillation is method.name=distill"
        )


def trainable_steps(sigmas: Any, min_step: float) -> list[int]:
    """Indices j of the steps sigma_j -> sigma_{j+1} long enough to train on (>= ``min_step``)."""
    vals = [float(x) for x in sigmas]
    return [j for j in range(len(vals) - 1) if vals[j] - vals[j + 1] >= min_step]


def check_world(cfg: TrainConfig, world_size: int) -> None:
    """Batch shapes that must divide evenly over ``world_size`` processes (checked before compute)."""
    n = cfg.samples_per_epoch
    mb = cfg.method.micro_batch
    g = cfg.rollout.group_size
    if n % mb:
        raise ConfigError(
            f"prompts_per_epoch x group_size = {n} samples per epoch is not a multiple of method.micro_batch={mb}"
        )
    if mb % g and g % mb:
        raise ConfigError(
            f"method.micro_batch={mb} and rollout.group_size={g}: a micro-batch must hold whole groups "
            "(micro_batch a multiple of group_size) or a group must fill whole micro-batches (group_size a "
            "multiple of micro_batch); the surrogate compares the members of a group. Change method.micro_batch."
        )
    mpb = cfg.micro_per_block
    if mpb > 1 and cfg.optim.grad_accum and cfg.optim.grad_accum % mpb:
        raise ConfigError(
            f"a group of {g} spans {mpb} micro-batches of {mb}, but optim.grad_accum={cfg.optim.grad_accum} "
            f"would update the surrogate inside a group: set optim.grad_accum to a multiple of {mpb} (or 0)"
        )
    if mb % world_size:
        raise ConfigError(
            f"method.micro_batch={mb} is not divisible by the {world_size} processes: every process must get "
            "the same number of samples (no padding, no duplicates). Change micro_batch or the process count."
        )


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file on disk, or a shipped training recipe: ``recipes/NAME.yaml`` / ``NAME``.

    The old spelling ``recipes/NAME.yaml`` (before recipes and model presets had separate names)
    still resolves, with a deprecation line on stderr.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    name = p.name if p.name.endswith((".yaml", ".yml")) else f"{p.name}.yaml"
    shipped = RECIPES_DIR / name
    if shipped.is_file():
        if p.parent.name == "presets":
            import sys

            print(
                f"note: {path} is now recipes/{name} (training configs are 'recipes'; 'presets' are "
                "models); the old spelling will stop working in a later release",
                file=sys.stderr,
            )
        return shipped
    available = sorted(q.stem for q in RECIPES_DIR.glob("*.yaml"))
    import difflib

    close = difflib.get_close_matches(name.removesuffix(".yaml"), available, n=2)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"config {str(path)!r} is neither a file nor a shipped recipe.{hint} Recipes: {', '.join(available)}"
    )


def load_recipe_tree(config: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config tree of a YAML file or shipped preset, its ``base:`` chain resolved.

    A preset states only its differences: from the :class:`TrainConfig` defaults, or from the
    preset (or file) it names as ``base:``, resolved next to the file first and then among the
    shipped presets. Sections merge key by key; values, mappings such as ``rewards`` included,
    replace the base's (see :func:`tdm_r1.config.overlay`).
    """
    from tdm_r1.config import load_yaml, overlay

    path = resolve_config_path(config).resolve()
    if path in _chain:
        loop = " -> ".join(p.name for p in (*_chain, path))
        raise ConfigError(f"config {path}: its base: chain loops ({loop}); remove one base: key")
    tree = load_yaml(path)
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config {path}: base: must name one preset or YAML file, got {base!r}")
    beside = path.parent / (base if base.endswith((".yaml", ".yml")) else f"{base}.yaml")
    parent = load_recipe_tree(beside if beside.is_file() else base, (*_chain, path))
    return overlay(TrainConfig, parent, tree)


def load_train_config(
    config: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < ``config`` (a YAML file or shipped preset, with its ``base:`` chain) < ``--set
    key=value`` overrides < explicit CLI flags."""
    from tdm_r1.config import load_config

    return load_config(
        TrainConfig,
        data=load_recipe_tree(config) if config else None,
        overrides=overrides or [],
        flags=flags or {},
    )
