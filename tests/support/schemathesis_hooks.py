"""Loaded by the Schemathesis run (``SCHEMATHESIS_HOOKS``): the API's text bodies other than JSON
(a batch as NDJSON, a CSV upload) are sent as text."""

from __future__ import annotations

import schemathesis

schemathesis.serializer.alias(["application/x-ndjson", "application/csv"], "text/plain")
