"""Uploaded images: stored once per owner and content (SHA-256), deleted with everything made
from them, in the caller's transaction."""

from __future__ import annotations

import hashlib

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from kseg.shared.core.imageio import probe_image
from kseg.shared.store import quotas
from kseg.shared.store.models import GalleryImage, Image, Job, Result, ResultOutput, new_id, utcnow
from kseg.shared.store.runs import refresh_runs

_IMAGE_BY_SHA = select(Image).where(
    Image.owner_id == bindparam("b_owner"), Image.sha256 == bindparam("b_sha")
)


def store_image(
    session: Session,
    owner_id: str,
    data: bytes,
    filename: str | None,
    *,
    max_pixels: int | None = None,
    max_stored_bytes: int = 0,
) -> tuple[Image, bool]:
    """Store an upload, deduplicated per owner by SHA-256. Returns ``(image, created)``.

    With ``max_stored_bytes`` (> 0) a new image that would put the owner's uploads over it
    raises :class:`~shared.errors.QuotaExceededError` (an image stored already costs nothing).
    """
    digest = hashlib.sha256(data).hexdigest()
    existing = session.scalar(_IMAGE_BY_SHA, {"b_owner": owner_id, "b_sha": digest})
    if existing is not None:
        return existing, False
    quotas.check_stored_bytes(session, owner_id, len(data), max_stored_bytes)
    info = probe_image(data, max_pixels=max_pixels)
    values = {
        "id": new_id(),
        "owner_id": owner_id,
        "sha256": digest,
        "filename": _clean_filename(filename, info.format),
        "content_type": info.content_type,
        "format": info.format,
        "size_bytes": len(data),
        "width": info.width,
        "height": info.height,
        "data": data,
        "created_at": utcnow(),
    }
    # INSERT … ON CONFLICT DO NOTHING: concurrent uploads of the same bytes by one owner end
    # as one row, without a savepoint (which pysqlite would turn into an early commit).
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    inserted = session.execute(
        insert(Image).values(**values).on_conflict_do_nothing(index_elements=["owner_id", "sha256"])
    )
    created = inserted.rowcount == 1  # type: ignore[attr-defined]
    image = session.scalar(_IMAGE_BY_SHA, {"b_owner": owner_id, "b_sha": digest})
    if image is None:  # pragma: no cover - the row exists by now, ours or theirs
        raise RuntimeError("image row vanished during upload")
    return image, created


def delete_image(session: Session, image_id: str) -> int:
    """``DELETE /images/<id>``: the image, every job on it, their results and the image's
    place in galleries, in the caller's transaction; the gallery runs that had jobs on it
    are recounted (they may end now). Returns how many jobs went.

    A worker still running one of those jobs finds it gone when it reports progress or
    completes, and stores nothing (its completion is refused, as for a canceled job).
    Results are only ever shared by jobs on the same image, so none survives elsewhere.
    """
    # Lock the image row first: a worker completing a job takes its key-share lock (the
    # result's foreign key) before the job row's, so taking them in the same order cannot
    # deadlock with it; it waits for that completion to commit, then deletes its result too.
    session.execute(select(Image.id).where(Image.id == image_id).with_for_update())
    # Sorted: runs are recounted (and row-locked) in one order by every caller.
    run_ids = sorted(
        session.scalars(
            select(Job.run_id).distinct().where(Job.image_id == image_id, Job.run_id.is_not(None))
        )
    )
    results = select(Result.id).where(Result.image_id == image_id)
    # Jobs point at results and results at jobs' images: unlink, then delete children first.
    session.execute(
        update(Job)
        .where(Job.image_id == image_id)
        .values(result_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(ResultOutput).where(ResultOutput.result_id.in_(results)))
    session.execute(delete(Result).where(Result.image_id == image_id))
    removed = session.execute(delete(Job).where(Job.image_id == image_id))
    session.execute(delete(GalleryImage).where(GalleryImage.image_id == image_id))
    session.execute(delete(Image).where(Image.id == image_id))
    session.expire_all()
    refresh_runs(session, run_ids)
    return int(removed.rowcount)  # type: ignore[attr-defined]


def _clean_filename(filename: str | None, fmt: str) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return name or f"upload.{fmt.lower()}"


# ---------------------------------------------------------------- submit


__all__ = ["delete_image", "store_image"]
