"""Unit tests of ``spark_application.run_application``, the fleet Spark pipeline step's logic: create the
SparkApplication, poll its state, fail with the driver's error, delete it on timeout.

No cluster runs here: ``RecordingCustomObjectsApi`` stands in for ``kubernetes.client.CustomObjectsApi``, records
the calls our code makes and answers the states a test scripts (a test checks its methods have the real
client's signatures). What the Spark Operator does with the object is not tested here.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from pathlib import Path

import pytest
import yaml

from smart_energy.components.settings import Settings
from smart_energy.pipelines.spark_application import (
    GROUP, PLURAL, VERSION, SparkApplicationFailed, SparkApplicationTimeout, application_name,
    fleet_training_application, fleet_training_arguments, run_application,
)

REPO = Path(__file__).resolve().parents[2]
VERBS = {"create_namespaced_custom_object": "create", "get_namespaced_custom_object": "get",
         "delete_namespaced_custom_object": "delete"}


class RecordingCustomObjectsApi:
    """Records calls; ``get`` answers the scripted states in order, then repeats the last one."""

    def __init__(self, states: list[dict | None]):
        self.states, self.calls = list(states), []

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
        name = body["metadata"]["name"]
        self.calls.append(("create_namespaced_custom_object", group, version, namespace, plural, name))
        self.created = copy.deepcopy(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("get_namespaced_custom_object", group, version, namespace, plural, name))
        status = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {**self.created, **({"status": status} if status is not None else {})}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kwargs):
        self.calls.append(("delete_namespaced_custom_object", group, version, namespace, plural, name))
        return {}


class FakeClock:
    """time.monotonic and time.sleep for the poll loop, without waiting."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _state(state: str, **extra) -> dict:
    return {"applicationState": {"state": state, **extra.pop("app", {})}, **extra}


@pytest.fixture
def body() -> dict:
    return fleet_training_application(application_name("run-1"), fleet_training_arguments(), Settings())


def test_recording_api_has_the_real_clients_signatures():
    from kubernetes.client import CustomObjectsApi

    for method in VERBS:
        assert inspect.signature(getattr(RecordingCustomObjectsApi, method)) == \
            inspect.signature(getattr(CustomObjectsApi, method)), method


def test_creates_the_application_and_returns_when_completed(body):
    api, clock = RecordingCustomObjectsApi([None, _state("SUBMITTED"), _state("RUNNING"),
                                            _state("COMPLETED", executionAttempts=1)]), FakeClock()
    status = run_application(api, body, timeout_seconds=600, poll_seconds=15, clock=clock, sleep=clock.sleep)
    assert status["applicationState"]["state"] == "COMPLETED" and status["executionAttempts"] == 1
    where = (GROUP, VERSION, "smart-energy", PLURAL, "fleet-train-run-1")
    assert api.calls == [("create_namespaced_custom_object", *where)] + [("get_namespaced_custom_object", *where)] * 4
    assert api.created == body and api.created["spec"]["suspend"] is False
    assert clock.sleeps == [15, 15, 15]


def test_a_retried_step_waits_for_the_application_its_first_attempt_created(body):
    from kubernetes.client.exceptions import ApiException

    class AlreadyCreated(RecordingCustomObjectsApi):
        def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
            super().create_namespaced_custom_object(group, version, namespace, plural, body, **kwargs)
            raise ApiException(status=409, reason="AlreadyExists")

    api, clock = AlreadyCreated([_state("RUNNING"), _state("COMPLETED")]), FakeClock()
    assert run_application(api, body, timeout_seconds=600, clock=clock, sleep=clock.sleep)["applicationState"] == \
        {"state": "COMPLETED"}
    assert [c[0] for c in api.calls] == ["create_namespaced_custom_object"] + ["get_namespaced_custom_object"] * 2


def test_other_api_errors_are_not_swallowed(body):
    from kubernetes.client.exceptions import ApiException

    class Forbidden(RecordingCustomObjectsApi):
        def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kwargs):
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException, match="Forbidden"):
        run_application(Forbidden([None]), body, timeout_seconds=60)


@pytest.mark.parametrize("final", ["FAILED", "SUBMISSION_FAILED"])
def test_a_failed_application_fails_the_step_with_the_drivers_error(body, final):
    error = "driver container failed with ExitCode: 1, Reason: Error"
    api, clock = RecordingCustomObjectsApi([_state("RUNNING"), _state(
        final, app={"errorMessage": error}, driverInfo={"podName": "fleet-train-run-1-driver"})]), FakeClock()
    with pytest.raises(SparkApplicationFailed) as err:
        run_application(api, body, timeout_seconds=600, clock=clock, sleep=clock.sleep)
    assert f"{final}: {error}" in str(err.value)
    assert "kubectl -n smart-energy logs fleet-train-run-1-driver" in str(err.value)
    # left in place for its logs; the operator deletes it after timeToLiveSeconds
    assert not [c for c in api.calls if c[0] == "delete_namespaced_custom_object"]


def test_a_failure_without_a_message_still_names_the_application(body):
    api, clock = RecordingCustomObjectsApi([_state("FAILED")]), FakeClock()
    with pytest.raises(SparkApplicationFailed, match="fleet-train-run-1 FAILED: no error message"):
        run_application(api, body, timeout_seconds=60, clock=clock, sleep=clock.sleep)


def test_an_application_running_past_the_timeout_is_deleted(body):
    api, clock = RecordingCustomObjectsApi([_state("SUBMITTED"), _state("RUNNING")]), FakeClock()
    with pytest.raises(SparkApplicationTimeout, match="still RUNNING after 100 s"):
        run_application(api, body, timeout_seconds=100, poll_seconds=30, clock=clock, sleep=clock.sleep)
    assert api.calls[-1] == ("delete_namespaced_custom_object", GROUP, VERSION, "smart-energy", PLURAL,
                             "fleet-train-run-1")
    assert [c[0] for c in api.calls].count("delete_namespaced_custom_object") == 1
    assert clock.sleeps == [30, 30, 30, 30] and clock.now >= 100


def test_the_launchers_role_allows_exactly_the_calls_it_makes(body):
    """The calls run_application makes (success, failure, timeout) are the verbs of the Role that the
    pipeline's ServiceAccount is bound to, no more and no fewer."""
    made = set()
    for states, timeout, raised in (([_state("COMPLETED")], 60, None), ([_state("FAILED")], 60, SparkApplicationFailed),
                                    ([_state("RUNNING")], 0, SparkApplicationTimeout)):
        api, clock = RecordingCustomObjectsApi(states), FakeClock()
        with pytest.raises(raised) if raised else contextlib.nullcontext():
            run_application(api, body, timeout_seconds=timeout, clock=clock, sleep=clock.sleep)
        made |= {VERBS[c[0]] for c in api.calls}
    rbac = list(yaml.safe_load_all((REPO / "manifests" / "base" / "spark" / "rbac.yaml").read_text()))
    role = next(d for d in rbac if d["kind"] == "Role" and d["metadata"]["name"] == "smart-energy-spark-launcher")
    [rule] = role["rules"]
    assert (rule["apiGroups"], rule["resources"]) == ([GROUP], [PLURAL])
    assert set(rule["verbs"]) == made == {"create", "get", "delete"}
