"""The prompt and guidance panel: what to generate and how, plus the action buttons.

The panel owns no state of its own beyond its widgets: `recipe()` reads them into a `Recipe`
(engine/document/recipe.py), `set_recipe()` shows one. Value changes are
reported with `sig_recipe_changed(key, value, merge)`, so the window can keep the recipe in
the session (saved with it, undoable; slider drags merge into one step).
"""

from __future__ import annotations

import random

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.controller import DEFAULT_RECIPE
from engine.document.recipe import Recipe
from engine.params import PARAMS

HARMONY_TIP = ("Harmony guidance: steer the notes towards the pitch classes the context "
               "plays (0 = off). It helps a bass sit in the chords; drums are left alone")
RHYTHM_TIP = ("Rhythm guidance: steer the part's note starts towards the context's onsets "
              "(0 = off); drums are left alone")


def _set_range(spin: QSpinBox | QDoubleSpinBox, name: str) -> None:
    """A spin box over the range engine.params gives `name`."""
    p = PARAMS[name]
    spin.setRange(p.kind(p.low), p.kind(p.high))


class ValueSlider(QWidget):
    """A horizontal slider over a float range with its value shown beside it."""

    sig_value = Signal(float, bool)  # value, merge (True while dragging)
    sig_released = Signal()

    def __init__(self, lo: float, hi: float, step: float, value: float, fmt: str = "{:.2f}",
                 tip: str = ""):
        super().__init__()
        self.lo, self.step, self.fmt = lo, step, fmt
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, int(round((hi - lo) / step)))
        self.label = QLabel()
        self.label.setFixedWidth(40)
        self.label.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.label)
        self.setToolTip(tip)
        self._quiet = False
        self.slider.valueChanged.connect(self._changed)
        self.slider.sliderReleased.connect(self.sig_released.emit)
        self.set_value(value)

    def value(self) -> float:
        return round(self.lo + self.slider.value() * self.step, 6)

    def set_value(self, v: float) -> None:
        self._quiet = True
        self.slider.setValue(int(round((float(v) - self.lo) / self.step)))
        self.label.setText(self.fmt.format(self.value()))
        self._quiet = False

    def _changed(self, _v) -> None:
        self.label.setText(self.fmt.format(self.value()))
        if not self._quiet:
            self.sig_value.emit(self.value(), self.slider.isSliderDown())


class PromptEdit(QPlainTextEdit):
    """The prompt box; leaving it ends the current typing undo step."""

    sig_focus_out = Signal()

    def focusOutEvent(self, ev):
        self.sig_focus_out.emit()
        super().focusOutEvent(ev)


