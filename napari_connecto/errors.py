"""Typed errors raised by napari-connecto.

Every error derives from :class:`ConnectoError` and, where a builtin exception
fits, from that builtin too, so ``except FileNotFoundError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AmbiguousSourceError",
    "AnnotationError",
    "ConflictError",
    "EditConflictError",
    "EditError",
    "ImportFormatError",
    "SchemaVersionError",
    "StoreLockedError",
    "ChunkError",
    "ConnectoError",
    "MetadataError",
    "ReadOnlyError",
    "RegionError",
    "RemoteError",
    "RemoteTimeoutError",
    "ServerBusyError",
    "TruncatedBodyError",
    "SourceNotFoundError",
    "UnknownFormatError",
    "UnsafeDataError",
    "UnsupportedEncodingError",
]


class ConnectoError(Exception):
    """Base class of every error napari-connecto raises on purpose."""


class SourceNotFoundError(ConnectoError, FileNotFoundError):
    """A path or URL that does not exist.

    Parameters
    ----------
    source : str
        The missing path or URL, as the user gave it.
    detail : str, optional
        What exactly was missing, if more specific than ``source``.
    """

    def __init__(self, source: str, detail: str = "") -> None:
        self.source = source
        message = f"no such file or dataset: {source!r}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class UnknownFormatError(ConnectoError, ValueError):
    """No registered format recognised a source.

    Parameters
    ----------
    source : str
        The source that nobody could read.
    tried : sequence of str
        Names of the formats that were asked.
    """

    def __init__(self, source: str, tried: Sequence[str]) -> None:
        self.source = source
        self.tried = tuple(tried)
        super().__init__(f"cannot tell the format of {source!r}; tried: {', '.join(self.tried)}")


class MetadataError(ConnectoError, ValueError):
    """Metadata that is missing, malformed or out of range.

    Parameters
    ----------
    path : str
        The metadata file (or container path) at fault.
    field : str
        The field at fault; empty if the whole document is bad.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}")


class UnsupportedEncodingError(MetadataError):
    """Metadata naming a codec, dtype or layout this project cannot decode."""


class UnsafeDataError(MetadataError):
    """Metadata that would execute code (pickle) or escape the dataset root."""


class ChunkError(ConnectoError, OSError):
    """One chunk that could not be read or decoded (truncated, corrupt, unreadable).

    Parameters
    ----------
    source : str
        The dataset the chunk belongs to.
    scale : int
        Index of the scale (0 = finest).
    region : str
        The voxel region or chunk key that failed.
    problem : str
        What went wrong.
    """

    def __init__(self, source: str, scale: int, region: str, problem: str) -> None:
        self.source = source
        self.scale = scale
        self.region = region
        self.problem = problem
        super().__init__(f"{source} scale {scale} chunk {region}: {problem}")


class RegionError(ConnectoError, ValueError):
    """A requested region that is malformed, empty or too large to allocate."""


class ReadOnlyError(ConnectoError, PermissionError):
    """A write to a volume opened read-only, or to a format that cannot be written."""


class AmbiguousSourceError(ConnectoError, ValueError):
    """A container holding several volumes where exactly one was asked for.

    Parameters
    ----------
    source : str
        The container.
    candidates : sequence of str
        Sources that each name exactly one volume inside it.
    """

    def __init__(self, source: str, candidates: Sequence[str]) -> None:
        self.source = source
        self.candidates = tuple(candidates)
        super().__init__(
            f"{source!r} holds several volumes; name one of: {', '.join(self.candidates)}"
        )


class RemoteError(ConnectoError, OSError):
    """A request to a remote server that failed for good (after any retries).

    Parameters
    ----------
    url : str
        The URL requested (credentials are never part of it).
    problem : str
        What went wrong.
    status : int, optional
        The HTTP status, if the server answered.
    """

    def __init__(self, url: str, problem: str, *, status: int | None = None) -> None:
        self.url = url
        self.problem = problem
        self.status = status
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{url}: {code}{problem}")


class ServerBusyError(RemoteError):
    """The server stayed busy (429 / 503, e.g. DVID's ``throttle=true``) through every retry."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """The server did not connect or answer within the timeouts, through every retry."""


class TruncatedBodyError(RemoteError):
    """A response body shorter (or longer) than it must be, through every retry."""


class AnnotationError(ConnectoError):
    """Base class of the annotation store's errors."""


class ImportFormatError(AnnotationError, ValueError):
    """An import file that is malformed, naming the file, row and column at fault.

    Parameters
    ----------
    path : str
        The file being imported.
    problem : str
        What is wrong.
    row : int, optional
        0-based data row (``None`` when the whole file or a column is at fault).
    column : str, optional
        The column (or HDF5 dataset) at fault.
    """

    def __init__(
        self, path: str, problem: str, *, row: int | None = None, column: str | None = None
    ) -> None:
        self.path = path
        self.problem = problem
        self.row = row
        self.column = column
        where = [path]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


class ConflictError(AnnotationError, ValueError):
    """Records with the same id but different contents (never silently merged).

    Parameters
    ----------
    table : str
        ``"neurons"`` or ``"synapses"``.
    ids : sequence of int
        The conflicting ids (the first few are named in the message).
    detail : str
        Where the duplicates were found.
    """

    def __init__(self, table: str, ids: Sequence[int], detail: str) -> None:
        self.table = table
        self.ids = tuple(int(i) for i in ids)
        shown = ", ".join(str(i) for i in self.ids[:5])
        more = f" and {len(self.ids) - 5} more" if len(self.ids) > 5 else ""
        super().__init__(
            f"{len(self.ids)} conflicting {table} id(s) {detail}: {shown}{more}; nothing imported"
        )


class StoreLockedError(AnnotationError, TimeoutError):
    """The annotation database stayed locked by another writer through every retry."""


class SchemaVersionError(AnnotationError, RuntimeError):
    """A database written by a newer napari-connecto, or not an annotation store at all."""


class EditConflictError(AnnotationError, RuntimeError):
    """An edit or undo that would overwrite someone else's newer edit; nothing was changed.

    Parameters
    ----------
    problem : str
        What collided.
    edits : sequence of int
        Journal numbers of the newer edits in the way.
    """

    def __init__(self, problem: str, edits: Sequence[int] = ()) -> None:
        self.problem = problem
        self.edits = tuple(int(e) for e in edits)
        super().__init__(problem)


class EditError(AnnotationError, ValueError):
    """An edit that cannot be made as asked (unknown segment, empty split, ...)."""
