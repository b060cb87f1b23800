"""`make dev`: the Dagster UI starts on the project and shows the asset graph from sources to 360 IDs."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from c360_pipelines.demo import write_demo

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_dagster_dev_serves_the_lineage_from_sources_to_360_ids(tmp_path: Path) -> None:
    write_demo(tmp_path, people=30)
    port = free_port()
    env = {**os.environ, "C360_CONFIG": str(tmp_path / "c360.yaml"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        query = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"
        nodes = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30).json()["data"]["assetNodes"]
        graph = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        assert graph["staged/crm"] == {"raw/crm"}
        assert "staged/loyalty" in graph["conformed/individual"]
        assert {"conformed/individual", "identity/match_model"} <= graph["identity/xref"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