class GuidancePanel(QWidget):
    sig_recipe_changed = Signal(str, object, bool)  # key, value, merge
    sig_merge_closed = Signal()
    sig_action = Signal(str)  # generate, inpaint, vary, continue, regenerate, use_context, arrange
    sig_reference_file = Signal(str)  # a file dropped or picked as the audio reference
    sig_model_chosen = Signal(str)  # bundle path

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumWidth(300)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 6, 8, 6)
        outer.setSpacing(6)

        # model and device
        top = QHBoxLayout()
        self.model = QComboBox()
        self.model.setToolTip("Model bundle")
        self.model.activated.connect(lambda i: self.sig_model_chosen.emit(
            self.model.itemData(i) or ""))
        self.device = QLabel()
        self.device.setObjectName("device")
        self.device.setToolTip("The device generation runs on (CUDA, MPS or CPU)")
        top.addWidget(self.model, 1)
        top.addWidget(self.device)
        self.model.setPlaceholderText("loading the model…")
        self.set_device("loading…", ok=False)
        outer.addLayout(top)

        # prompt
        gp = QGroupBox("Prompt")
        f = QVBoxLayout(gp)
        self.prompt = PromptEdit()
        self.prompt.setPlaceholderText("e.g. a walking upright bass, warm and round")
        self.prompt.setFixedHeight(54)
        self.prompt.setToolTip("Text prompt (CLAP text embedding). Leave empty for audio "
                               "reference only or unconditional.")
        self.prompt.textChanged.connect(
            lambda: self._emit("prompt", self.prompt.toPlainText(), True))
        self.prompt.sig_focus_out.connect(self.sig_merge_closed.emit)
        f.addWidget(self.prompt)
        self.text_prior = QCheckBox("Match the model's instruments")
        self.text_prior.setChecked(DEFAULT_RECIPE.text_prior)
        self.text_prior.toggled.connect(lambda v: self._emit("text_prior", v, False))
        f.addWidget(self.text_prior)
        self.set_text_prior_available(False)
        ref = QHBoxLayout()
        self.reference = QComboBox()
        self.reference.setToolTip("Audio reference: pick a lane, or drop an audio file on this "
                                  "panel (it becomes a reference lane)")
        self.reference.currentIndexChanged.connect(
            lambda _i: self._emit("reference_track", self.reference.currentData(), False))
        ref.addWidget(QLabel("Reference"))
        ref.addWidget(self.reference, 1)
        f.addLayout(ref)
        self.mix = self._slider(f, "r (audio ↔ text)", 0.05, DEFAULT_RECIPE.mix, "mix",
                                "Interpolation r between the audio reference (0) and the text "
                                "prompt (1)")
        outer.addWidget(gp)

        # guidance
        gg = QGroupBox("Guidance")
        g = QVBoxLayout(gg)
        # the loaded model's own defaults replace these (see MainWindow._adopt_model_defaults)
        self.cfg_context = self._slider(g, "CFG context", 0.05,
                                        DEFAULT_RECIPE.cfg_context, "cfg_context",
                                        "How strongly to follow the context (w_ctx)")
        self.cfg_clap = self._slider(g, "CFG CLAP", 0.05, DEFAULT_RECIPE.cfg_clap,
                                     "cfg_clap",
                                     "How strongly to follow the prompt/reference (w_clap)")
        self.harmony = self._slider(g, "Harmony", 0.1, DEFAULT_RECIPE.harmony, "harmony",
                                    HARMONY_TIP)
        self.rhythm = self._slider(g, "Rhythm", 0.1, DEFAULT_RECIPE.rhythm, "rhythm",
                                   RHYTHM_TIP)
        self.set_guidance_available(False, False)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignLeft)
        self.steps = QSpinBox()
        _set_range(self.steps, "steps")
        self.steps.setValue(PARAMS["steps"].default)
        self.steps.setToolTip("Sampling steps (more: slower, cleaner)")
        self.steps.valueChanged.connect(lambda v: self._emit("steps", v, True))
        form.addRow("Steps", self.steps)
        seed_row = QHBoxLayout()
        self.seed = QSpinBox()
        _set_range(self.seed, "seed")
        self.seed.setValue(DEFAULT_RECIPE.seed)
        self.seed.setToolTip("Random seed: the same seed and settings give the same take")
        self.seed.valueChanged.connect(lambda v: self._emit("seed", v, True))
        self.seed_lock = QToolButton()
        self.seed_lock.setText("Lock")
        self.seed_lock.setCheckable(True)
        self.seed_lock.setToolTip("Lock the seed (otherwise a new one is drawn per generation)")
        self.seed_lock.toggled.connect(lambda v: self._emit("seed_locked", v, False))
        self.dice = QToolButton()
        self.dice.setText("Dice")
        self.dice.setToolTip("Roll a new seed")
        self.dice.clicked.connect(self.roll_seed)
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.seed_lock)
        seed_row.addWidget(self.dice)
        form.addRow("Seed", seed_row)
        self.takes = QSpinBox()
        _set_range(self.takes, "takes")
        self.takes.setValue(DEFAULT_RECIPE.takes)
        self.takes.setToolTip(f"How many takes to generate at once ({PARAMS['takes'].range_text})")
        self.takes.valueChanged.connect(lambda v: self._emit("takes", v, True))
        form.addRow("Takes", self.takes)
        self.duration = QDoubleSpinBox()
        _set_range(self.duration, "duration")
        self.duration.setSuffix(" s")
        self.duration.setValue(DEFAULT_RECIPE.duration)
        self.duration.setToolTip("Length when there is no context or loop region; "
                                 "the extension length for Continue")
        self.duration.valueChanged.connect(lambda v: self._emit("duration", v, True))
        form.addRow("Length", self.duration)
        self.length_rule = QLabel()
        self.length_rule.setObjectName("hint")
        self.length_rule.setWordWrap(True)
        form.addRow("", self.length_rule)
        g.addLayout(form)
        self.stereo_width = self._slider(g, "Stereo width", 0.05, PARAMS["stereo_width"].default,
                                         "stereo_width",
                                         "Pseudo-stereo: strength of the variation used as the "
                                         "second channel (0 = mono)")
        outer.addWidget(gg)

        # loop / variation
        gl = QGroupBox("Loop and variation")
        lv = QVBoxLayout(gl)
        lf = QFormLayout()
        self.loop_n = QSpinBox()
        _set_range(self.loop_n, "loop_n")
        self.loop_n.setValue(PARAMS["loop_n"].default)
        self.loop_n.setToolTip("Loop repetitions n: the output repeats n times (1 = off)")
        self.loop_n.valueChanged.connect(lambda v: self._emit("loop_n", v, True))
        lf.addRow("Loop repetitions", self.loop_n)
        lv.addLayout(lf)
        self.loop_frac = self._slider(lv, "s_loop", 0.05, PARAMS["loop_frac"].default, "loop_frac",
                                      "Fraction of the steps that are forced periodic")
        self.strength = self._slider(lv, "Variation strength", 0.05, PARAMS["strength"].default,
                                     "strength",
                                     "How far a variation may move from its source "
                                     "(1 = from scratch)")
        outer.addWidget(gl)

        # actions
        ga = QGroupBox("Actions")
        grid = QGridLayout(ga)
        grid.setSpacing(4)
        self.buttons: dict[str, QPushButton] = {}
        spec = [
            ("generate", "Generate", "Generate takes over the loop region, or the whole "
                                     "context (Ctrl+G)"),
            ("inpaint", "Inpaint region", "Regenerate the selected region of the selected lane "
                                          "(Ctrl+R)"),
            ("vary", "Vary", "A variation of the selected lane (Ctrl+Shift+V)"),
            ("continue", "Continue", "Extend the selected lane past its end"),
            ("regenerate", "Regenerate", "Run the selected take's recipe again, exactly"),
            ("use_context", "Use as context", "Make the selected take part of the context"),
            ("arrange", "Arrange…", "Generate a list of prompts in sequence, each one hearing "
                                    "the previous ones"),
        ]
        for i, (key, text, tip) in enumerate(spec):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _c=False, k=key: self.sig_action.emit(k))
            self.buttons[key] = b
            if key == "generate":
                b.setObjectName("primary")
                b.setMinimumHeight(30)
                grid.addWidget(b, 0, 0, 1, 2)
            else:
                grid.addWidget(b, 1 + (i - 1) // 2, (i - 1) % 2)
        # not in this panel's layout: the window pins it below the scrolling settings
        self.actions_box = ga
        outer.addStretch(1)
        self._quiet = False

    def _slider(self, layout, label, step, value, key, tip) -> ValueSlider:
        """A slider over the range engine.params gives the parameter `key`."""
        lo, hi = PARAMS[key].low, PARAMS[key].high
        row = QHBoxLayout()
        lab = QLabel(label)
        lab.setFixedWidth(110)
        lab.setToolTip(tip)
        s = ValueSlider(lo, hi, step, value, tip=tip)
        s.sig_value.connect(lambda v, m, k=key: self._emit(k, v, m))
        s.sig_released.connect(self.sig_merge_closed.emit)
        row.addWidget(lab)
        row.addWidget(s, 1)
        layout.addLayout(row)
        return s

    def _emit(self, key, value, merge):
        if not self._quiet:
            self.sig_recipe_changed.emit(key, value, merge)

    def roll_seed(self) -> None:
        self.seed.setValue(random.randint(int(PARAMS["seed"].low), int(PARAMS["seed"].high)))
        self.sig_merge_closed.emit()

    # ---- recipe
    def recipe(self) -> Recipe:
        return Recipe(
            prompt=self.prompt.toPlainText(),
            reference_track=self.reference.currentData(),
            mix=self.mix.value(),
            cfg_context=self.cfg_context.value(),
            cfg_clap=self.cfg_clap.value(),
            harmony=self.harmony.value(),
            rhythm=self.rhythm.value(),
            steps=self.steps.value(),
            seed=self.seed.value(),
            seed_locked=self.seed_lock.isChecked(),
            takes=self.takes.value(),
            stereo_width=self.stereo_width.value(),
            text_prior=self.text_prior.isChecked(),
            loop_n=self.loop_n.value(),
            loop_frac=self.loop_frac.value(),
            strength=self.strength.value(),
            duration=self.duration.value(),
        )

    def set_recipe(self, r: Recipe | None) -> None:
        r = r or DEFAULT_RECIPE
        self._quiet = True
        try:
            if self.prompt.toPlainText() != r.prompt:
                cur = self.prompt.textCursor().position()
                self.prompt.setPlainText(r.prompt)
                c = self.prompt.textCursor()
                c.setPosition(min(cur, len(r.prompt)))
                self.prompt.setTextCursor(c)
            self.reference.setCurrentIndex(max(0, self.reference.findData(r.reference_track)))
            for key in ("mix", "cfg_context", "cfg_clap", "harmony", "rhythm",
                        "stereo_width", "loop_frac", "strength"):
                getattr(self, key).set_value(getattr(r, key))
            self.steps.setValue(r.steps)
            self.seed.setValue(r.seed)
            self.seed_lock.setChecked(r.seed_locked)
            self.text_prior.setChecked(r.text_prior)
            self.takes.setValue(r.takes)
            self.loop_n.setValue(r.loop_n)
            self.duration.setValue(r.duration)
        finally:
            self._quiet = False

    def set_reference_choices(self, tracks: list[tuple[str, str]], current: str | None) -> None:
        self._quiet = True
        self.reference.clear()
        self.reference.addItem("— none —", None)
        for tid, name in tracks:
            self.reference.addItem(name, tid)
        self.reference.setCurrentIndex(max(0, self.reference.findData(current)))
        self._quiet = False

    def set_models(self, models: list[dict], current: str | None, name: str = "") -> None:
        self.model.clear()
        for m in models:
            if "error" in m:
                continue
            self.model.addItem(f"{m['name']} ({m['origin']})", m["path"])
        if current:
            i = self.model.findData(current)
            if i < 0:
                from pathlib import Path

                self.model.addItem(f"{name or Path(current).name} ({Path(current).name})",
                                   current)
                i = self.model.count() - 1
            self.model.setCurrentIndex(i)

    def set_device(self, text: str, ok: bool = True) -> None:
        self.device.setText(text)
        self.device.setStyleSheet("" if ok else "background: #8b919b;")

    def set_guidance_available(self, harmony: bool, rhythm: bool) -> None:
        """Whether the loaded model can steer towards the context's harmony (a harmony
        probe) and onsets (a rhythm probe too); a slider it cannot use is greyed out."""
        self.harmony.setEnabled(harmony)
        self.harmony.setToolTip(HARMONY_TIP if harmony else
                                "This model cannot steer its notes towards the context's "
                                "harmony (it has no harmony probe)")
        self.rhythm.setEnabled(rhythm)
        self.rhythm.setToolTip(RHYTHM_TIP if rhythm else
                               "This model cannot steer its onsets towards the context's "
                               "(it has no rhythm probe)")

    def set_text_prior_available(self, available: bool) -> None:
        """The loaded model has a text prior (engine.models.conditioning.prior) or not."""
        self.text_prior.setEnabled(available)
        self.text_prior.setToolTip(
            "Map the text prompt onto the sounds of the stems the model was trained on (its "
            "text prior): it follows the prompt's instrument more closely. Off: the prompt's "
            "raw text embedding." if available else
            "This model has no text prior: the prompt's text embedding is used as it is.")

    def set_length_rule(self, text: str, uses_length: bool) -> None:
        """Say which length Generate will use: the loop region's, the context's, or Length
        (shown dimmed when Generate does not use it; Continue always does)."""
        self.length_rule.setText(text)
        self.duration.setToolTip(
            "Length of a generation without context or loop region, and what Continue adds. "
            + ("" if uses_length else "Now: " + text))
        self.duration.setStyleSheet("" if uses_length else "color: #8b919b;")

    def set_busy(self, busy: bool) -> None:
        for b in self.buttons.values():
            b.setEnabled(not busy)

    # reference by drop
    def dragEnterEvent(self, ev):
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            ev.acceptProposedAction()
            self.sig_reference_file.emit(urls[0])
