"""``python -m ahi_emulator``: same as the ``ahi-emulator`` command."""

from .cli import main

raise SystemExit(main())
