#!/usr/bin/env bash
# Dev evaluation on sources training never sees, judged by the independent judge.
#
# Usage: tools/dev_eval.sh STAGE...     (stages run in the order given; `all` = every stage)
#   install   make the judge's venv at $JUDGE_VENV (pip; needs the judge's requirements.txt)
#   cases     build the dev cases into $CASES from the openttd-openmsx MIDI files rendered with
#             the TimGM6mb SoundFont (Debian packages; `apt-get install fluidsynth
#             openttd-openmsx timgm6mb-soundfont` first, as root)
#   generate  $TAKES takes per chosen case with `riffwright generate` into $GEN/<case>/
#             (resumable: a case whose folder is complete is skipped)
#   judge     run the judge on the generated cases; summary in $OUT/summary.md
#   eval      run `riffwright eval model` on the same takes (its own note-level figures)
#
# Settings (environment variables; paths may be relative to where you run it):
#   JUDGE_DIR   the judge's folder (judge.py, build_cases.py)    default: ../shared/judge
#   JUDGE_VENV  the judge's virtual environment                  default: .judge
#   CASES       case folder                                      default: devcases
#   GEN         generated takes, one folder per case; the judge reads every case in it, so
#               give each set and model its own     default: devgen (SET=check: checkgen)
#   OUT         judge output                    default: devjudge (SET=check: checkjudge)
#   EVAL_OUT    `riffwright eval` output          default: deveval (SET=check: checkeval)
#   PER_ROLE    cases per role (0 = all); chosen from the sorted case names of each role at an
#               even stride (every k-th, k = count // PER_ROLE), so the choice is reproducible
#               default: 15
#   SET         `dev`: the PER_ROLE chosen cases; `check`: every other case of the role, the
#               second set that confirms a choice made on the first     default: dev
#   TAKES       takes per case                                   default: 2
#   STEPS       sampler steps (empty = the bundle's default)     default: empty
#   MODEL       bundle folder (empty = the default bundle)       default: empty
#   PROMPT      the prompt: `role` (the case's role, e.g. "bass"), `none` (context only: see
#               what the model picks by itself), or any text               default: role
#   GRID        the beat grid given to the model: `none`, `midi` (the tempo and metre of the
#               case's context.mid, as a musician's session knows them; cases start on a bar
#               line) or `auto` (estimated from the context audio)          default: none
#   ROLES       the roles generated: `both`, `bass` or `drums`     default: both
#   EXTRA       more `riffwright generate` options, e.g. "--cfg-context 12" (a sweep; say in
#               the report that a setting was chosen on these cases)         default: empty
#   RIFFWRIGHT  the command that runs Riffwright's CLI           default: riffwright
#               (from a checkout: "env PYTHONPATH=$PWD .venv/bin/python -m engine.cli")
#   NICE        niceness for the long stages                      default: 10
#   MIDI_DIR, SOUNDFONT  override the case sources (defaults: the Debian packages' files)
#
# The judge is a yardstick, never a training signal: the dataset builder refuses these sources
# (engine/training/dataset/render.py RESERVED_SOURCES), and nothing here feeds training.
set -euo pipefail

JUDGE_DIR=${JUDGE_DIR:-../shared/judge}
JUDGE_VENV=${JUDGE_VENV:-.judge}
CASES=${CASES:-devcases}
SET=${SET:-dev}
case "$SET" in dev|check) ;; *) echo "dev_eval: SET must be dev or check" >&2; exit 2 ;; esac
# the judge reads every case in GEN: each set has its own folders unless told otherwise
GEN=${GEN:-${SET}gen}
OUT=${OUT:-${SET}judge}
EVAL_OUT=${EVAL_OUT:-${SET}eval}
PER_ROLE=${PER_ROLE:-15}
TAKES=${TAKES:-2}
STEPS=${STEPS:-}
MODEL=${MODEL:-}
RIFFWRIGHT=${RIFFWRIGHT:-riffwright}
PROMPT=${PROMPT:-role}
GRID=${GRID:-none}
ROLES=${ROLES:-both}
EXTRA=${EXTRA:-}
NICE=${NICE:-10}

die() { echo "dev_eval: $*" >&2; exit 2; }

stage_install() {
    [ -f "$JUDGE_DIR/requirements.txt" ] || die "no judge at $JUDGE_DIR (set JUDGE_DIR)"
    python3 -m venv "$JUDGE_VENV"
    "$JUDGE_VENV/bin/pip" install -r "$JUDGE_DIR/requirements.txt"
    # basic-pitch last and without dependencies: its metadata asks for TensorFlow, which the
    # judge never uses (it runs the ONNX model); see the judge's README
    "$JUDGE_VENV/bin/pip" install --no-deps basic-pitch==0.4.0
}

package_file() {  # package_file PACKAGE SUFFIX: the first file of a Debian package with SUFFIX
    command -v dpkg >/dev/null || die "no dpkg: set MIDI_DIR and SOUNDFONT"
    dpkg -L "$1" 2>/dev/null | grep -m1 "$2\$" || die "package $1 is not installed"
}

stage_cases() {
    command -v fluidsynth >/dev/null || die "fluidsynth is not installed"
    local midi=${MIDI_DIR:-} sf=${SOUNDFONT:-}
    [ -n "$midi" ] || midi=$(dirname "$(package_file openttd-openmsx '\.mid')")
    [ -n "$sf" ] || sf=$(package_file timgm6mb-soundfont '\.sf2')
    nice -n "$NICE" "$JUDGE_VENV/bin/python" "$JUDGE_DIR/build_cases.py" \
        --midi "$midi" --soundfont "$sf" --out "$CASES"
}

