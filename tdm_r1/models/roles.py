"""LoRA roles: several named peft adapters on one frozen transformer.

A role (``generator``, ``fake``, ``surrogate``, ...) is a peft adapter of that name; ``None``
switches every adapter off (the frozen base: teacher / reference). :class:`LoraRoles` adds,
switches, saves, loads and fingerprints them; it is a sequence of the role names, so
``"generator" in adapter.roles`` and ``list(adapter.roles)`` read naturally.

File layouts: :meth:`LoraRoles.save` writes peft's ``adapter_model.safetensors`` +
``adapter_config.json``; :meth:`LoraRoles.load` also reads diffusers LoRA files;
:meth:`LoraRoles.load_tdm_ema` reads TDM / TDM-R1 EMA checkpoints (a tensor list in parameter order,
placed by name with the published order of :mod:`tdm_r1.models.ema_layouts`).

A role's scale (:meth:`LoraRoles.set_scale`) multiplies its ``alpha / rank`` as diffusers does. On
the meta device (no weights yet) :meth:`LoraRoles.digest` reads ``"no weights (meta)"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch
from torch import nn

from tdm_r1.errors import ConfigError, ShapeError
from tdm_r1.models.lora_files import find_lora_files, normalise_lora_key, read_state_dict
from tdm_r1.models.lora_report import LoraLoadReport, check_names

if TYPE_CHECKING:
    from tdm_r1.models.ema_layouts import EmaLayout

log = logging.getLogger(__name__)

#: What :meth:`LoraRoles.digest` says of a role whose tensors have no data (the meta device).
NO_WEIGHTS = "no weights (meta)"

#: ``init`` names of :meth:`LoraRoles.add` -> peft ``init_lora_weights``.
LORA_INITS: dict[str, Any] = {
    "gaussian": "gaussian",  # A ~ N(0, 1/r), B = 0: starts equal to the base (TDM-R1's choice)
    "zeros": "gaussian",  # alias: "the LoRA's output starts at zero" (B = 0)
    "kaiming": True,  # peft default: A kaiming-uniform, B = 0
}


def role_tensors(module: nn.Module, role: str) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of role ``role``'s LoRA tensors in ``named_parameters`` order."""
    tags = (f".lora_A.{role}.", f".lora_B.{role}.")
    return [(n, p) for n, p in module.named_parameters() if tags[0] in n or tags[1] in n]


def file_key(name: str, role: str) -> str:
    """A role tensor's key in a saved file: the parameter name without the adapter name."""
    return name.replace(f".{role}.", ".")


