"""The panel's settings as one frozen value: a `Recipe`, checked against the parameter table.

A recipe is what the musician set in the prompt and guidance panel and what a session saves
under "recipe" in session.json. Its generation parameters (guidance, steps, seed, takes…) take
their type, range and default from `engine.params` — the one table the CLI, `resolve` and the
bundle defaults read too — so the panel can never hold a value the engine refuses. The other
fields (prompt, reference lane, seed lock, text prior) belong to the app alone.

Two ways in, on purpose different:
- in code, `Recipe(...)` and `recipe.replace(...)` are strict: an unknown field is a
  `TypeError` (a bug), a value out of range a `RequestError`;
- from a user's file, `Recipe.from_dict(d)` never fails: an unknown key is dropped, a value
  of the wrong type falls back to its default and a number out of range is clamped, each with
  a logged warning (a user's file is data, not code).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from engine.params import PARAMS, Param

log = logging.getLogger(__name__)

# the app's own defaults where they differ from the engine's: a fixed starting seed (a fresh
# one is drawn per generation unless locked) and two takes (an A/B choice; the CLI makes one)
APP_DEFAULTS = {"seed": 1234, "takes": 2}


def _default(name: str) -> Any:
    return APP_DEFAULTS.get(name, PARAMS[name].default)


@dataclass(frozen=True)
class Recipe:
    """The generation settings of a session (immutable: edit with `replace`)."""

    prompt: str = ""
    reference_track: str | None = None  # the lane used as the audio reference
    reference_file: str | None = None
    mix: float = _default("mix")
    cfg_context: float = _default("cfg_context")
    cfg_clap: float = _default("cfg_clap")
    harmony: float = _default("harmony")
    rhythm: float = _default("rhythm")
    steps: int = _default("steps")
    stereo_width: float = _default("stereo_width")
    loop_n: int = _default("loop_n")
    loop_frac: float = _default("loop_frac")
    strength: float = _default("strength")
    duration: float = _default("duration")
    seed: int = _default("seed")
    seed_locked: bool = False
    takes: int = _default("takes")
    text_prior: bool = True  # use the model's text prior when it has one

    def __post_init__(self):
        for name, p in TABLE_FIELDS.items():
            object.__setattr__(self, name, p.check(getattr(self, name)))
        for name, kinds in APP_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, kinds):
                raise TypeError(f"recipe field {name!r} must be {_kind_text(kinds)}, "
                                f"got {type(value).__name__}")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with `changes` (strict, like the constructor)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as session.json holds it (the same keys as ever)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "recipe") -> Recipe:
        """A recipe from a user's file: never fails, says what it dropped or changed."""
        values = {}
        for key, value in d.items():
            if key not in FIELDS:
                log.warning("%s: unknown setting %r dropped", where, key)
                continue
            if value is None and key not in _NULLABLE:
                continue  # unset: the default
            values[key] = _lenient(key, value, where)
        return cls(**values)


FIELDS = tuple(f.name for f in dataclasses.fields(Recipe))
# the fields whose type and range come from the parameter table
TABLE_FIELDS: dict[str, Param] = {name: PARAMS[name] for name in FIELDS if name in PARAMS}
APP_FIELDS: dict[str, tuple[type, ...]] = {
    "prompt": (str,), "reference_track": (str, type(None)), "reference_file": (str, type(None)),
    "seed_locked": (bool,), "text_prior": (bool,),
}
_NULLABLE = {"reference_track", "reference_file"}
assert set(TABLE_FIELDS) | set(APP_FIELDS) == set(FIELDS), "every recipe field has one source"


def _kind_text(kinds: tuple[type, ...]) -> str:
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def _lenient(key: str, value: Any, where: str) -> Any:
    """`value` for field `key` as far as it is usable: clamped into the table's range, or the
    default (with a warning) when it is not a value of the right kind at all."""
    p = TABLE_FIELDS.get(key)
    if p is None:
        if isinstance(value, APP_FIELDS[key]):
            return value
    elif _is_number(value):
        v = min(max(float(value), p.low), p.high)
        v = int(round(v)) if p.kind is int else v
        if v != value:
            log.warning("%s: %s %r set to %s (allowed: %s)", where, key, value, v, p.range_text)
        return v
    log.warning("%s: %s %r is not usable, set to the default", where, key, value)
    return _default(key) if key in PARAMS else Recipe.__dataclass_fields__[key].default


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

