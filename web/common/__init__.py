"""What the JSON API (:mod:`kseg.web.api`) and the HTML pages (:mod:`kseg.web.pages`) share:
the contract's error body and codes (:mod:`.errors`), owner-scoped lookups (:mod:`.owned`),
keyset paging (:mod:`.paging`), the response models (:mod:`.schemas`) and the objects built
from rows (:mod:`.serialize`), and the OpenAPI operation decorator (:mod:`.apidoc`). Neither
surface imports the other."""
