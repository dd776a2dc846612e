"""The submit form's images: a post's new files and the images kept from an earlier try,
turned into the signed-in owner's stored images plus the files that could not be used, and
why (issue 24: a form error must not throw the upload away, one bad file must not reject a
whole drop).

Every usable file is stored as soon as it arrives, as ``POST /api/v1/images`` stores it (the
signed-in owner's, deduplicated by content), even when the parameters are wrong: the form is
then shown again offering those images by id (``image_ids``), and the next post names them
instead of sending the bytes again. Those ids come from the browser, so they are only ever
looked up as the signed-in owner's: another owner's id and an unknown one are the same
"no longer available".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.datastructures import FileStorage

from kseg.shared.errors import ImageError, QuotaExceededError
from kseg.shared.settings import Settings
from kseg.shared.store.images import store_image
from kseg.shared.store.models import Image
from kseg.web.common.owned import plausible_id

#: The form field naming the images kept from an earlier try (hidden inputs, one per id).
KEEP_FIELD = "image_ids"
#: More ids than any upload could have made: the rest are not looked up.
MAX_KEPT = 500


@dataclass
class Uploads:
    """What a post's images came to."""

    images: list[Image] = field(default_factory=list)  # usable, kept first, one per image
    created: set[str] = field(default_factory=set)  # ids first stored by this post
    stored: bool = False  # this post stored something (the caller commits it)
    skipped: list[str] = field(default_factory=list)  # "name: why." per unusable file
    status: int = 422  # the first unusable file's status (415 not an image, 413 too big…)
    lost: int = 0  # kept ids that are not (or no longer) the owner's images

    def problem(self) -> tuple[str, int] | None:
        """The form's ``file`` error and its status, when a kept image went missing or no
        image is usable (each unusable file named); None when the images are fine."""
        said = []
        if self.lost:
            gone = "An image" if self.lost == 1 else f"{self.lost} images"
            said.append(f"{gone} from your last try is no longer available; choose it again.")
        if not self.images:
            said += self.skipped
            if not said:
                said.append("Choose at least one image (or drop it on the box).")
        if not said:
            return None
        return " ".join(said), 422 if self.lost or not self.skipped else self.status


def collect(
    session: Session,
    owner_id: str,
    kept_ids: Iterable[str],
    files: list[FileStorage],
    settings: Settings,
) -> Uploads:
    """The owner's kept images, then each new file stored (or skipped, with why)."""
    got = Uploads()
    got.images, got.lost = kept_images(session, owner_id, kept_ids)
    kept = {image.id for image in got.images}
    for part in files:
        try:
            image, created = store_image(
                session,
                owner_id,
                part.read(),
                part.filename,
                max_pixels=settings.max_image_pixels,
                max_stored_bytes=settings.quota_stored_bytes,
            )
        except (ImageError, QuotaExceededError) as exc:
            # Both are raised before anything is written: the other files stay stored.
            if not got.skipped:
                got.status = exc.status
            got.skipped.append(f"{part.filename or 'the file'}: {exc.message.rstrip('.')}.")
            continue
        got.stored = True
        if created:
            got.created.add(image.id)
        if image.id not in kept:  # chosen again after it was kept: one job, not two
            got.images.append(image)
    return got


def kept_images(session: Session, owner_id: str, ids: Iterable[str]) -> tuple[list[Image], int]:
    """The owner's images among ``ids``, in their order and once each, and how many of the
    ids named none of them (another owner's, deleted since, made up)."""
    wanted = list(dict.fromkeys(i for i in ids if i))[:MAX_KEPT]
    asked = [i for i in wanted if plausible_id(i)]
    found = (
        {
            image.id: image
            for image in session.scalars(
                select(Image).where(Image.owner_id == owner_id, Image.id.in_(asked))
            )
        }
        if asked
        else {}
    )
    return [found[i] for i in wanted if i in found], len(wanted) - len(found)


__all__ = ["KEEP_FIELD", "Uploads", "collect", "kept_images"]
