"""DVID servers: addresses and the HTTP client (volumes: :mod:`napari_connecto.backends.dvid`)."""

from napari_connecto.dvid.address import DvidAddress, parse_dvid
from napari_connecto.dvid.client import DvidClient

__all__ = ["DvidAddress", "DvidClient", "parse_dvid"]
