"""The serving runtime: files run by the runtime's own interpreter as model servers and batch inference jobs.

Only ``artifacts`` is imported by the platform; the other modules run in the runtime (see ``runtime_jobs``).
"""
