"""The session's recipe is a frozen `Recipe` checked against the one parameter table: strict in
code, forgiving (drop / clamp, with a logged warning) when it comes from a user's file, and
saved under the same keys as ever."""

import dataclasses
import json
import logging

import numpy as np
import pytest

from engine.document.recipe import APP_FIELDS, FIELDS, TABLE_FIELDS, Recipe
from engine.document.session import Session, track_from_audio
from engine.errors import RequestError
from engine.params import PARAMS

# the keys session.json has always held under "recipe" (sessions saved before the Recipe)
OLD_KEYS = {"prompt", "reference_track", "reference_file", "mix", "cfg_context", "cfg_clap",
            "steps", "stereo_width", "loop_n", "loop_frac", "strength", "duration", "seed",
            "seed_locked", "takes", "text_prior"}
# keys added since, which an older session.json lacks (they take their defaults)
NEW_KEYS = {"harmony", "rhythm"}


def test_every_generation_field_comes_from_the_parameter_table():
    assert set(TABLE_FIELDS) | set(APP_FIELDS) == set(FIELDS) == OLD_KEYS | NEW_KEYS
    r = Recipe()
    for name, p in TABLE_FIELDS.items():
        assert p is PARAMS[name]
        assert type(getattr(r, name)) is p.kind, name
    assert (r.steps, r.cfg_context, r.mix) == (PARAMS["steps"].default,
                                              PARAMS["cfg_context"].default, PARAMS["mix"].default)


def test_a_recipe_saved_before_harmony_and_rhythm_guidance_loads_with_them_off():
    old = {k: v for k, v in Recipe(cfg_context=7.0).to_dict().items() if k in OLD_KEYS}
    r = Recipe.from_dict(old)
    assert r.harmony == PARAMS["harmony"].default == 0.0 and r.cfg_context == 7.0
    assert r.rhythm == PARAMS["rhythm"].default == 0.0


def test_in_code_a_recipe_is_strict_and_frozen():
    r = Recipe()
    with pytest.raises(TypeError):
        Recipe(stepz=3)  # an unknown field is an error, never dropped
    with pytest.raises(TypeError):
        r.replace(model="x")
    with pytest.raises(RequestError, match="steps must be between 1 and 200"):
        r.replace(steps=500)
    with pytest.raises(RequestError, match="whole number"):
        r.replace(takes=2.5)
    with pytest.raises(TypeError, match="seed_locked"):
        r.replace(seed_locked="yes")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.steps = 3
    r2 = r.replace(cfg_clap=3, prompt="bass")
    assert r2.cfg_clap == 3.0 and type(r2.cfg_clap) is float and r.cfg_clap != 3.0
    assert Recipe(**r2.to_dict()) == r2


def test_from_a_file_unknown_keys_are_dropped_and_values_clamped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="engine.document.recipe"):
        r = Recipe.from_dict({"steps": 900, "cfg_clap": -3.0, "model": None, "wobble": 1,
                              "takes": 2.6, "mix": "much", "seed_locked": "y",
                              "prompt": "bass", "reference_track": None, "seed": None})
    assert r.steps == 200 and r.cfg_clap == 0.0 and r.takes == 3
    assert r.mix == PARAMS["mix"].default and r.seed_locked is False
    assert r.prompt == "bass" and r.seed == Recipe().seed
    text = caplog.text
    for word in ("'model'", "'wobble'", "steps 900", "cfg_clap -3.0", "takes 2.6", "mix 'much'",
                 "seed_locked 'y'"):
        assert word in text, word
    with caplog.at_level(logging.WARNING, logger="engine.document.recipe"):
        caplog.clear()
        assert Recipe.from_dict(Recipe().to_dict()) == Recipe()
    assert caplog.text == ""  # a good recipe loads silently


def _old_session(tmp_path, recipe: dict):
    s = Session(48000)
    s.insert_track(track_from_audio("drums", np.zeros((1, 4800), np.float32)))
    folder = s.save(tmp_path / "song")
    mf = folder / "session.json"
    m = json.loads(mf.read_text())
    m["recipe"] = recipe
    mf.write_text(json.dumps(m))
    return folder


def test_an_old_session_file_keeps_its_values_and_gains_new_settings_at_their_defaults(
        tmp_path):
    old = {"prompt": "walking bass", "reference_track": None, "reference_file": None,
           "mix": 0.5, "cfg_context": 8.0, "cfg_clap": 6.0, "steps": 40, "stereo_width": 0.4,
           "loop_n": 1, "loop_frac": 0.5, "strength": 0.5, "duration": 10.0, "seed": 77,
           "seed_locked": True, "takes": 2, "text_prior": False}
    s = Session.load(_old_session(tmp_path, old))
    now = {**old, **{k: PARAMS[k].default for k in NEW_KEYS}}
    assert isinstance(s.recipe, Recipe) and s.recipe.to_dict() == now
    s.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "session.json").read_text())["recipe"] == now
    # a session without settings stays without them (the app fills in its panel's)
    assert Session.load(_old_session(tmp_path / "e", {})).recipe is None


def test_a_users_session_with_bad_settings_loads_with_a_warning_not_a_crash(tmp_path, caplog):
    folder = _old_session(tmp_path, {"prompt": "x", "steps": 500, "cfg_clap": 20.0,
                                     "model": "/old/bundle", "future_knob": [1, 2]})
    with caplog.at_level(logging.WARNING, logger="engine.document.recipe"):
        s = Session.load(folder)
    assert s.recipe.steps == 200 and s.recipe.cfg_clap == 12.0 and s.recipe.prompt == "x"
    assert "future_knob" in caplog.text and "steps 500" in caplog.text
    assert "session.json" in caplog.text  # the warning names the file
