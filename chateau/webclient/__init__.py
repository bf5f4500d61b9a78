"""The browser client: static HTML, CSS and JavaScript served at ``/``.

There is no build step; the files in ``static/`` are what the browser gets.
"""

from __future__ import annotations

import os

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
