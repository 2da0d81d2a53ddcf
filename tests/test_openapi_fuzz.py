"""Property-based fuzz of the live API from its own OpenAPI document (schemathesis + hypothesis).

Every operation in ``openapi.json`` gets generated requests, valid ones and ones that
break the schema, sent through the hub's proxy with a normal user's token and with an
admin's.  No answer may be a 5xx, and every status must be one the document lists.
The number of examples is bounded so both runs take well under a minute; the
requests are counted, so a document that generates nothing fails the test.
"""

from __future__ import annotations

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from .helpers import wait_for_sync

pytestmark = pytest.mark.hub

EXAMPLES_PER_MODE = 25
# The fuzz user's run: a log and a few outputs for the run operations to find.
OUTPUTS = ("import os\nprint('line one')\nprint('line two')\n"
           "open(os.path.join(os.environ['EM_MODEL_DIR'], 'w.bin'), 'wb').write(b'x' * 100)\n")
# Operations an admin's fuzz leaves alone: they would act on other tests' runs.
# Deleting runs by random id would delete other tests' runs in the shared hub; the fuzz user's own run
# must stay for the operations after it.  Deletion has its own tests (test_tracking_live).
ADMIN_SKIPS = {"POST /runs/{run_id}/cancel", "POST /runs/{run_id}/priority", "DELETE /notebooks",
               "DELETE /runs/{run_id}", "DELETE /runs/{run_id}/checkpoints",
               # A model an admin made from another test's run would keep that run from being deleted.
               "POST /models", "DELETE /models/{ref}",
               # Endpoints are found by id too: an admin's fuzz would change or delete other tests' endpoints.
               "PATCH /endpoints/{endpoint}", "DELETE /endpoints/{endpoint}", "POST /endpoints/{endpoint}/stages",
               "POST /endpoints/{endpoint}/default-stage", "DELETE /endpoints/{endpoint}/stages/{stage}",
               "POST /endpoints/{endpoint}/stages/{stage}/resources",
               "DELETE /endpoints/{endpoint}/stages/{stage}/resources/{resource_id}",
               # The same for batch inferences (found by id): stopping or deleting other tests' jobs.
               "POST /batch-inferences/{batch_id}/stop", "DELETE /batch-inferences/{batch_id}",
               "POST /batch-inferences/{batch_id}/copy"}
USER_SKIPS = {"DELETE /runs/{run_id}"}


def load_schema(hub) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{hub.api_url}/openapi.json", timeout=30)
    schema.config.update(base_url=hub.api_url)
    # The token is ours to send: generated Authorization headers would only test the hub's refusal.
    schema.config.generation.update(with_security_parameters=False)
    return schema


def last_traceback(hub) -> str:
    """The newest traceback in the hub's log (the scheduler's stderr goes there), to say where a 5xx came from."""
    log = hub.log()
    start = log.rfind("Traceback (most recent call last)")
    return log[start:start + 3000] if start >= 0 else "(no traceback in the hub's log)"


def quiet_cluster(hub, admin) -> None:
    """No run is active, so ``?follow=1`` on any run the fuzz names ends at once."""
    wait_for_sync(lambda: admin("GET", "/queue").json()["runs"] == [], timeout=60, message="the queue to empty")


def fuzz(hub, token: str, skip: set[str] = frozenset(), own_run: int | None = None) -> Counter:
    """Send generated requests to every operation; returns how many went to each, by status.

    With ``own_run``, operations on a run are fuzzed a second time on that run, so their
    query parameters and bodies reach a run that exists instead of stopping at a 404.
    """
    schema = load_schema(hub)
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    sent: Counter = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:
        if operation.label in skip:
            continue
        pins = [{}] + ([{"run_id": own_run}] if own_run is not None and "{run_id}" in operation.path else [])
        for mode, pin in [(mode, pin) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) for pin in pins]:
            @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, derandomize=False,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pin or None))
            def check(case):
                response = case.call(session=session, timeout=30)
                sent[(operation.label, response.status_code)] += 1  # noqa: B023 - check() runs in this iteration
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} answered {response.status_code}: {response.text[:500]}\n"
                    f"{last_traceback(hub)}")
                case.validate_response(response, checks=[not_a_server_error, status_code_conformance])

            try:
                check()
            except Unsatisfiable:
                # Nothing of this operation can be made invalid (no parameters, no body).
                assert mode == GenerationMode.NEGATIVE, operation.label
    return sent


def test_fuzzing_the_api_as_a_user_finds_no_server_errors(hub, make_user):
    name, api = make_user("fuzz")
    _, admin = make_user("fuzzadmin", admin=True)
    run_id = api.submit({"t.py": OUTPUTS}, entry_point="t.py").json()["id"]
    api.wait_state(run_id, "COMPLETE")
    quiet_cluster(hub, admin)
    sent = fuzz(hub, api.session.headers["Authorization"].split()[1], skip=USER_SKIPS, own_run=run_id)
    assert sum(sent.values()) >= 300, sent
    assert {op for op, _ in sent} >= {"POST /runs", "GET /runs/{run_id}/logs", "POST /notebooks"}, sent
    assert ("GET /runs/{run_id}/logs", 200) in sent and ("GET /runs/{run_id}/outputs", 200) in sent, sent
    assert any(status < 400 for _, status in sent), "no generated request was accepted"
    assert api("GET", "/gpus").status_code == 200


def test_fuzzing_the_api_as_an_admin_finds_no_server_errors(hub, make_user):
    _, admin = make_user("fuzzroot", admin=True)
    quiet_cluster(hub, admin)
    sent = fuzz(hub, admin.session.headers["Authorization"].split()[1], skip=ADMIN_SKIPS)
    assert sum(sent.values()) >= 150, sent
    assert ("GET /admin/overview", 200) in sent
