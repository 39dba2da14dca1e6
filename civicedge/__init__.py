"""What every part of CivicEdge shares besides the wire protocol: the release version, structured logging
(:mod:`civicedge.log`) and message catalogs with locale formats (:mod:`civicedge.i18n`). The gateway (``edge``)
and the cloud (``cloud``) may both import it; it imports neither."""

__version__ = "0.1.0"
