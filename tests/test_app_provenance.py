"""A take's provenance in words (`recipe_lines`) and as the command that makes it again
(`command_line`): pinned for every mode, so their table-driven form says exactly what it said."""

import pytest

from app.controller import command_line, recipe_lines

PROVS = [
    # an accompaniment with prompt, reference, text prior, loop, stereo
    {"seed": 42, "take": 1, "takes_in_batch": 2, "device": "CPU", "created": "2025-01-02T03:04:05",
     "model": {"name": "tiny", "hash": "abcdef0123456789", "path": "/models/tiny"},
     "inputs": {"context": {"label": "song.wav"}, "reference": {"label": "ref.flac"}},
     "parameters": {"mode": "accompaniment", "prompt": "walking bass", "mix": 0.25,
                    "text_prior": True, "cfg_context": 8.0, "cfg_clap": 6.0, "steps": 30,
                    "sampler": "heun", "stereo_width": 0.4, "loop": [2, 0.5], "duration": 8.0},
     "app": {"action": "generate", "recipe": {"duration": 8.0},
             "context": {"tracks": ["a", "b"], "start": 0.0, "end": 8.123456}}},
    # a variation from a lane, mono, text prior off, no model path
    {"seed": 7, "model": {"name": "m"},
     "inputs": {"variation_of": {"label": "lane"}},
     "parameters": {"mode": "variation", "prompt": "drums", "text_prior": False,
                    "strength": 0.3, "cfg_context": 1.25, "cfg_clap": 1.25, "steps": 12,
                    "stereo_width": 0.0},
     "app": {"action": "vary", "recipe": {}}},
    # inpaint with a source file, no app record
    {"seed": 3, "inputs": {"source": {"label": "bass.wav"}, "context": {"label": "mix"}},
     "parameters": {"mode": "inpaint", "inpaint": [2.0, 4.5], "cfg_context": 2, "cfg_clap": 1,
                    "steps": 20, "sampler": "euler", "stereo_width": 0.2}},
    # regenerate and continue
    {"seed": 5, "parameters": {"mode": "regenerate", "inpaint": [1.0, 2.0], "strength": 0.6,
                               "steps": 8, "stereo_width": 0}},
    {"seed": 9, "inputs": {"continue_from": {"label": "clip.aiff"}},
     "parameters": {"mode": "continue", "duration": 6.5, "prompt": "keys", "steps": 10,
                    "cfg_context": None, "cfg_clap": 3.5}},
    # single, nothing at all; arrange
    {"parameters": {"mode": "single", "duration": 10.0}},
    {},
    {"seed": 11, "parameters": {"mode": "accompaniment", "prompt": "pad", "steps": 4},
     "inputs": {"context": {}}, "app": {"action": "arrange", "recipe": {"duration": 3.0},
                                        "context": {"tracks": ["x"], "start": 1.0, "end": 4.0}}},
    {"seed": 1, "inputs": {"reference": {}}, "parameters": {"mode": "single", "mix": None,
                                                             "duration": 2.0}},
]

# what recipe_lines and command_line said for PROVS before they were table-driven
EXPECTED = [(['<b>Generate</b> with the model <b>tiny</b> (hash abcdef012345) on CPU, 2025-01-02T03:04:05',
   'Prompt: <b>“walking bass”</b>',
   "The prompt was matched to the model's instruments (text prior)",
   'Audio reference: ref.flac, r = 0.25',
   'Context: 2 lane(s), 0–8.123 s',
   'Seed <b>42</b> (take 2 of 2; the same seed gives the same take)',
   'Guidance: context 8, prompt 6; 30 steps (heun)',
   'Stereo width 0.4',
   'Loop: 2 repetitions, s_loop 0.5',
   'Length: 8 s'],
  "riffwright generate --context song.wav --prompt 'walking bass' --reference ref.flac --mix "
  '0.25 --loop 2:0.5 --cfg-context 8 --cfg-clap 6 --steps 30 --stereo-width 0.4 --seed 42 '
  '--model /models/tiny --out takes/'),
 (['<b>Vary</b> with the model <b>m</b> (hash ) on None, ',
   'Prompt: <b>“drums”</b>',
   'Context: none',
   'Variation strength: 0.3',
   'Seed <b>7</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context 1.25, prompt 1.25; 12 steps (heun)',
   'Mono'],
  'riffwright generate --variation-of source.wav --prompt drums --strength 0.3 --cfg-context '
  '1.25 --cfg-clap 1.25 --steps 12 --no-text-prior --stereo-width 0 --seed 7 --out takes/'),
 (['<b>Inpaint</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: none',
   'Region redrawn: 2–4.5 s of the source (outside it, the source sample for sample)',
   'Seed <b>3</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context 2, prompt 1; 20 steps (euler)',
   'Stereo width 0.2'],
  'riffwright generate --context context.wav --inpaint 2:4.5 --source bass.wav --cfg-context 2 '
  '--cfg-clap 1 --steps 20 --stereo-width 0.2 --seed 3 --out takes/'),
 (['<b>Regenerate</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: none',
   'Context: none',
   'Region redrawn: 1–2 s of the source (outside it, the source sample for sample)',
   'Seed <b>5</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context None, prompt None; 8 steps (heun)',
   'Mono'],
  'riffwright generate --regenerate 1:2 --source source.wav --strength 0.6 --steps 8 '
  '--stereo-width 0 --seed 5 --out takes/'),
 (['<b>Continue</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: <b>“keys”</b>',
   'Context: none',
   'Seed <b>9</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context None, prompt 3.5; 10 steps (heun)',
   'Mono'],
  'riffwright generate --continue clip.aiff --prompt keys --duration 6.5 --cfg-clap 3.5 '
  '--steps 10 --stereo-width 0 --seed 9 --out takes/'),
 (['<b>Single</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: none',
   'Context: none',
   'Seed <b>None</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context None, prompt None; None steps (heun)',
   'Mono'],
  'riffwright generate --duration 10 --stereo-width 0 --seed 0 --out takes/'),
 (['<b>Generate</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: none',
   'Context: none',
   'Seed <b>None</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context None, prompt None; None steps (heun)',
   'Mono'],
  'riffwright generate --stereo-width 0 --seed 0 --out takes/'),
 (['<b>Arrange</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: <b>“pad”</b>',
   'Context: 1 lane(s), 1–4 s',
   'Seed <b>11</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context None, prompt None; 4 steps (heun)',
   'Mono',
   'Length: 3 s'],
  'riffwright generate --context context.wav --prompt pad --steps 4 --stereo-width 0 --seed 11 '
  '--out takes/'),
 (['<b>Single</b> with the model <b>None</b> (hash ) on None, ',
   'Prompt: none',
   'Audio reference: a lane',
   'Context: none',
   'Seed <b>1</b> (take 1 of 1; the same seed gives the same take)',
   'Guidance: context None, prompt None; None steps (heun)',
   'Mono'],
  'riffwright generate --reference reference.wav --duration 2 --stereo-width 0 --seed 1 --out '
  'takes/')]


@pytest.mark.parametrize("i", range(len(PROVS)))
def test_recipe_lines_and_command_line_say_what_they_said(i):
    lines, cmd = EXPECTED[i]
    assert recipe_lines(PROVS[i]) == lines
    assert command_line(PROVS[i]) == cmd
