"""The generation parameters, each written once: name, type, default, range and help.

`Generator.resolve` validates against this table, the CLI's `generate --help` takes its
descriptions and defaults from it, the bundle's `defaults` are checked against it and the
app's panel sets its slider and spin-box ranges from it. A parameter whose `bundle` flag is set
may be given a default by the model bundle (its manifest's `defaults`, under `bundle_key`).

Plain Python only: the app imports this module, and it must not pull in torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.errors import RequestError


@dataclass(frozen=True)
class Param:
    name: str
    kind: type  # int, float or str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    bundle: bool = False  # the bundle's `defaults` may override `default`
    bundle_key: str | None = None  # the key in the bundle's `defaults`, if not `name`
    label: str = ""  # the word a user sees (flag or slider); `name` when empty

    @property
    def key(self) -> str:
        """The key of this parameter in a bundle's `defaults`."""
        return self.bundle_key or self.name

    @property
    def flag(self) -> str:
        """The option of `riffwright generate` that sets this parameter."""
        return "--" + self.name.replace("_", "-")

    @property
    def range_text(self) -> str:
        if self.choices:
            return ", ".join(self.choices)
        if self.kind is int:
            return f"{int(self.low)}-{int(self.high)}"
        return f"{self.low:g}-{self.high:g}"

    def check(self, value: Any) -> Any:
        """`value` converted to `kind`, or a RequestError that names the allowed range."""
        what = self.label or self.name.replace("_", " ")
        if self.choices:
            if value not in self.choices:
                raise RequestError(f"unknown {what} {value!r}: use {self.range_text}")
            return value
        try:
            v = self.kind(value)
        except (TypeError, ValueError):
            raise RequestError(f"{what} must be a number, got {value!r}") from None
        if self.kind is int and v != value:
            raise RequestError(f"{what} must be a whole number, got {value!r}")
        if not (math.isfinite(v) and self.low <= v <= self.high):
            raise RequestError(f"{what} must be between {self.low:g} and {self.high:g}")
        return v


_TABLE = (
    Param("steps", int, 30, "diffusion steps: more is slower and cleaner", 1, 200,
          bundle=True),
    Param("cfg_context", float, 1.25, "how strongly to follow the context", 0.0, 12.0,
          bundle=True, label="CFG context"),
    Param("cfg_clap", float, 1.25, "how strongly to follow the prompt or reference", 0.0, 12.0,
          bundle=True, label="CFG CLAP"),
    Param("harmony", float, 0.0, "harmony guidance: steer the notes towards the pitch classes "
          "the context sounds (needs a model with a harmony probe; 0 = off)", 0.0, 5.0,
          bundle=True),
    Param("rhythm", float, 0.0, "rhythm guidance: steer the part's onsets towards the "
          "context's (needs a model with harmony and rhythm probes; drums are left alone; "
          "0 = off)", 0.0, 5.0, bundle=True),
    Param("sampler", str, "heun", "ODE sampler", choices=("heun", "euler"), bundle=True),
    Param("stereo_width", float, 0.4, "pseudo-stereo width, 0 = mono, 1 = widest", 0.0, 1.0,
          bundle=True, label="stereo width"),
    Param("strength", float, 0.5, "variation / regeneration strength: how far the result "
          "may move from its source", 0.0, 1.0, bundle=True, bundle_key="variation_strength"),
    Param("mix", float, 0.5, "with both a prompt and a reference: 0 = the reference, "
          "1 = the prompt", 0.0, 1.0, label="mix (interpolation ratio r)"),
    Param("takes", int, 1, "how many takes to generate", 1, 8),
    Param("seed", int, 0, "random seed; take k uses seed + k", 0, 2**31 - 1),
    Param("duration", float, 10.0, "length in seconds", 0.05, 600.0),
    Param("gap", float, 4.0, "length of a transition's bridge in seconds", 0.05, 60.0,
          label="transition gap"),
    Param("s_churn", float, 0.0, "stochastic churn of the sampler (0 = deterministic ODE)",
          0.0, 100.0, label="churn"),
    Param("loop_n", int, 1, "loop repetitions", 1, 16, label="loop repetitions"),
    Param("loop_frac", float, 0.5, "fraction of the steps forced periodic", 0.0, 1.0,
          label="loop fraction"),
)

PARAMS: dict[str, Param] = {p.name: p for p in _TABLE}
# what a bundle's `defaults` may set, by its key there
BUNDLE_DEFAULTS: dict[str, Param] = {p.key: p for p in _TABLE if p.bundle}


def bundle_default_values() -> dict[str, Any]:
    """The built-in values of every parameter a bundle may set (a new bundle's `defaults`)."""
    return {key: p.default for key, p in BUNDLE_DEFAULTS.items()}


def check_bundle_defaults(defaults: dict) -> str | None:
    """Why a bundle's `defaults` are unusable (an unknown key, a wrong type, a value out of
    range), or None when they are fine."""
    for key, value in defaults.items():
        p = BUNDLE_DEFAULTS.get(key)
        if p is None:
            return f"unknown default {key!r}"
        if p.kind is str:
            if not isinstance(value, str):
                return f"default {key!r} has the wrong type"
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or (
                p.kind is int and not isinstance(value, int)):
            return f"default {key!r} has the wrong type"
        try:
            p.check(value)
        except RequestError as e:
            return f"default {key!r}: {e}"
    return None


def pick(name: str, value: Any, defaults: dict | None = None) -> Any:
    """`value` if given, else the bundle's default (for parameters it may set), else the
    table's; checked against the range."""
    p = PARAMS[name]
    if value is None:
        value = (defaults or {}).get(p.key, p.default) if p.bundle else p.default
    return p.check(value)


def cli_help(name: str, default_text: str | None = None) -> str:
    """A flag's help: the table's text, its range and its default."""
    p = PARAMS[name]
    if default_text is None:
        default_text = f"the bundle's, else {p.default}" if p.bundle else f"{p.default}"
    return f"{p.help} ({p.range_text}; default: {default_text})"
