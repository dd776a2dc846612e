"""Thumbnails of originals and outputs: made once, on their first request, then read back.

:func:`image_thumbnail` and :func:`output_thumbnail` answer the stored thumbnail's id (its
``ETag``) and content type, making and storing it first when it is not there yet; the caller
commits. Two requests racing for one thumbnail both make it, and one row is kept (``INSERT …
ON CONFLICT DO NOTHING`` on the unique key, then the row read back). The bytes are read with
:func:`thumbnail_data` only when a response needs them (an ``If-None-Match`` that matches
needs none).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from kseg.shared.core.thumbnail import make_thumbnail
from kseg.shared.store.db import fetch_blob
from kseg.shared.store.models import Image, ResultOutput, Thumbnail, new_id, utcnow
from kseg.shared.store.outputs import output_png


class StoredThumbnail(NamedTuple):
    id: str
    content_type: str


def _find(session: Session, column: Any, key: str, size: int) -> StoredThumbnail | None:
    row = session.execute(
        select(Thumbnail.id, Thumbnail.content_type).where(column == key, Thumbnail.size == size)
    ).first()
    return None if row is None else StoredThumbnail(row.id, row.content_type)


def _store(
    session: Session, column: Any, key: str, size: int, data: bytes, *, label_map: bool = False
) -> StoredThumbnail:
    thumb = make_thumbnail(data, size, label_map=label_map)
    values = {
        "id": new_id(),
        column.key: key,
        "size": size,
        "width": thumb.width,
        "height": thumb.height,
        "content_type": thumb.content_type,
        "data": thumb.data,
        "created_at": utcnow(),
    }
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert(Thumbnail)
        .values(**values)
        .on_conflict_do_nothing(index_elements=[column.key, "size"])
    )
    stored = _find(session, column, key, size)
    if stored is None:  # pragma: no cover - the row exists by now, ours or theirs
        raise RuntimeError("thumbnail row vanished while it was stored")
    return stored


def image_thumbnail(session: Session, image_id: str, size: int) -> StoredThumbnail | None:
    """The thumbnail of an original at ``size``, made now if needed; None: no such image."""
    found = _find(session, Thumbnail.image_id, image_id, size)
    if found is not None:
        return found
    data = fetch_blob(session, Image.data, id=image_id)
    if data is None:
        return None
    return _store(session, Thumbnail.image_id, image_id, size, data)


def output_thumbnail(
    session: Session, result_id: str, name: str, size: int
) -> StoredThumbnail | None:
    """The thumbnail of output ``name`` of a result at ``size``, made now if needed; None: the
    result has no such output. The ``labels`` map's thumbnail shows its regions in colour."""
    output_id = session.scalar(
        select(ResultOutput.id).where(
            ResultOutput.result_id == result_id, ResultOutput.name == name
        )
    )
    if output_id is None:
        return None
    found = _find(session, Thumbnail.output_id, output_id, size)
    if found is not None:
        return found
    data = output_png(session, result_id, name)
    if data is None:  # pragma: no cover - deleted between the two reads
        return None
    return _store(session, Thumbnail.output_id, output_id, size, data, label_map=name == "labels")


def thumbnail_data(session: Session, thumbnail_id: str) -> bytes | None:
    return fetch_blob(session, Thumbnail.data, id=thumbnail_id)


__all__ = ["StoredThumbnail", "image_thumbnail", "output_thumbnail", "thumbnail_data"]
