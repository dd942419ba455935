"""The bundled demo assets: ``target.png`` and ``stamps/`` (made by ``make_assets.py``)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
"""Folder of the bundled assets."""
