"""Enrolment from a USB stick: find the people on the stick, sync the gallery, report back.

The stick holds ``edgeface/people/<Person Name>/`` with each person's photos
and an optional ``person.yaml``. :func:`sync_stick` mirrors that folder into
the gallery with :func:`edgeface.enrolment.sync_gallery`, which replaces the
gallery file atomically, and returns a :class:`SyncReport`. The report is
logged and, when the stick is writable, written to ``edgeface/report.txt`` on
it. A stick mounted read-only is normal and only noted in the log.

A sync that would remove every enrolled person needs the marker file
``edgeface/REMOVE-EVERYONE`` on the stick (or ``allow_remove_everyone``), so
an empty or wrong stick never empties the gallery.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .enrolment import EnrolmentResult, EnrolmentRules, NothingEnrolledError, sync_gallery
from .errors import EdgefaceError
from .pipeline import Pipeline

log = logging.getLogger(__name__)

STICK_FOLDER = "edgeface"
PEOPLE_FOLDER = "people"
REPORT_FILE = "report.txt"
REMOVE_EVERYONE_MARKER = "REMOVE-EVERYONE"

# File statuses in the report, in the order they are listed for a person.
_FILE_ORDER = {"enrolled": 0, "unchanged": 1, "kept": 2, "skipped": 3, "ignored": 4}


class SyncError(EdgefaceError):
    """A sync failed as a whole, so the gallery was left unchanged. ``report`` contains the reason."""

    def __init__(self, message: str, report: SyncReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class FileEntry:
    """One file or folder of the stick's people folder and what enrolment did with it."""

    path: str
    status: str
    reason: str = ""
    person: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file's name inside its person's folder (the path for other entries)."""
        return self.path.split("/", 1)[1] if self.person is not None else self.path

    def line(self) -> str:
        """Return the entry as one report line, without indentation."""
        return f"{self.name}: {self.status}" + (f": {self.reason}" if self.reason else "")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "person": self.person, "status": self.status, "reason": self.reason, "warnings": self.warnings}


@dataclass
class SyncReport:
    """What one sync did: per-person actions, per-file statuses, and whether the gallery changed.

    ``status`` is ``ok`` (every file used or ignored), ``partial`` (the
    gallery was updated, but some files or people were skipped) or
    ``failed`` (the gallery was not changed, and ``error`` contains the reason).
    """

    source: str
    gallery: str
    started: datetime.datetime
    finished: datetime.datetime | None = None
    people_dir: str | None = None
    status: str = "failed"
    error: str = ""
    result: EnrolmentResult | None = None
    report_file: str | None = None
    report_note: str = ""
    files: list[FileEntry] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """Command-line exit status: 0 ok, 1 partial, 2 failed."""
        return {"ok": 0, "partial": 1}.get(self.status, 2)

    def counts(self) -> dict[str, int]:
        """Return the number of people per action."""
        counts: dict[str, int] = {}
        for person in self.result.people if self.result else []:
            counts[person.action] = counts.get(person.action, 0) + 1
        return counts

    def summary(self) -> str:
        """Return one line saying what happened to the gallery."""
        if self.status == "failed":
            return f"FAILED, the gallery was not changed: {self.error}"
        counts = self.counts()
        enrolled = sum(1 for p in self.result.people if p.used)
        parts = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
        skipped = sum(1 for f in self.files if f.status == "skipped")
        line = f"gallery updated: {enrolled} {'person' if enrolled == 1 else 'people'} enrolled ({parts})"
        if self.result.removed_everyone:
            line += ", every person removed as the REMOVE-EVERYONE marker asked"
        if skipped:
            line += f", {skipped} file{'s' if skipped != 1 else ''} skipped"
        return line

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-serialisable data (for the event log and MQTT)."""
        people = []
        for person in self.result.people if self.result else []:
            people.append(
                {
                    "person": person.person,
                    "display_name": person.display_name,
                    "action": person.action,
                    "photos_used": person.used,
                    "photos_embedded": person.embedded,
                    "photos_skipped": len(person.skipped),
                    "options": person.options.as_dict() if person.options is not None else None,
                    "options_error": person.options_error or None,
                    "error": person.error or None,
                }
            )
        return {
            "status": self.status,
            "summary": self.summary(),
            "error": self.error or None,
            "source": self.source,
            "people_dir": self.people_dir,
            "gallery": self.gallery,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": self.finished.isoformat(timespec="seconds") if self.finished else None,
            "gallery_saved": bool(self.result and self.result.saved),
            "people": people,
            "files": [entry.as_dict() for entry in self.files],
        }

    def as_text(self) -> str:
        """Return the report as plain text for people: a summary, then each person and their files."""
        lines = [
            "edgeface enrolment report",
            f"started:  {self.started:%Y-%m-%d %H:%M:%S %Z}".rstrip(),
            f"source:   {self.people_dir or self.source}",
            f"gallery:  {self.gallery}",
            f"result:   {self.summary()}",
        ]
        by_person: dict[str | None, list[FileEntry]] = {}
        for entry in self.files:
            by_person.setdefault(entry.person, []).append(entry)

        for person in self.result.people if self.result else []:
            lines.append("")
            lines.append(f"{person.display_name}: {_describe_person(person)}")
            if person.options_error:
                lines.append(f"  person.yaml: {person.options_error}")
            if person.error:
                lines.append(f"  error: {person.error}")
            elif person.options is not None and not person.options.is_default:
                lines.append(f"  access: {_describe_options(person.options)}")
            for entry in sorted(by_person.get(person.person, []), key=lambda e: (_FILE_ORDER.get(e.status, 9), e.path)):
                lines.append("  " + entry.line())
                for warning in entry.warnings:
                    lines.append(f"    warning: {warning}")

        other = by_person.get(None, [])
        if other:
            lines.append("")
            lines.append("Other entries of the people folder:")
            for entry in other:
                lines.append("  " + entry.line())
        if self.report_note:
            lines.append("")
            lines.append(self.report_note)
        return "\n".join(lines) + "\n"


