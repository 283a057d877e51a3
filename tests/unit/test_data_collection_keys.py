"""`data_collection` in Azure's spelling (`collections`, `sampling_rate`, `rolling_rate`,
`destination`) is the same `DataCollection` as the server's `collect_*` names; every bad
value fails preview naming the key the user wrote; the README's step 8 lines parse."""

from __future__ import annotations

import copy
import itertools
import re
import shlex
from typing import Any

import pytest

from infra import config as cfgmod
from scoring.server.config import DataCollection
from tests.support.walkthrough import readme_steps
from tests.unit.test_config import errors_for, stack_raw

pytestmark = pytest.mark.components

WHERE = "deployments[0].data_collection"


def parsed(data_collection: dict[str, Any]) -> DataCollection:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["deployments"][0]["data_collection"] = data_collection
    return cfgmod.parse(raw).deployments[0].data_collection


def problems(data_collection: dict[str, Any]) -> list[str]:
    raw = copy.deepcopy(stack_raw("dev"))
    raw["deployments"][0]["data_collection"] = data_collection
    return errors_for(raw)


def both(enabled: Any = True) -> dict[str, Any]:
    return {"model_inputs": {"enabled": enabled}, "model_outputs": {"enabled": enabled}}


def test_the_issues_azure_example_is_the_server_spelling() -> None:
    azure = parsed(
        {
            "collections": both(),
            "sampling_rate": 0.5,
            "rolling_rate": "hour",
            "destination": "s3://ml-endpoints-collected/",
        }
    )
    server = parsed(
        {
            "collect": True,
            "collect_sampling_rate": 0.5,
            "collect_rolling_rate": "hour",
            "collect_destination": "s3://ml-endpoints-collected/",
        }
    )
    assert azure == server
    assert (azure.collect, azure.collect_collections, azure.collect_sampling_rate) == (
        True,
        "both",
        0.5,
    )
    assert azure.collect_destination == "s3://ml-endpoints-collected/"


@pytest.mark.parametrize(
    ("collections", "collect", "which"),
    [
        (both(), True, "both"),
        (both("True"), True, "both"),  # Azure's own examples quote it: enabled: 'True'
        (both(False), False, "both"),
        ({"model_inputs": {"enabled": True}}, True, "model_inputs"),
        ({"model_outputs": {"enabled": "true"}}, True, "model_outputs"),
        (
            {"model_inputs": {"enabled": True}, "model_outputs": {"enabled": "False"}},
            True,
            "model_inputs",
        ),
        ({}, False, "both"),
        ({"features.v2": {"enabled": True}}, False, "both"),  # a script's own Collector
        ({**both(), "features": {"enabled": "TRUE"}}, True, "both"),
    ],
)
def test_collections_set_collect_and_which(
    collections: dict[str, Any], collect: bool, which: str
) -> None:
    found = parsed({"collections": collections})
    assert (found.collect, found.collect_collections) == (collect, which)
    assert found == parsed({"collect": collect, "collect_collections": which})


def test_sampling_rate_as_pulumi_stores_it() -> None:
    """`pulumi config set --path ... 0.5` stores the string '0.5' (only integers are numbers)."""
    assert parsed({"sampling_rate": "0.5"}).collect_sampling_rate == 0.5
    assert parsed({"sampling_rate": 1}).collect_sampling_rate == 1.0


