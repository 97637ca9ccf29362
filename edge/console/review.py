"""Rejects and their review: a station's reject records (:class:`edge.sinks.RejectStore`'s folder, on this
machine) listed for the gallery, and an operator's mark on one — "good part" (a false reject) or "defect
confirmed" — that copies the frame as captured into ``REVIEW/good/`` or ``REVIEW/defect/`` (``STATION_ID.png``),
folders ``edge-calibrate --good`` and ``edge-train``/``edge-eval`` take as they are. Every mark is a line in
``REVIEW/marks.jsonl`` (when, who, which station, the verdict): what the page counts since the last calibration.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import threading
from pathlib import Path

from edge.sinks import frame_path, reject_pictures

MARKS = ("good", "defect")
RECORD_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class ReviewError(Exception):
    """A review cannot be made; the message says why."""


class Rejects:
    """One station's reject records folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._listed: tuple[int, int, list[dict]] | None = None  # (folder mtime, count, records) last listed

    def latest(self, count: int) -> list[dict]:
        """The newest ``count`` records, newest first: id and the verdict as published (listed again only when
        the folder changed)."""
        try:
            changed = self.folder.stat().st_mtime_ns
        except OSError:
            return []
        if self._listed is not None and self._listed[:2] == (changed, count):
            return self._listed[2]
        records = self._list(count)
        self._listed = (changed, count, records)
        return records

    def _list(self, count: int) -> list[dict]:
        records = []
        for picture in reversed(reject_pictures(self.folder)):
            try:
                verdict = json.loads(picture.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # evicted meanwhile, or still being written
            records.append({"id": picture.stem, "verdict": verdict})
            if len(records) == count:
                break
        return records

    def picture(self, record: str) -> Path | None:
        """The record's explanation picture, if ``record`` names one in the folder."""
        path = self.folder / f"{record}.png"
        return path if RECORD_ID.fullmatch(record) and path.is_file() else None

    def record(self, record: str) -> tuple[Path, dict]:
        """The record's frame and verdict (ReviewError when it is gone or was never there)."""
        picture = self.picture(record)
        if picture is None or not frame_path(picture).is_file():
            raise ReviewError(f"reject {record!r} is not in {self.folder} (evicted, or its frame was not kept)")
        try:
            verdict = json.loads(picture.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReviewError(f"reject {record!r}: its verdict cannot be read: {exc}") from exc
        return frame_path(picture), verdict


class Review:
    """The review folder shared by the stations of one console."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def mark(self, station: str, rejects: Rejects, record: str, mark: str, by: str) -> dict:
        """Copy the record's frame under ``mark`` and log it; returns the log line."""
        if mark not in MARKS:
            raise ReviewError(f"mark {mark!r}: use one of {', '.join(MARKS)}")
        frame, verdict = rejects.record(record)
        name = f"{station.replace('/', '-')}_{record}.png"
        entry = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "station": station,
            "record": record,
            "mark": mark,
            "by": by,
            "file": f"{mark}/{name}",
            "verdict": {k: verdict.get(k) for k in ("seq", "run_id", "frame_id", "score", "threshold", "model")},
        }
        with self._lock:
            try:
                for other in MARKS:  # a record changes its mark: it lives in one folder only
                    (self.folder / other / name).unlink(missing_ok=True)
                (self.folder / mark).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(frame, self.folder / mark / name)
                with (self.folder / "marks.jsonl").open("a", encoding="utf-8") as log:
                    log.write(json.dumps(entry) + "\n")
            except OSError as exc:
                raise ReviewError(f"cannot write to the review folder {self.folder}: {exc.strerror}") from exc
        return entry

    def marks(self, station: str) -> dict[str, dict]:
        """The station's marks in force: record → its last mark entry."""
        latest: dict[str, dict] = {}
        try:
            lines = (self.folder / "marks.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return latest
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("station") == station:
                latest[entry.get("record")] = entry
        return latest

    def false_rejects_since(self, station: str, model: str | None, calibrated: str | None) -> list[dict]:
        """Rejects of ``model`` marked good after its calibration (ISO time ``calibrated``; all when None)."""
        return [
            entry
            for entry in self.marks(station).values()
            if entry["mark"] == "good"
            and entry["verdict"].get("model") == model
            and (calibrated is None or _after(entry["time"], calibrated))
        ]


def _after(time: str, than: str) -> bool:
    try:
        return datetime.datetime.fromisoformat(time) >= datetime.datetime.fromisoformat(than)
    except ValueError:
        return True