def find_people_dir(source: str | Path) -> tuple[Path, Path]:
    """Return ``(root, people folder)`` for a stick's root or its ``edgeface/people`` folder.

    Raises :class:`EdgefaceError` when neither layout is found or when the
    ``edgeface`` folder is a symbolic link that leads off the stick.
    """
    source = Path(source)
    if not source.exists():
        raise EdgefaceError(f"source folder not found: {source} (give the mount point of the enrolment stick)")
    if not source.is_dir():
        raise EdgefaceError(f"{source} is a file: give the folder that holds {STICK_FOLDER}/{PEOPLE_FOLDER}/")
    candidate = source / STICK_FOLDER / PEOPLE_FOLDER
    if candidate.is_dir():
        root = source
    elif source.name == PEOPLE_FOLDER and source.parent.name == STICK_FOLDER:
        root, candidate = source.parent.parent, source
    else:
        raise EdgefaceError(
            f"no {STICK_FOLDER}/{PEOPLE_FOLDER}/ folder in {source}: on the stick, create "
            f"{STICK_FOLDER}/{PEOPLE_FOLDER}/<Person Name>/ and copy each person's photos into their folder"
        )
    real_root = Path(os.path.realpath(root))
    real_people = Path(os.path.realpath(candidate))
    if real_root not in real_people.parents:
        raise EdgefaceError(f"{candidate} is a symbolic link that leads off the stick: put the folder itself on the stick")
    return real_root, candidate


def sync_stick(
    source: str | Path,
    gallery_dir: str | Path,
    pipeline: Pipeline,
    rules: EnrolmentRules | None = None,
    *,
    allow_remove_everyone: bool = False,
    write_report: bool = True,
) -> SyncReport:
    """Sync the gallery at ``gallery_dir`` with the people on the stick at ``source``.

    ``source`` is the stick's root (holding ``edgeface/people/``) or that
    people folder itself. Every person folder is read, every photo checked
    against ``rules``, and the gallery replaced atomically once at the end.
    The report is logged and written to ``edgeface/report.txt`` on the stick
    unless ``write_report`` is False or the stick is read-only.

    Returns the report when the gallery was updated. Raises :class:`SyncError`,
    carrying the report, when nothing was changed: the stick has no people
    folder, no usable photo, would remove every enrolled person without the
    marker, or the gallery cannot be written.
    """
    report = SyncReport(source=str(source), gallery=str(gallery_dir), started=_now())
    stick_folder = None
    try:
        root, people_dir = find_people_dir(source)
        stick_folder = people_dir.parent
        report.people_dir = str(people_dir)
        remove_everyone = allow_remove_everyone or (stick_folder / REMOVE_EVERYONE_MARKER).is_file()
        report.result = sync_gallery(
            people_dir, gallery_dir, pipeline, rules, root=root, allow_remove_everyone=remove_everyone
        )
    except NothingEnrolledError as error:
        report.result = error.result
        _fail(report, str(error))
    except EdgefaceError as error:
        _fail(report, str(error))
    else:
        report.status = "partial" if _has_problems(report.result) else "ok"
    report.finished = _now()
    report.files = _file_entries(report.result)

    if write_report and stick_folder is not None:
        _write_to_stick(report, stick_folder)
    _log(report)
    if report.status == "failed":
        raise SyncError(report.error, report)
    return report


