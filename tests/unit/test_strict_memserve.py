"""memserve's own endpoints never silently ignore a field, and no integer too large for the
store gets past the route: both are 400s naming the field, never a 200 or a 500."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from serve_app.catalog import parse_csv

HUGE = "942017444057734440144553999365933588"
OVER_MAX = str(2**63)  # 19 digits, one above SQLite's largest integer


def error_of(response: Any, param: str, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    if code:
        assert error["code"] == code, error
    return error


def remember(client: TestClient, text: str, **metadata: Any) -> None:
    response = client.post("/v1/memories", json={"user": "alice", "text": text, "metadata": metadata})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "method, path, body, param",
    [
        ("post", "/v1/memories", {"user": "alice", "text": "hi", "colour": "red"}, "colour"),
        ("post", "/v1/memories", {"user": "alice", "memories": [{"text": "hi", "prio": 1}]}, "memories.0.prio"),
        ("post", "/v1/memories/search", {"user": "alice", "query": "hi", "top_k": 3}, "top_k"),
        ("patch", "/v1/memories/mem-x", {"user": "alice", "text": "hi", "txt": "typo"}, "txt"),
        ("post", "/v1/memories/consolidate", {"user": "alice", "force": True}, "force"),
        ("post", "/v1/catalog", {"products": [{"name": "Mug", "price": 1, "colour": "red"}]}, "products.0.colour"),
        ("post", "/v1/catalog", {"products": [{"name": "Mug", "price": 1}], "replace": True}, "replace"),
        ("post", "/v1/cache/clear", {"user": "alice", "scope": "all"}, "scope"),
    ],
)
def test_unknown_top_level_fields_are_400_naming_them(
    client: TestClient, method: str, path: str, body: dict[str, Any], param: str
) -> None:
    error = error_of(client.request(method.upper(), path, json=body), param, "unknown_parameter")
    assert param in error["message"]


@pytest.mark.parametrize(
    "filters, param",
    [
        ({"$where": "1"}, "filters.$where"),
        ({"metdata": {}}, "filters.metdata"),
        ({"metadata": {"kind": "food"}, "created_befor": 1.0}, "filters.created_befor"),
    ],
)
def test_unknown_filter_keys_are_400_not_unfiltered_results(
    client: TestClient, filters: dict[str, Any], param: str
) -> None:
    remember(client, "dinner at Nopa", kind="food")
    response = client.post("/v1/memories/search", json={"user": "alice", "query": "dinner", "filters": filters})
    error_of(response, param, "unknown_parameter")


def test_filter_metadata_stays_free_form(client: TestClient) -> None:
    remember(client, "dinner at Nopa", kind="food", **{"$where": "x", "metdata": 1})
    remember(client, "dinner with the board", kind="work")
    response = client.post("/v1/memories/search", json={
        "user": "alice", "query": "dinner", "filters": {"metadata": {"$where": "x", "metdata": 1}}})
    assert response.status_code == 200, response.text
    assert [r["text"] for r in response.json()["results"]] == ["dinner at Nopa"]


@pytest.mark.parametrize("cursor", [HUGE, OVER_MAX, "1" * 20, "٣"])
def test_huge_cursor_is_400_not_500(client: TestClient, cursor: str) -> None:
    remember(client, "lives in Oslo")
    error_of(client.get("/v1/memories", params={"user": "alice", "cursor": cursor}), "cursor")


def test_largest_cursor_is_accepted(client: TestClient) -> None:
    remember(client, "lives in Oslo")
    response = client.get("/v1/memories", params={"user": "alice", "cursor": str(2**63 - 1)})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("min_seq", [int(HUGE), 2**63])
def test_huge_min_seq_is_400_not_500(client: TestClient, min_seq: int) -> None:
    response = client.post("/v1/memories/search", json={"user": "alice", "query": "hi", "min_seq": min_seq})
    error_of(response, "min_seq")


def test_huge_k_is_400(client: TestClient) -> None:
    error_of(client.post("/v1/memories/search", json={"user": "alice", "query": "hi", "k": int(HUGE)}), "k")


def test_openapi_states_the_cursor_and_min_seq_bounds(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    params = schema["paths"]["/v1/memories"]["get"]["parameters"]
    cursor = next(p for p in params if p["name"] == "cursor")["schema"]
    cursors = Draft202012Validator(cursor)
    assert cursors.is_valid(str(2**63 - 1)) and cursors.is_valid("0" * 19)
    assert not cursors.is_valid(str(2**63)) and not cursors.is_valid("1" * 20)
    min_seq = schema["components"]["schemas"]["SearchMemoriesRequest"]["properties"]["min_seq"]
    bound = next(option for option in min_seq["anyOf"] if option["type"] == "integer")
    # int64's range as `format: int64`: a `maximum` of 2**63 - 1 is read as a double, i.e. 2**63.
    assert bound == {"type": "integer", "minimum": 0, "format": "int64"}


def test_csv_catalog_ignores_extra_columns() -> None:
    products = parse_csv(b"Name,price,SKU,stock\nMug,12.5,M-1,40\n")
    assert [(p.name, p.price) for p in products] == [("Mug", 12.5)]
