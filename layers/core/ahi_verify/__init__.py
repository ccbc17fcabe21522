"""Independent verification of AWS HealthImaging pixel data.

The flow, one module a step (event -> manifest -> image-set work -> frame check -> report/alert):

``plan``          the job output folder (manifest + ndjson, ``job_output``) -> a plan of image-set work
``work``          one work item (``work_items``) -> its part: frames listed (``metadata``), fetched and checked
                  concurrently (``image_set``, ``frame_check``, ``codestream``, ``ifrc``), compared with their
                  source files (``source_check``)
``merge``         plan + parts -> the typed job report (``report``; rendered by ``report_html``, ``alert``)
``job``           plan -> work -> merge in one process (the CLI); the application runs the same steps across
                  its functions (``app``)

Vocabulary and values shared by all: ``ids``, ``locations``, ``outcomes``, ``documents``; what the core needs
from outside: ``ports``. Ports and adapters: only the adapters ``healthimaging`` and ``s3_output``, the CLI
(``cli``) and the application (``app``) import boto3, botocore or Powertools; ruff's TID251 rule and
``tests/unit/test_boundaries.py`` keep it so. Everything else is testable offline.
"""

__version__ = "0.1.0"