def _fail(report: SyncReport, message: str) -> None:
    report.status = "failed"
    report.error = message


def _has_problems(result: EnrolmentResult) -> bool:
    if any(status == "skipped" for _, status, _ in result.entries):
        return True
    return any(p.skipped or p.options_error or p.error or p.action == "not enrolled" for p in result.people)


def _file_entries(result: EnrolmentResult | None) -> list[FileEntry]:
    """Flatten a result into one entry per file, with its person's folder name as the path prefix."""
    if result is None:
        return []
    entries = [FileEntry(path=_readable(name), status=status, reason=reason) for name, status, reason in result.entries]
    for person in result.people:
        prefix = _readable(person.display_name) + "/"
        warnings: dict[str, list[str]] = {}
        for name, message in person.warnings:
            warnings.setdefault(name, []).append(message)
        for name, status in person.photos.items():
            shown = "enrolled" if status == "embedded" else status
            entries.append(FileEntry(prefix + _readable(name), shown, person=person.person, warnings=warnings.get(name, [])))
        for name, reason in person.skipped:
            entries.append(FileEntry(prefix + _readable(name), "skipped", reason, person=person.person))
        for name, reason in person.ignored:
            entries.append(FileEntry(prefix + _readable(name), "ignored", reason, person=person.person))
    return entries


def _readable(name: str) -> str:
    """Return a file name with bytes that are not UTF-8 shown as ``\\xNN``, so the report encodes as UTF-8."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _write_to_stick(report: SyncReport, stick_folder: Path) -> None:
    """Write ``report.txt`` into the stick's edgeface folder atomically; note in the report why not."""
    target = stick_folder / REPORT_FILE
    temporary = stick_folder / (REPORT_FILE + ".tmp")
    try:
        write_atomically(target, temporary, report.as_text().encode("utf-8", errors="backslashreplace"))
    except OSError as error:
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            report.report_note = f"The stick is read-only, so this report was not written to {target}."
        else:
            report.report_note = f"Writing this report to {target} failed: {error.strerror or error}."
        return
    report.report_file = str(target)


def write_atomically(target: Path, temporary: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` by writing ``temporary`` and renaming it.

    The temporary file is created fresh (an existing one, even a symbolic
    link, is removed first), so a link planted on the stick is never followed.
    Raises OSError when any step fails; ``target`` is then unchanged.
    """
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        folder = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _log(report: SyncReport) -> None:
    # Skipped files are the stick owner's to fix, so they are listed at INFO
    # and the summary line carries the level.
    level = {"ok": logging.INFO, "partial": logging.WARNING}.get(report.status, logging.ERROR)
    log.log(level, "sync source=%s gallery=%s: %s", report.people_dir or report.source, report.gallery, report.summary())
    for entry in report.files:
        if entry.status == "skipped":
            log.info("sync skipped %s: %s", entry.path, entry.reason)
        for warning in entry.warnings:
            log.info("sync warning %s: %s", entry.path, warning)
    if report.report_file:
        log.info("sync report written to %s", report.report_file)
    elif report.report_note:
        log.info("%s", report.report_note)


def _describe_person(person) -> str:
    cause = "person.yaml is invalid" if person.options_error else person.error
    if person.action == "kept":
        return f"kept as before ({person.used} photos), because {cause}"
    if person.action == "removed":
        return "removed" + (" (no usable photo left)" if person.skipped else "")
    if person.action == "not enrolled":
        return f"NOT ENROLLED: {cause}" if cause else "NOT ENROLLED: no usable photo"
    photos = f"{person.used} photo{'s' if person.used != 1 else ''} used ({person.embedded} embedded now)"
    return f"{person.action}, {photos}"


def _describe_options(options) -> str:
    if options.disabled:
        return "disabled (never let in)"
    windows = [f"{'/'.join(w['days'])} {w['from']}-{w['to']}" for w in (window.as_dict() for window in options.schedule)]
    return "only " + ", ".join(windows)


def _now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()
