"""``python -m nothing.scheduler``: the scheduler under its supervisor (see ``supervise.py``)."""

from .supervise import main

main()