@pytest.mark.parametrize(
    ("data_collection", "problem"),
    [
        (
            {"sampling_rate": 0.5, "collect_sampling_rate": 0.5},
            "sampling_rate: also set as collect_sampling_rate (the server's name); set one of "
            "the two",
        ),
        (
            {"rolling_rate": "day", "collect_rolling_rate": "day"},
            "rolling_rate: also set as collect_rolling_rate (the server's name); set one of "
            "the two",
        ),
        (
            {"destination": "pvc", "collect_destination": "pvc"},
            "destination: also set as collect_destination (the server's name); set one of the two",
        ),
        (
            {"collections": both(), "collect": True},
            "collections: also set as collect (the server's name); set one of the two",
        ),
        (
            {"collections": both(), "collect": True, "collect_collections": "both"},
            "collections: also set as collect and collect_collections (the server's name); set "
            "one of the two",
        ),
        (
            {"sampling_rate": 2},
            "sampling_rate: Input should be less than or equal to 1 (got 2)",
        ),
        (
            {"sampling_rate": "half"},
            "sampling_rate: Input should be a valid number, unable to parse string as a number "
            "(got 'half')",
        ),
        (
            {"rolling_rate": "week"},
            "rolling_rate: Input should be 'minute', 'hour' or 'day' (got 'week')",
        ),
        (
            {"destination": {"path": "azureml://datastores/x"}},
            "destination: Input should be a valid string (got {'path': 'azureml://datastores/x'})",
        ),
        (
            {"collections": True},
            "collections: must be a map: collection name -> {enabled: true or false} (got True)",
        ),
        (
            {"collections": {"model_inputs": True}},
            "collections.model_inputs: must be a map with enabled: true or false (got True)",
        ),
        (
            {"collections": {"model_inputs": {"enabled": "yes"}}},
            "collections.model_inputs.enabled: 'yes' is not accepted; accepted: true, false",
        ),
        (
            {"collections": {"model_outputs": {"enabled": 1}}},
            "collections.model_outputs.enabled: 1 is not accepted; accepted: true, false",
        ),
        (
            {"collections": {"model_inputs": {}}},
            "collections.model_inputs.enabled: required key is missing (true or false)",
        ),
        (
            {"collections": {"model_inputs": {"enabled": True, "sampling": 1}}},
            "collections.model_inputs.sampling: unknown key; accepted keys: enabled",
        ),
        (
            {"collections": {"model_inputs": {"enabled": True, "data": {"name": "d"}}}},
            "collections.model_inputs.data: Azure's per-collection storage is not supported: "
            "every collection ships to data_collection.destination; remove it",
        ),
        (
            {"collections": {"model_outputs": {"enabled": True, "client_id": "abc"}}},
            "collections.model_outputs.client_id: Azure's per-collection storage is not "
            "supported: every collection ships to data_collection.destination; remove it",
        ),
        (
            {"collections": {"request": {"enabled": True}}},
            "collections.request: Azure's payload-logging names are not used here: the request "
            "and response bodies are the collections model_inputs and model_outputs; enable those",
        ),
        (
            {"collections": {"response": {"enabled": True}}},
            "collections.response: Azure's payload-logging names are not used here: the request "
            "and response bodies are the collections model_inputs and model_outputs; enable those",
        ),
        (
            {"collections": {"in/out": {"enabled": True}}},
            "collections.in/out: is not a collection name (1-128 of A-Z, a-z, 0-9, '_', '.', "
            "'-'; as Collector(name=...))",
        ),
        (
            {"collections": {"features": {"enabled": False}}},
            "collections.features.enabled: false is not supported for a script's own "
            "collection: Collector(name='features').collect() always records here (sampled); "
            "remove the call, or this entry",
        ),
        (
            {"request_logging": {"capture_headers": ["x-user"]}},
            "request_logging: Azure's header capture is not supported: records carry the "
            "request id (xrequestid, correlationid), no headers; remove it",
        ),
    ],
)
def test_each_bad_key_is_named(data_collection: dict[str, Any], problem: str) -> None:
    assert problems(data_collection) == [f"{WHERE}.{problem}"]


def test_an_unknown_key_lists_both_spellings() -> None:
    assert problems({"sampling": 0.5}) == [
        f"{WHERE}.sampling: unknown key; accepted keys: collect, collect_collections, "
        "collect_destination, collect_max_file_bytes, collect_payload_max_bytes, "
        "collect_rolling_rate, collect_sampling_rate, collect_spool_max_bytes, collections, "
        "destination, rolling_rate, sampling_rate"
    ]


def test_the_components_models_take_azure_names_too() -> None:
    """`DataCollection` in a Pulumi program (components users) maps the same way."""
    azure = DataCollection.model_validate({"collections": both(), "destination": "pvc"})
    assert azure == DataCollection(collect=True, collect_destination="pvc")
    with pytest.raises(ValueError, match=r"rolling_rate: also set as collect_rolling_rate"):
        DataCollection.model_validate({"rolling_rate": "day", "collect_rolling_rate": "day"})


# -- the README's step 8, as `pulumi config set --path` would store it ---------------------------


def pulumi_path_value(text: str) -> Any:
    """`pulumi config set --path`'s typing: true/false are booleans, integers numbers, the
    rest strings (Pulumi's `config set` documentation)."""
    if text in ("true", "false"):
        return text == "true"
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def pulumi_path_set(raw: dict[str, Any], key: str, value: str) -> None:
    """Set `ml-endpoints:a[0].b.c` in RAW (the config namespace's keys) as `--path` does."""
    namespace, _, path = key.partition(":")
    assert namespace == cfgmod.PROJECT, key
    parts: list[str | int] = [
        int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path)
    ]
    node: Any = raw
    for part, following in itertools.pairwise(parts):
        if isinstance(part, int):
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(following, int) else {})
    node[parts[-1]] = pulumi_path_value(value)


def test_readme_step_8_lines_parse_to_collection_with_azure_keys() -> None:
    """Exactly the README's `pulumi config set --path` lines of step 8 (which the e2e
    walkthrough runs on a cluster) give green both collections, a PVC, minute files."""
    lines = [line for line in readme_steps()[8] if line.startswith("pulumi config set --path")]
    assert lines, "step 8 sets the collection with pulumi config set --path"
    raw = copy.deepcopy(stack_raw("dev"))
    keys = []
    for line in lines:
        match shlex.split(line):
            case ["pulumi", "config", "set", "--path", key, value]:
                prefix = f"{cfgmod.PROJECT}:deployments[0].data_collection."
                assert key.startswith(prefix), line
                keys.append(key.removeprefix(prefix).split(".")[0])
                pulumi_path_set(raw, key, value)
            case _:
                raise AssertionError(f"not a `pulumi config set --path KEY VALUE` line: {line}")
    assert set(keys) <= set(DataCollection.AZURE_KEYS), f"README uses Azure's names: {keys}"
    found = cfgmod.parse(raw).deployments[0].data_collection
    assert found == DataCollection(
        collect=True, collect_destination="pvc", collect_rolling_rate="minute"
    )
