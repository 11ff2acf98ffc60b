"""Export a session as a DAWproject file (Bitwig, Studio One, Cubase exchange format).

A .dawproject is a zip with `project.xml`, `metadata.xml` and the audio files. Every stem
becomes one audio track with one clip placed at time zero; the transport carries the tempo
and time signature. Validates against the published `Project.xsd`.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

from engine.document.export import export_stems
from engine.document.session import Session
from engine.fsutil import atomic_path, user_write

DAWPROJECT_VERSION = "1.0"


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: str) -> str:
    """`value` with every character XML 1.0 cannot hold (control characters, lone
    surrogates) replaced by a space, so a track named with a stray control character still
    gives a valid project.xml."""
    return _NOT_XML.sub(" ", str(value))


def _bool(v: bool) -> str:
    return "true" if v else "false"


def project_xml(session: Session, files: dict[str, str], app_version: str = "0.1.0",
                all_takes: bool = False) -> bytes:
    """The project.xml for `session`; `files` maps track id -> path inside the archive.
    Takes other than the chosen one of their group are muted unless `all_takes`."""
    tempo = float(session.tempo) if session.tempo else 120.0
    seconds_per_beat = 60.0 / tempo
    ids = iter(range(1, 1_000_000))

    def nid() -> str:
        return f"id{next(ids)}"

    proj = ET.Element("Project", version=DAWPROJECT_VERSION)
    ET.SubElement(proj, "Application", name="Riffwright", version=app_version)
    tr = ET.SubElement(proj, "Transport")
    ET.SubElement(tr, "Tempo", id=nid(), name="Tempo", unit="bpm", value=f"{tempo:g}",
                  min="20", max="999")
    num, den = session.meter
    ET.SubElement(tr, "TimeSignature", id=nid(), numerator=str(num), denominator=str(den))
    structure = ET.SubElement(proj, "Structure")
    master_track = ET.Element("Track", id=nid(), name="Master", contentType="audio notes",
                              loaded="true")
    master = ET.SubElement(master_track, "Channel", id=nid(), role="master", audioChannels="2",
                           solo="false")
    ET.SubElement(master, "Mute", id=nid(), name="Mute", value="false")
    ET.SubElement(master, "Volume", id=nid(), name="Volume", unit="linear", value="1.0",
                  min="0", max="2")
    track_ids: dict[str, str] = {}
    for t in session.tracks:
        if t.id not in files:
            continue
        tid = nid()
        track_ids[t.id] = tid
        te = ET.SubElement(structure, "Track", id=tid, name=xml_text(t.name),
                           color=xml_text(t.color or "#808080"),
                           contentType="audio", loaded="true")
        ch = ET.SubElement(te, "Channel", id=nid(), role="regular",
                           audioChannels=str(min(2, t.audio.shape[0])),
                           destination=master.get("id"), solo=_bool(t.solo))
        muted = t.mute or (not all_takes and not session.take_active(t))
        ET.SubElement(ch, "Mute", id=nid(), name="Mute", value=_bool(muted))
        ET.SubElement(ch, "Pan", id=nid(), name="Pan", unit="normalized", value="0.5",
                      min="0", max="1")
        ET.SubElement(ch, "Volume", id=nid(), name="Volume", unit="linear",
                      value=f"{t.gain:.6g}", min="0", max="2")
    structure.append(master_track)

    arr = ET.SubElement(proj, "Arrangement", id=nid())
    lanes = ET.SubElement(arr, "Lanes", id=nid(), timeUnit="beats")
    total_s = session.seconds
    total_beats = total_s / seconds_per_beat
    for t in session.tracks:
        if t.id not in track_ids:
            continue
        tl = ET.SubElement(lanes, "Lanes", id=nid(), track=track_ids[t.id])
        clips = ET.SubElement(tl, "Clips", id=nid())
        clip = ET.SubElement(clips, "Clip", time="0", duration=f"{total_beats:.9g}",
                             playStart="0", name=xml_text(t.name),
                             contentTimeUnit="seconds")
        audio = ET.SubElement(clip, "Audio", id=nid(), algorithm="raw",
                              channels=str(min(2, t.audio.shape[0])),
                              sampleRate=str(session.sample_rate), duration=f"{total_s:.9g}")
        ET.SubElement(audio, "File", path=xml_text(files[t.id]))
    ET.indent(proj)
    return ET.tostring(proj, encoding="utf-8", xml_declaration=True)


def metadata_xml(session: Session) -> bytes:
    md = ET.Element("MetaData")
    ET.SubElement(md, "Title").text = xml_text(session.title)
    ET.SubElement(md, "Comment").text = "Exported from Riffwright"
    ET.indent(md)
    return ET.tostring(md, encoding="utf-8", xml_declaration=True)


def export_dawproject(session: Session, path: str | os.PathLike,
                      all_takes: bool = False) -> Path:
    """Write `path` (.dawproject): every stem rendered from zero, full session length; the
    takes you do not hear are muted (all unmuted with `all_takes`)."""
    path = Path(path)
    if path.suffix != ".dawproject":
        path = path.with_suffix(".dawproject")
    with user_write(f"cannot export {path.name}"), tempfile.TemporaryDirectory() as td:
        path.parent.mkdir(parents=True, exist_ok=True)
        written = export_stems(session, td, include_mix=False)
        files = {t.id: f"audio/{p.name}" for t, p in zip(session.tracks, written, strict=True)}
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("project.xml", project_xml(session, files, all_takes=all_takes))
            z.writestr("metadata.xml", metadata_xml(session))
            for p in written:
                z.write(p, f"audio/{p.name}", compress_type=zipfile.ZIP_STORED)
    return path
