"""The lookup API over a real demo project, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from c360_pipelines.api import create_app
from c360_pipelines.config import C360Config, ConfigError, load_config
from c360_pipelines.demo import write_demo
from c360_pipelines.runner import run_pipeline
from resources.warehouse import WarehouseResource
from tests.conftest import PG_ADMIN_URL

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            postgres_admin: sa.Engine) -> Iterator[C360Config]:
    """A 150-person demo run end to end, with an API key in its c360.yaml."""
    root = tmp_path_factory.mktemp("api")
    write_demo(root, people=150, seed=5)
    database = None
    warehouse = f"sqlite:///{root / 'warehouse.db'}"
    if request.param == "postgres":
        database = f"c360_test_{uuid.uuid4().hex[:12]}"
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{database}"'))
        warehouse = sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)
    config_file = root / "c360.yaml"
    text = config_file.read_text(encoding="utf-8").replace("warehouse: sqlite:///.c360/warehouse.db",
                                                            f"warehouse: {warehouse}")
    config_file.write_text(text + f"\napi:\n  keys: [{KEY}]\n", encoding="utf-8")
    config = load_config(config_file)
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
    yield config
    if database:
        with postgres_admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def client(project: C360Config) -> TestClient:
    return TestClient(create_app(project), raise_server_exceptions=False)


def someone(project: C360Config, sources: int = 2) -> dict[str, object]:
    """A person known to at least `sources` systems who has a phone and an email."""
    warehouse = WarehouseResource(url=project.warehouse)
    people = warehouse.read_frame("SELECT * FROM golden_profile WHERE phone IS NOT NULL AND email IS NOT NULL "
                                  "ORDER BY c360_id")
    chosen = people[people["sources"].str.count(",") >= sources - 1].iloc[0]
    return chosen.to_dict()


def test_a_profile_has_its_golden_values_contact_points_provenance_and_insights(
        client: TestClient, project: C360Config) -> None:
    person = someone(project)
    answer = client.get(f"/v1/profiles/{person['c360_id']}", headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert body["c360_id"] == person["c360_id"] and body["redirected"] is False
    assert body["profile"]["email"] == person["email"]
    assert {"email", "phone"} <= {p["kind"] for p in body["contact_points"]}
    assert body["provenance"]["email"]["rule"].startswith("most_frequent")
    assert set(body["insights"]) >= {"order_count", "lifetime_value", "open_tickets"}


def test_a_merged_id_answers_with_the_survivor_and_says_so(client: TestClient, project: C360Config) -> None:
    survivor = someone(project)["c360_id"]
    warehouse = WarehouseResource(url=project.warehouse)
    retired = "c360_00000000000000aa"
    with warehouse.transaction() as connection:
        connection.execute(sa.text("DELETE FROM ids WHERE c360_id = :id"), {"id": retired})
        warehouse.insert_rows("ids", pd.DataFrame([{"c360_id": retired, "status": "merged", "merged_into": survivor,
                                                    "first_seen": pd.Timestamp("2024-01-01"),
                                                    "last_changed": pd.Timestamp("2024-02-01")}]), connection)
    body = client.get(f"/v1/profiles/{retired}", headers=AUTH).json()
    assert (body["c360_id"], body["requested_id"], body["redirected"]) == (survivor, retired, True)
    assert body["merged_from"] == [retired]


def test_any_source_key_finds_its_person(client: TestClient, project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    record = warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref WHERE source = 'loyalty' "
                                  "ORDER BY source_record_id LIMIT 1").iloc[0]
    body = client.get(f"/v1/lookup/loyalty/{record['source_record_id']}", headers=AUTH).json()
    assert body["c360_id"] == record["c360_id"] and body["profile"]["c360_id"] == record["c360_id"]
    unknown = client.get("/v1/lookup/mainframe/123", headers=AUTH)
    assert unknown.status_code == 404
    assert "unknown source 'mainframe'; person sources: crm, loyalty, shop, support" in unknown.json()["error"]["message"]
    assert client.get("/v1/lookup/loyalty/LM-does-not-exist", headers=AUTH).status_code == 404


def test_search_standardises_a_phone_in_any_format_and_an_email_in_any_case(
        client: TestClient, project: C360Config) -> None:
    person = someone(project)
    national = str(person["phone"])[2:]
    typed = f"({national[:3]}) {national[3:6]} {national[6:]}"
    by_phone = client.get("/v1/search", params={"phone": typed}, headers=AUTH).json()
    assert by_phone["query"]["phone"] == person["phone"]
    assert person["c360_id"] in [c["c360_id"] for c in by_phone["candidates"]]
    by_email = client.get("/v1/search", params={"email": f"  {str(person['email']).upper()} "}, headers=AUTH).json()
    assert by_email["candidates"][0]["c360_id"] == person["c360_id"]
    both = client.get("/v1/search", params={"phone": typed, "name": f"{person['first_name']} {person['last_name']}"},
                      headers=AUTH).json()
    assert both["candidates"][0]["c360_id"] == person["c360_id"]
    assert both["candidates"][0]["matched"] == ["phone", "name"]


def test_search_without_any_criterion_is_a_400(client: TestClient) -> None:
    answer = client.get("/v1/search", headers=AUTH)
    assert answer.status_code == 400
    assert answer.json() == {"error": {"status": 400, "message": "give at least one of email, phone, name, postal_code"}}


def test_records_lists_every_linked_record_with_the_evidence(client: TestClient, project: C360Config) -> None:
    person = someone(project)
    body = client.get(f"/v1/profiles/{person['c360_id']}/records", headers=AUTH).json()
    assert len(body["records"]) == person["record_count"]
    assert {r["source"] for r in body["records"]} == set(str(person["sources"]).split(","))
    assert all("evidence" in r for r in body["records"])


def test_the_timeline_is_newest_first_and_paged(client: TestClient, project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    busy = warehouse.scalar("SELECT x.c360_id FROM engagement e JOIN xref x ON x.source = e.person_source AND "
                            "x.source_record_id = e.person_record_id GROUP BY x.c360_id ORDER BY COUNT(*) DESC, "
                            "x.c360_id LIMIT 1")
    first = client.get(f"/v1/profiles/{busy}/timeline", params={"page_size": 2}, headers=AUTH).json()
    second = client.get(f"/v1/profiles/{busy}/timeline", params={"page_size": 2, "page": 2}, headers=AUTH).json()
    items = first["items"] + second["items"]
    assert first["has_more"] and len(first["items"]) == 2
    times = [item["at"] for item in items]
    assert times == sorted(times, reverse=True)
    assert {item["kind"] for item in items} <= {"engagement", "event"}
    assert client.get(f"/v1/profiles/{busy}/timeline", params={"page_size": 500}, headers=AUTH).status_code == 400


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                                     {"Authorization": KEY}])
def test_a_request_without_a_valid_key_is_refused_with_a_json_401(client: TestClient, headers: dict[str, str],
                                                                 project: C360Config) -> None:
    answer = client.get(f"/v1/profiles/{someone(project)['c360_id']}", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["status"] == 401 and KEY not in answer.text


@pytest.mark.parametrize("path", ["/v1/profiles/c360_x'; DROP TABLE xref;--", "/v1/profiles/not-an-id",
                                  "/v1/profiles/%27%20OR%20%271%27%3D%271/records"])
def test_a_malformed_id_is_a_400(client: TestClient, path: str) -> None:
    answer = client.get(path, headers=AUTH)
    assert answer.status_code == 400 and "is not a 360 ID" in answer.json()["error"]["message"]


def test_injection_attempts_find_nothing_and_change_nothing(client: TestClient, project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    before = warehouse.count("xref")
    assert client.get("/v1/lookup/crm/1' OR '1'='1", headers=AUTH).status_code == 404
    assert client.get("/v1/lookup/crm%27%3B%20DROP%20TABLE%20xref%3B--/1", headers=AUTH).status_code == 404
    found = client.get("/v1/search", params={"name": "x' OR 1=1 --", "email": "' OR ''='"}, headers=AUTH).json()
    assert found["candidates"] == []
    assert warehouse.count("xref") == before


def test_an_internal_failure_is_a_500_without_details(project: C360Config, tmp_path: Path) -> None:
    broken = project.model_copy(update={"warehouse": f"sqlite:///{tmp_path / 'empty.db'}"})
    answer = TestClient(create_app(broken), raise_server_exceptions=False).get(
        "/v1/profiles/c360_0000000000000001", headers=AUTH)
    assert answer.status_code == 500
    assert answer.json() == {"error": {"status": 500, "message": "internal error; the server log has the details"}}


def test_keys_come_from_the_config_its_environment_variables_and_c360_api_key(
        project: C360Config, monkeypatch: pytest.MonkeyPatch) -> None:
    from c360_pipelines.config import ApiConfig, EnvSecret

    monkeypatch.setenv("TEAM_KEY", "team-secret")
    monkeypatch.setenv("C360_API_KEY", "ops-secret")
    configured = project.model_copy(update={"api": ApiConfig(keys=["literal-key", EnvSecret(env="TEAM_KEY")])})
    app = TestClient(create_app(configured))
    path = f"/v1/profiles/{someone(project)['c360_id']}"
    for key in ("literal-key", "team-secret", "ops-secret"):
        assert app.get(path, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    monkeypatch.delenv("C360_API_KEY")
    with pytest.raises(ConfigError, match="no API key"):
        create_app(project.model_copy(update={"api": ApiConfig()}))


def test_the_page_asks_for_a_key_then_shows_search_results(client: TestClient, project: C360Config) -> None:
    page = TestClient(client.app)
    assert page.get("/", follow_redirects=False).headers["location"] == "/login"
    assert "not valid" in page.post("/login", data={"key": "nope"}).text
    page.post("/login", data={"key": KEY})
    person = someone(project)
    html = page.get("/", params={"email": person["email"]}).text
    assert f"/people/{person['c360_id']}" in html
    card = page.get(f"/people/{person['c360_id']}").text
    assert str(person["full_name"]) in card and "Source records by system" in card
    assert page.get("/people/c360_ffffffffffffffff").status_code == 404
