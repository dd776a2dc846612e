"""The ``kseg`` command: the service (:mod:`.service`), the remote client (:mod:`.client`),
one image without a service (:mod:`.segment`)."""
