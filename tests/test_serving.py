"""The HTTP service: endpoints, validation, fallback, reload under load, command line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from companion import export, serving
from companion import recommenders as rec


@pytest.fixture(scope="module")
def artifacts(interactions, tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifacts")
    blend = serving.default_model().fit(interactions)
    pop = rec.Popularity().fit(interactions)
    return {"blend": export.save(blend, folder / "blend", data=interactions, name="blend"),
            "pop": export.save(pop, folder / "pop", data=interactions, name="pop"),
            "model": blend}


@pytest.fixture
def service(artifacts):
    return serving.RecommendationService.from_artifact(artifacts["blend"])


def test_import_is_light():
    code = ("import sys, companion.serving; "
            "print(any(m in sys.modules for m in ('tensorflow', 'fastapi', 'uvicorn')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_endpoints(service, artifacts, interactions):
    model = artifacts["model"]
    customer = int(interactions["user_id"].iloc[0])
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        assert url.startswith("http://127.0.0.1:")
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["items"] == len(model.items_)
        version = health["version"]
        assert version.startswith("blend-")

        one = client.get(f"/recommend/{customer}", params={"k": 5})
        assert one.status_code == 200
        body = one.json()
        assert body["version"] == version and body["fallback"] is False
        assert body["items"] == list(model.recommend([customer], 5, exclude_seen=False)[0])

        unknown = client.get("/recommend/99999999").json()
        assert unknown["fallback"] is True and len(unknown["items"]) == serving.DEFAULT_K
        assert unknown["items"] == list(model.recommend([99999999], 10, exclude_seen=False)[0])

        batch = client.post("/recommend", json={"customers": [customer, "99999999"], "k": 3})
        assert batch.status_code == 200
        results = batch.json()["results"]
        assert [r["fallback"] for r in results] == [False, True]
        assert results[0]["items"] == body["items"][:3]
        seen = client.get(f"/recommend/{customer}", params={"exclude_seen": True}).json()
        bought = set(interactions.loc[interactions["user_id"] == customer, "item_id"])
        assert not bought & set(seen["items"])


@pytest.mark.parametrize("method, path, payload, word", [
    ("get", "/recommend/abc", None, "customer must be an integer"),
    ("get", "/recommend/17850?k=0", None, "k"),
    ("get", "/recommend/17850?k=abc", None, "k"),
    ("get", "/recommend/17850?k=101", None, "k"),
    ("post", "/recommend", {"customers": []}, "customers"),
    ("post", "/recommend", {"k": 3}, "customers: Field required"),
    ("post", "/recommend", {"customers": [1.5]}, "customers"),
    ("post", "/recommend", {"customers": [1], "k": -1}, "k"),
    ("post", "/recommend", {"customers": list(range(serving.MAX_BATCH + 1))}, "customers"),
    ("post", "/reload", {"artifact": "/nonexistent"}, "artifact"),
])
def test_bad_requests_name_the_problem(service, method, path, payload, word):
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        response = client.request(method.upper(), path, json=payload)
        assert 400 <= response.status_code < 500, response.text
        body = response.json()
        assert word in body["error"] and body["version"] == service.served.version_id
        assert client.get("/health").status_code == 200  # still serving


def test_k_beyond_catalogue(interactions):
    few = interactions[interactions["item_id"].isin(interactions["item_id"].unique()[:5])]
    service = serving.RecommendationService(rec.Popularity().fit(few),
                                            export.model_version(few, "tiny"))
    with pytest.raises(serving.RequestError, match="exceeds the catalogue of 5 items"):
        service.recommend([1], k=6)


def test_reload_under_load_drops_nothing(service, artifacts, interactions):
    customers = [int(c) for c in interactions["user_id"].unique()[:20]]
    old = service.served.version_id
    failures, versions, counts = [], set(), []
    stop = threading.Event()

    def hammer(client):
        n = 0
        while not stop.is_set() or n < 20:
            r = client.get(f"/recommend/{customers[n % len(customers)]}")
            if r.status_code != 200:
                failures.append(r.status_code)
            else:
                versions.add(r.json()["version"])
            n += 1
        counts.append(n)

    with serving.serve_in_thread(service) as url:
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(4)]
        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, timeout=60) as admin:
            for target in ("pop", "blend", "pop"):
                r = admin.post("/reload", json={"artifact": str(artifacts[target])})
                assert r.status_code == 200, r.text
            assert admin.post("/reload").status_code == 200  # the artifact served now
            new = admin.get("/health").json()["version"]
        stop.set()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    assert failures == [] and sum(counts) >= 80
    assert new.startswith("pop-") and versions <= {old, new} and service.reloads == 4


def test_in_process_recommend_matches_model(service, artifacts):
    model = artifacts["model"]
    ids = [int(u) for u in model.user_encoder_.classes_[:5]]
    out = service.recommend(ids + [str(ids[0])], k=4)
    expected = model.recommend(np.array(ids), 4, exclude_seen=False)
    assert [r["items"] for r in out["results"][:5]] == [list(row) for row in expected]
    assert out["results"][5]["items"] == list(expected[0])
    with pytest.raises(serving.RequestError, match="True"):
        service.recommend([True])
    with pytest.raises(serving.RequestError, match="k must be"):
        service.recommend(ids, k=0)


def test_command_line(artifacts, capsys):
    parser = argparse.ArgumentParser()
    serving.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.artifact) == ("127.0.0.1", 8000, None)
    bad = parser.parse_args(["--artifact", "/nonexistent"])
    assert serving.run(bad) == 2 and "no meta.json" in capsys.readouterr().err
    assert serving.run(parser.parse_args(["--port", "0"])) == 2


def test_subprocess_server(artifacts):
    with serving.serve_in_subprocess(artifacts["pop"]) as url:
        health = httpx.get(url + "/health").json()
        assert health["version"].startswith("pop-") and health["model"] == "Popularity"
        assert httpx.get(url + "/recommend/1").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/health", timeout=2)


def test_load_test_smoke(service, interactions):
    customers = [int(c) for c in interactions["user_id"].unique()[:10]] + [99999999]
    with serving.serve_in_thread(service) as url:
        http = serving.load_test(lambda: serving.HttpRequester(url, k=5), customers,
                                 concurrency=2, requests=40, max_seconds=30)
    local = serving.load_test(lambda: lambda c: service.recommend([c], k=5), customers,
                              concurrency=2, requests=40)
    for row in (http, local):
        assert row["requests"] == 40 and row["failed"] == 0
        assert 0 < row["p50 ms"] <= row["p95 ms"] <= row["p99 ms"] and row["throughput"] > 0
    broken = serving.load_test(lambda: lambda c: 1 / 0, customers, requests=5)
    assert broken["failed"] == 5 and "ZeroDivisionError" in broken["first failure"]
    with pytest.raises(ValueError, match="concurrency"):
        serving.load_test(lambda: print, customers, concurrency=0)