chosen_role() {  # chosen_role ROLE: that role's chosen case names, in sorted order
    [ -d "$CASES" ] || die "no cases at $CASES (run the cases stage)"
    local names count k
    names=$(for d in "$CASES"/*/; do
                if [ -f "$d/role.txt" ] && [ "$(cat "$d/role.txt")" = "$1" ]; then
                    basename "$d"
                fi
            done | LC_ALL=C sort)
    [ -n "$names" ] || return 0
    count=$(printf '%s\n' "$names" | wc -l)
    if [ "$PER_ROLE" -le 0 ] || [ "$PER_ROLE" -ge "$count" ]; then k=1
    else k=$((count / PER_ROLE)); fi
    # SET=check: the complement, so that a setting chosen on one set is confirmed on another
    printf '%s\n' "$names" | awk -v k="$k" -v n="$PER_ROLE" -v set="$SET" \
        '{ pick = (NR - 1) % k == 0 && (n <= 0 || ++c <= n) }
         set == "check" ? !pick : pick'
}

chosen_cases() {  # the chosen cases, bass and drums alternating (a partial run covers both)
    case "$ROLES" in
        both) paste -d '\n' <(chosen_role bass) <(chosen_role drums) | grep -v '^$' || true ;;
        bass|drums) chosen_role "$ROLES" ;;
        *) die "ROLES must be both, bass or drums" ;;
    esac
}

midi_grid() {  # midi_grid FILE: "BPM N/D" of a MIDI file's first tempo and time signature
    "$JUDGE_VENV/bin/python" - "$1" <<'PY'
import sys
import pretty_midi
pm = pretty_midi.PrettyMIDI(sys.argv[1])
_, tempi = pm.get_tempo_changes()
ts = pm.time_signature_changes
print(f"{tempi[0] if len(tempi) else 120.0:.3f}",
      f"{ts[0].numerator}/{ts[0].denominator}" if ts else "4/4")
PY
}

stage_generate() {
    local c d tmp opts=()
    [ -n "$STEPS" ] && opts+=(--steps "$STEPS")
    [ -n "$MODEL" ] && opts+=(--model "$MODEL")
    # shellcheck disable=SC2206  # EXTRA is a list of options, split on spaces
    [ -n "$EXTRA" ] && opts+=($EXTRA)
    mkdir -p "$GEN"
    for c in $(chosen_cases); do
        d="$CASES/$c"
        if [ "$(find "$GEN/$c" -maxdepth 1 -name '*.wav' 2>/dev/null | wc -l)" -ge "$TAKES" ]; then
            continue
        fi
        # into a temporary folder first, so an interrupted case is never judged half-made
        tmp="$GEN/.tmp-$c"
        rm -rf "$tmp"
        echo "$(date +%T) generate $c"
        prompt=()
        case "$PROMPT" in
            role) prompt=(--prompt "$(cat "$d/role.txt")") ;;
            none) ;;
            *) prompt=(--prompt "$PROMPT") ;;
        esac
        grid=()
        case "$GRID" in
            none) ;;
            auto) grid=(--tempo auto) ;;
            midi) read -r bpm meter < <(midi_grid "$d/context.mid")
                  grid=(--tempo "$bpm" --meter "$meter" --downbeat 0) ;;
            *) die "GRID must be none, midi or auto" ;;
        esac
        # shellcheck disable=SC2086  # RIFFWRIGHT may be a command with arguments
        nice -n "$NICE" $RIFFWRIGHT generate --context "$d/context.flac" \
            "${prompt[@]}" "${grid[@]}" --takes "$TAKES" --seed 0 --quiet \
            "${opts[@]}" --out "$tmp"
        rm -rf "${GEN:?}/$c"
        mv "$tmp" "$GEN/$c"
    done
}

stage_judge() {
    nice -n "$NICE" "$JUDGE_VENV/bin/python" "$JUDGE_DIR/judge.py" --cases "$CASES" \
        --generated "$GEN" --out "$OUT" --cache "$OUT/cache"
    echo "judge summary: $OUT/summary.md"
}

stage_eval() {
    # Riffwright's own note-level figures on the same takes: `eval model` reads the judge's
    # case layout and, with --generated, measures the takes in $GEN (only the cases that have
    # them) instead of generating again
    local opts=()
    [ -n "$MODEL" ] && opts+=(--model "$MODEL")
    # shellcheck disable=SC2086  # RIFFWRIGHT may be a command with arguments
    nice -n "$NICE" $RIFFWRIGHT eval model --contexts "$CASES" --generated "$GEN" \
        --seconds 20 --limit 100000 "${opts[@]}" --out "$EVAL_OUT"
    echo "riffwright eval report: $EVAL_OUT/report.md"
}

[ $# -gt 0 ] || { sed -n '2,14p' "$0"; exit 2; }
for stage in "$@"; do
    case "$stage" in
        all) stage_install; stage_cases; stage_generate; stage_judge; stage_eval ;;
        install|cases|generate|judge|eval) "stage_$stage" ;;
        list) chosen_cases ;;
        *) die "unknown stage $stage (install, cases, generate, judge, eval, list, all)" ;;
    esac
done