class LoraRoles(Sequence[str]):
    """The LoRA roles of one transformer (a sequence of role names, in the order they were added).

    Args:
        transformer: the diffusers transformer (peft-enabled through diffusers' ``add_adapter``).
        family: the model family, written into saved configs.
        default_targets: module-name suffixes wrapped when :meth:`add` is given none.
    """

    def __init__(self, transformer: nn.Module, *, family: str, default_targets: Sequence[str]) -> None:
        self.transformer = transformer
        self.family = family
        self.default_targets = tuple(default_targets)
        self._cfg: dict[str, dict[str, Any]] = {}
        self._params: dict[str, list[nn.Parameter]] = {}
        self._trainable: dict[str, bool] = {}
        self._active: str | None = None
        self._reports: dict[str, LoraLoadReport] = {}

    # -- the sequence of names ---------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        return list(self._cfg)[index]

    def __len__(self) -> int:
        return len(self._cfg)

    def __repr__(self) -> str:
        return f"LoraRoles({list(self._cfg)}, active={self._active!r})"

    @property
    def active(self) -> str | None:
        """The role the transformer runs with now (None = adapters off)."""
        return self._active

    def config(self, name: str) -> dict[str, Any]:
        """``{"rank", "alpha", "target_modules", "init"}`` of role ``name``."""
        self._require(name)
        return dict(self._cfg[name])

    # -- adding and switching ----------------------------------------------------------------------
    def add(
        self,
        name: str,
        *,
        rank: int = 32,
        alpha: float = 64.0,
        target_modules: Sequence[str] | None = None,
        init: str = "gaussian",
        dropout: float = 0.0,
        trainable: bool = True,
    ) -> None:
        """Add a LoRA role (a peft adapter named ``name``) on the frozen transformer.

        Args:
            name: role name, e.g. "generator", "fake", "surrogate".
            rank, alpha: LoRA rank r and scale alpha (the LoRA output is scaled by alpha / r).
            target_modules: module-name suffixes (default: the family's default targets).
            init: "gaussian" / "zeros" (B = 0: starts equal to the base) or "kaiming".
            trainable: whether the role's parameters require grad.
        """
        from peft import LoraConfig

        if not name or not name.replace("_", "").replace("-", "").isalnum() or name in ("default",):
            raise ConfigError(f"invalid role name {name!r}: use letters, digits, '-' or '_' (not 'default')")
        if name in self._cfg:
            raise ConfigError(f"role {name!r} already exists; roles: {list(self)}")
        if init not in LORA_INITS:
            raise ConfigError(f"unknown LoRA init {init!r}; valid: {', '.join(LORA_INITS)}")
        targets = list(target_modules or self.default_targets)
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            target_modules=targets,
            init_lora_weights=LORA_INITS[init],
            lora_dropout=dropout,
        )
        on_meta = next(self.transformer.parameters()).is_meta  # no weights yet: the LoRA tensors none either
        try:
            with warnings.catch_warnings(), torch.device("meta") if on_meta else contextlib.nullcontext():
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                self.transformer.add_adapter(config, adapter_name=name)
        except ValueError as exc:  # peft: "Target modules ... not found in the base model"
            raise ConfigError(f"cannot add LoRA role {name!r} with targets {targets}: {exc}") from exc
        self._cfg[name] = {"rank": rank, "alpha": float(alpha), "target_modules": targets, "init": init}
        self._params.pop(name, None)
        for layer in self._lora_layers(name) if on_meta else ():  # peft may leave a second adapter on the CPU
            if layer.get_base_layer().weight.is_meta:
                layer.lora_A[name].to("meta")
                layer.lora_B[name].to("meta")
        self._trainable[name] = trainable
        params = self.parameters(name)
        for p in params:
            p.data = p.data.to(torch.float32)  # trainable LoRA weights stay in fp32 (bf16 base is fine)
        self._activate(self._active, force=True)
        log.info("added LoRA role %r: rank %d, alpha %g, %d tensors", name, rank, alpha, len(params))

    def set_trainable(self, name: str, trainable: bool) -> None:
        """Whether role ``name``'s parameters require grad (kept across role switches)."""
        self._require(name)
        self._trainable[name] = trainable
        for p in self.parameters(name):
            p.requires_grad_(trainable)

    def _lora_layers(self, name: str) -> list[Any]:
        return [m for m in self.transformer.modules() if name in getattr(m, "scaling", {})]

    def scale(self, name: str) -> float:
        """Role ``name``'s scale: its output is ``scale * alpha / rank * B A x`` (1.0 as published)."""
        self._require(name)
        return float(self._cfg[name].get("scale", 1.0))

    def set_scale(self, name: str, scale: float) -> None:
        """Apply role ``name`` at ``scale`` times ``alpha / rank``.

        As diffusers' ``set_adapters([name], weights=[scale])``: peft's ``LoraLayer.set_scale(name,
        scale)`` on every layer, ``scaling = scale * lora_alpha / r`` (diffusers@v0.33.1,
        src/diffusers/utils/peft_utils.py ``set_weights_and_activate_adapters``). Scale s on (A, B)
        equals scale 1 on (A, s B).
        """
        self._require(name)
        if not math.isfinite(scale):
            raise ConfigError(f"LoRA scale of role {name!r} must be a finite number, got {scale!r}")
        for layer in self._lora_layers(name):
            layer.set_scale(name, float(scale))
        self._cfg[name]["scale"] = float(scale)

    @torch.no_grad()
    def fold_scale(self, name: str) -> None:
        """Move role ``name``'s scale into its weights (B <- scale B) and set the scale to 1: the same model."""
        s = self.scale(name)
        if s == 1.0:
            return
        for layer in self._lora_layers(name):
            layer.lora_B[name].weight.mul_(s)
        self.set_scale(name, 1.0)

    def enable_gradient_checkpointing(self) -> None:
        """Checkpointing that recomputes with the forward's role (:mod:`tdm_r1.models.role_checkpoint`)."""
        from tdm_r1.models.role_checkpoint import enable

        enable(self.transformer)

    @contextlib.contextmanager
    def use(self, name: str | None) -> Iterator[None]:
        """Context in which the transformer runs with role ``name`` (None = adapters off = base)."""
        if name is not None:
            self._require(name)
        previous = self._active
        self._activate(name)
        try:
            yield
        finally:
            self._activate(previous)

    def _activate(self, name: str | None, force: bool = False) -> None:
        if not self._cfg or (name == self._active and not force):
            self._active = name
            return
        if name is None:
            self.transformer.disable_adapters()
        else:
            self.transformer.enable_adapters()
            self.transformer.set_adapter(name)
        self._active = name
        # peft toggles requires_grad on (de)activation; tdmbench keeps each role's own setting
        for role, flag in self._trainable.items():
            for p in self.parameters(role):
                if p.requires_grad != flag:
                    p.requires_grad_(flag)

    def _require(self, name: str) -> None:
        if name not in self._cfg:
            raise ConfigError(f"unknown LoRA role {name!r}; roles on this model: {list(self) or 'none'}")

    # -- tensors -----------------------------------------------------------------------------------
    def parameters(self, name: str) -> list[nn.Parameter]:
        """The role's LoRA tensors in ``named_parameters`` order (lora_A, lora_B per wrapped module)."""
        self._require(name)
        if name not in self._params:
            self._params[name] = [p for _, p in role_tensors(self.transformer, name)]
        return self._params[name]

    def tensor_names(self, name: str) -> list[str]:
        """Parameter names of the role's tensors (order of :meth:`parameters`)."""
        self._require(name)
        return [n for n, _ in role_tensors(self.transformer, name)]

    def has_weights(self, name: str) -> bool:
        """False when the role's tensors have no data (the model was built on the meta device)."""
        return not any(p.is_meta for p in self.parameters(name))

    def state(self, name: str) -> dict[str, torch.Tensor]:
        """The role's tensors keyed like peft's saved files (adapter name removed), detached, on the CPU
        (a role with no weights keeps them on the meta device: shapes and dtypes, no data)."""
        self._require(name)
        return {
            file_key(n, name): p.detach() if p.is_meta else p.detach().to("cpu").contiguous()
            for n, p in role_tensors(self.transformer, name)
        }

    def copies(self, name: str, *, device: Any = None) -> list[torch.Tensor]:
        """Detached copies of the role's tensors (order of :meth:`parameters`), e.g. for an EMA."""
        return [p.detach().to(device or p.device).clone() for p in self.parameters(name)]

    @torch.no_grad()
    def set_weights(self, name: str, tensors: Sequence[torch.Tensor], *, source: str = "tensors") -> None:
        """Copy ``tensors`` (order of :meth:`parameters`) into the role; all shapes checked first."""
        params = self.parameters(name)
        tensors = list(tensors)
        cfg = self._cfg[name]
        if len(tensors) != len(params):
            raise ShapeError(
                f"{source} has {len(tensors)} tensors but role {name!r} (rank {cfg['rank']}, alpha {cfg['alpha']:g}, "
                f"targets {cfg['target_modules']}) has {len(params)} LoRA tensors on this transformer. The LoRA "
                "layout must match the one the checkpoint was trained with exactly (same rank and target modules)."
            )
        names = self.tensor_names(name)
        for i, (t, p) in enumerate(zip(tensors, params, strict=True)):
            if tuple(t.shape) != tuple(p.shape):
                raise ShapeError(
                    f"{source}: tensor {i} has shape {tuple(t.shape)} but role {name!r} parameter {names[i]} "
                    f"has shape {tuple(p.shape)}; nothing was loaded"
                )
        for t, p in zip(tensors, params, strict=True):
            p.copy_(t.to(device=p.device, dtype=p.dtype))

    def digest(self, name: str) -> str:
        """sha256 (16 hex) of the role's current tensors (and its scale when not 1): identifies the
        weights in cache keys. ``"no weights (meta)"`` for a role on the meta device."""
        if not self.has_weights(name):
            return NO_WEIGHTS
        h = hashlib.sha256()
        for p in self.parameters(name):
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        if self.scale(name) != 1.0:
            h.update(f"scale={self.scale(name)!r}".encode())
        return h.hexdigest()[:16]

    # -- files -------------------------------------------------------------------------------------
    def load_tdm_ema(self, name: str, path: str | Path, *, layout: EmaLayout | None = None) -> LoraLoadReport:
        """Load a TDM / TDM-R1 EMA checkpoint (``{"ema_parameters": [tensor, ...]}``) into role ``name``.

        The list holds a peft adapter's tensors in the publisher's ``named_parameters`` order.
        With the checkpoint's ``layout`` (:mod:`tdm_r1.models.ema_layouts`: the names in that order)
        each tensor goes to the parameter of its name, whatever order this diffusers gives them,
        and a role with other names is refused. Without one the list is copied in this model's
        order (a warning says the order cannot be checked). Count and every shape are checked
        before anything is copied: a mismatch raises :class:`ShapeError`. Returns the load's
        :class:`~tdm_r1.models.lora_report.LoraLoadReport` (also kept: :meth:`load_report`).
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as exc:
            raise ShapeError(f"cannot read TDM EMA checkpoint {path}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("ema_parameters"), list | tuple):
            keys = sorted(state)[:10] if isinstance(state, dict) else type(state).__name__
            raise ShapeError(
                f"{path} is not a TDM EMA checkpoint: expected a dict with an 'ema_parameters' list, got {keys}"
            )
        tensors = list(state["ema_parameters"])
        source = f"TDM EMA checkpoint {path}"
        if layout is not None:
            from tdm_r1.models.ema_layouts import order_by_layout

            model_names = [file_key(n, name) for n in self.tensor_names(name)]
            tensors = order_by_layout(tensors, model_names, layout, source=source)
        else:
            log.warning(
                "%s: no published parameter order is known for it; its %d tensors are copied in this "
                "model's order (a permuted list of equal shapes would load unnoticed)",
                source,
                len(tensors),
            )
        self.set_weights(name, tensors, source=source)
        log.info("loaded %d EMA tensors from %s into role %r", len(state["ema_parameters"]), path, name)
        return self._report(name, source, len(tensors))

    def _report(self, name: str, source: str, loaded: int) -> LoraLoadReport:
        cfg, expected = self._cfg[name], len(self.parameters(name))
        args = (name, source, expected, loaded, int(cfg["rank"]), float(cfg["alpha"]), self.scale(name))
        self._reports[name] = LoraLoadReport(*args)
        return self._reports[name]

    def load_report(self, name: str) -> LoraLoadReport | None:
        """The report of the last file loaded into role ``name`` (None if none was)."""
        self._require(name)
        return self._reports.get(name)

    def save(self, name: str, directory: str | Path) -> Path:
        """Save role ``name`` as ``adapter_model.safetensors`` + ``adapter_config.json`` (peft layout)."""
        from safetensors.torch import save_file

        if not self.has_weights(name):
            raise ShapeError(
                f"role {name!r} has {NO_WEIGHTS}: nothing to save (load the model's weights first)"
            )
        if self.scale(name) != 1.0:
            raise ConfigError(
                f"role {name!r} runs at LoRA scale {self.scale(name):g}; a saved role holds its weights at "
                "scale 1: call fold_scale first (the same model)"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.state(name), str(directory / "adapter_model.safetensors"))
        cfg = self._cfg[name]
        config = {
            "peft_type": "LORA",
            "r": cfg["rank"],
            "lora_alpha": cfg["alpha"],
            "target_modules": list(cfg["target_modules"]),
            "init_lora_weights": LORA_INITS[cfg["init"]],
            "tdmbench": {"family": self.family, "role": name, "init": cfg["init"]},
        }
        (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    def load(self, name: str, path: str | Path) -> LoraLoadReport:
        """Load a saved role (folder from :meth:`save`, or a peft / diffusers LoRA file) into ``name``.

        Creates the role from ``adapter_config.json`` if it does not exist. Keys may carry the
        prefixes ``base_model.model.`` (peft) or ``transformer.`` (diffusers). Missing, unexpected
        or mis-shaped tensors raise :class:`ShapeError` (one line) before anything is copied.
        """
        path = Path(path)
        weights_file, config = find_lora_files(path)
        if name not in self._cfg:
            if config is None:
                raise ShapeError(
                    f"{path}: no adapter_config.json next to the weights; cannot create role {name!r}"
                )
            self.add(
                name,
                rank=int(config["r"]),
                alpha=float(config.get("lora_alpha", config["r"])),
                target_modules=list(config["target_modules"]),
                init="gaussian",
            )
        state = read_state_dict(weights_file)
        state = {normalise_lora_key(k, name): v for k, v in state.items()}
        expected = {file_key(n, name): p for n, p in role_tensors(self.transformer, name)}
        check_names(expected, state, source=str(weights_file), role=name)
        bad = [
            (k, tuple(state[k].shape), tuple(p.shape))
            for k, p in expected.items()
            if state[k].shape != p.shape
        ]
        if bad:
            raise ShapeError(
                f"LoRA {weights_file}: shape mismatch for role {name!r}: {bad[:3]} (file vs model)"
            )
        with torch.no_grad():
            for k, p in expected.items():
                p.copy_(state[k].to(device=p.device, dtype=p.dtype))
        return self._report(name, f"LoRA {weights_file}", len(expected))
