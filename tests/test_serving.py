"""The HTTP service: endpoints, history, validation, fallback, precomputed lists, reload
(security, under load, across workers), limits, request ids, logs, metrics, shutdown."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from companion.ops import export, serving
from companion.recsys import baselines as rec

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def artifacts(interactions, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    blend = serving.default_model().fit(interactions)
    pop = rec.Popularity().fit(interactions)
    return {"blend": export.save(blend, folder / "blend", data=interactions, name="blend"),
            "pop": export.save(pop, folder / "pop", data=interactions, name="pop"),
            "model": blend, "folder": folder}


@pytest.fixture
def service(artifacts):
    return serving.RecommendationService.from_artifact(artifacts["blend"])


def metric_values(text: str) -> dict:
    """``{'name{labels}': value}`` from the Prometheus text format, checking its syntax."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) companion_\w+ .+", line), line
            continue
        name, value = line.rsplit(" ", 1)
        assert re.fullmatch(r'companion_\w+(\{(\w+="[^"]*",?)+\})?', name), line
        values[name] = float(value)
    return values


def test_import_is_light():
    code = ("import sys, companion.ops.serving; "
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
        assert health["precomputed"] == health["customers"] and health["history"] is True
        assert health["source"] == "blend"  # the artifact's name, not a server path
        version = health["version"]
        assert version.startswith("blend-")

        one = client.get(f"/recommend/{customer}", params={"k": 5})
        assert one.status_code == 200 and one.headers["content-type"] == "application/json"
        body = one.json()
        assert body["version"] == version and body["fallback"] is False
        assert body["customer"] == customer
        assert body["items"] == list(model.recommend([customer], 5, exclude_seen=False)[0])

        unknown = client.get("/recommend/99999999").json()
        assert unknown["fallback"] is True and len(unknown["items"]) == serving.DEFAULT_K
        assert unknown["items"] == list(model.recommend([99999999], 10, exclude_seen=False)[0])

        batch = client.post("/recommend", json={"customers": [customer, "99999999"], "k": 3})
        assert batch.status_code == 200
        results = batch.json()["results"]
        assert [r["fallback"] for r in results] == [False, True]
        assert results[0]["items"] == body["items"][:3]
        bought = set(interactions.loc[interactions["user_id"] == customer, "item_id"])
        for flag in ("true", "1", "yes", "on"):
            seen = client.get(f"/recommend/{customer}?exclude_seen={flag}").json()
            assert not bought & set(seen["items"])
            assert seen["items"] == list(model.recommend([customer], 10)[0])
        assert client.get(f"/recommend/{customer}?exclude_seen=off").json() == \
            client.get(f"/recommend/{customer}").json()
        batch_seen = client.post("/recommend", json={"customers": [customer],
                                                     "exclude_seen": True}).json()
        assert batch_seen["results"][0]["items"] == seen["items"]
        assert client.head(f"/recommend/{customer}").status_code == 200


def test_precomputed_lists_are_the_models(service, artifacts):
    model, served = artifacts["model"], service.served
    ids = model.user_encoder_.classes_.to_numpy()
    depth = min(serving.MAX_K, len(model.items_))
    for table, exclude in ((served.top, False), (served.top_unseen, True)):
        expected = model.recommend(ids, depth, exclude_seen=exclude)
        rows = [served.rows[int(c)] for c in ids]
        np.testing.assert_array_equal(model.items_[table[rows]], expected)
    for k in (1, 7, depth):
        assert [served.item_values[c] for c in served.fallback[k]] == \
            list(model.recommend([-1], k)[0])


def test_customers_beyond_the_precomputed_ones(artifacts, interactions):
    model = artifacts["model"]
    service = serving.RecommendationService.from_artifact(artifacts["blend"], precompute=5)
    active = np.diff(model.seen_.indptr)
    assert sorted(service.served.rows) == sorted(
        int(model.user_encoder_.classes_[c]) for c in np.argsort(-active, kind="stable")[:5])
    quiet = int(model.user_encoder_.classes_[int(np.argmin(active))])
    assert quiet not in service.served.rows
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        for exclude in (False, True):
            got = client.get(f"/recommend/{quiet}", params={"exclude_seen": exclude}).json()
            assert got["fallback"] is False
            assert got["items"] == list(model.recommend([quiet], 10, exclude_seen=exclude)[0])
        assert client.get("/recommend/99999999").json()["fallback"] is True
    none = serving.RecommendationService.from_artifact(artifacts["blend"], precompute=0)
    assert none.served.rows == {} and none.recommend([quiet])["results"][0]["items"] == \
        list(model.recommend([quiet], 10, exclude_seen=False)[0])


def test_text_customer_ids(interactions):
    import pandas as pd

    # a model whose customers are text ids (e-mail addresses, UUIDs): item-kNN works on
    # codes, so relabelling its customers gives the model a fit on text ids would
    model = rec.ItemKNN().fit(interactions)
    model.user_encoder_.classes_ = pd.Index(
        ["c-" + str(u) for u in model.user_encoder_.classes_], dtype=object)
    service = serving.RecommendationService(model, export.model_version(interactions, "t"))
    assert not service.served.int_ids
    customer = "c-" + str(interactions["user_id"].iloc[0])
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        body = client.get(f"/recommend/{customer}", params={"k": 4}).json()
        assert body["customer"] == customer and body["fallback"] is False
        assert body["items"] == list(model.recommend([customer], 4, exclude_seen=False)[0])
        assert client.get('/recommend/say "hi"').json()["fallback"] is True


def test_history(service, artifacts, interactions):
    model = artifacts["model"]
    customer = int(interactions["user_id"].iloc[0])
    basket = list(interactions["item_id"].value_counts().index[[5, 9]])
    bought = set(interactions.loc[interactions["user_id"] == customer, "item_id"])
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        visitor = client.post("/recommend", json={"history": [*basket, "NO-SUCH", 4242],
                                                  "k": 6})
        assert visitor.status_code == 200, visitor.text
        body = visitor.json()
        assert body["unknown_items"] == ["NO-SUCH", 4242] and body["fallback"] is False
        assert body["customer"] is None and body["version"] == service.served.version_id
        assert body["items"] == list(model.recommend_from_history(basket, 6,
                                                                  exclude_seen=False))
        assert set(basket) <= set(body["items"])  # repeat-buy: the basket comes first

        fresh = client.post("/recommend", json={"history": basket, "exclude_seen": True})
        assert not set(basket) & set(fresh.json()["items"])

        known = client.post("/recommend", json={"history": basket, "customer": customer,
                                                "k": 20, "exclude_seen": True}).json()
        assert known["customer"] == customer and known["unknown_items"] == []
        assert not (set(basket) | bought) & set(known["items"])
        assert known["items"] == list(model.recommend_from_history(
            basket, 20, exclude_seen=True, user_id=customer))

        nothing = client.post("/recommend", json={"history": ["NO-SUCH"], "k": 5}).json()
        assert nothing["fallback"] is True and nothing["unknown_items"] == ["NO-SUCH"]
        assert nothing["items"] == list(model.recommend([-1], 5)[0])
        stranger = client.post("/recommend", json={"history": [], "customer": 99999999})
        assert stranger.json()["fallback"] is True

        for payload, word in (
                ({"history": basket, "customers": [customer]}, "request: give either customers"),
                ({"customers": [customer], "customer": customer}, "customer goes with"),
                ({"history": "85123A"}, "history"),
                ({"history": ["x"] * (serving.MAX_HISTORY + 1)}, "history"),
                ({"history": basket, "customer": "abc"}, "customer must be an integer"),
                ({"history": basket, "k": 0}, "k"),
                ({"history": basket, "exclude_seen": "maybe"}, "exclude_seen"),
                ({"history": basket, "kk": 3}, "kk"),
        ):
            response = client.post("/recommend", json=payload)
            assert response.status_code == 422 and word in response.json()["error"], payload


def test_a_model_without_history_support(interactions):
    class Scores(rec.Popularity):
        supports_history = False

    service = serving.RecommendationService(Scores().fit(interactions),
                                            export.model_version(interactions, "plain"))
    with pytest.raises(serving.RequestError, match=r"\(Scores\) cannot recommend from a"):
        service.recommend_history(["x"])


@pytest.mark.parametrize("method, path, payload, word", [
    ("get", "/recommend/abc", None, "customer must be an integer"),
    ("get", "/recommend/17850?k=0", None, "k"),
    ("get", "/recommend/17850?k=abc", None, "k"),
    ("get", "/recommend/17850?k=101", None, "k"),
    ("get", "/recommend/17850?exclude_seen=maybe", None, "exclude_seen"),
    ("post", "/recommend", {"customers": []}, "customers"),
    ("post", "/recommend", {"k": 3}, "customers"),
    ("post", "/recommend", {"customers": [1.5]}, "customers"),
    ("post", "/recommend", {"customers": [1], "k": -1}, "k"),
    ("post", "/recommend", {"customers": list(range(serving.MAX_BATCH + 1))}, "customers"),
    ("get", "/nowhere", None, "not found"),
    ("get", "/recommend/", None, "not found"),
    ("delete", "/recommend/17850", None, "method not allowed"),
])
def test_bad_requests_name_the_problem(service, method, path, payload, word):
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        response = client.request(method.upper(), path, json=payload)
        assert 400 <= response.status_code < 500, response.text
        body = response.json()
        assert word in body["error"] and body["version"] == service.served.version_id
        assert body["request_id"] == response.headers["x-request-id"]
        assert client.get("/health").status_code == 200  # still serving


def test_k_beyond_catalogue(interactions):
    few = interactions[interactions["item_id"].isin(interactions["item_id"].unique()[:5])]
    service = serving.RecommendationService(rec.Popularity().fit(few),
                                            export.model_version(few, "tiny"))
    with pytest.raises(serving.RequestError, match="exceeds the catalogue of 5 items"):
        service.recommend([1], k=6)
    with serving.serve_in_thread(service) as url:
        answer = httpx.get(url + "/recommend/1?k=6")
        assert answer.status_code == 422 and "catalogue of 5" in answer.json()["error"]


def test_reload_needs_a_token(service, artifacts, monkeypatch):
    monkeypatch.delenv(serving.TOKEN_ENV, raising=False)
    with serving.serve_in_thread(service) as url:
        off = httpx.post(url + "/reload", headers=AUTH)
        assert off.status_code == 403 and serving.TOKEN_ENV in off.json()["error"]
    monkeypatch.setenv(serving.TOKEN_ENV, TOKEN)  # the token comes from the environment
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        target = {"artifact": "pop"}
        missing = client.post("/reload", json=target)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"):
            answer = client.post("/reload", json=target, headers={"Authorization": wrong})
            assert answer.status_code == 401, wrong
        assert client.get("/health").json()["version"].startswith("blend-")
        done = client.post("/reload", json=target, headers=AUTH)
        assert done.status_code == 200, done.text
        assert done.json()["version"].startswith("pop-") and done.json()["source"] == "pop"
        assert done.json()["workers"] == {"alive": 1, "serving": 1}
        assert client.get("/health").json()["model"] == "Popularity"
        again = client.post("/reload", headers=AUTH)  # no body: the artifact served now
        assert again.status_code == 200 and again.json()["previous"] == done.json()["version"]


def test_reload_reads_only_the_models_folder(service, artifacts, tmp_path):
    folder = artifacts["folder"]
    outside = export.save(rec.Popularity().fit(_tiny_interactions()), tmp_path / "outside",
                          data="x" * 64, name="outside")
    link = folder / "link-out"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    sneaky = folder / "sneaky"
    sneaky.mkdir(exist_ok=True)
    (sneaky / "meta.json").write_text((outside / "meta.json").read_text())
    if not (sneaky / "arrays.npz").exists():
        (sneaky / "arrays.npz").symlink_to(outside / "arrays.npz")
    broken = folder / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "meta.json").write_text('{"format": 1, "kind": "classical"}')
    with serving.serve_in_thread(service, reload_token=TOKEN) as url, \
            httpx.Client(base_url=url, headers=AUTH) as client:
        for name, status, word in (
                (str(outside), 403, "only folders inside the models folder"),
                ("../" + outside.parent.name + "/outside", 403, "only folders inside"),
                ("/etc", 403, "only folders inside"),
                ("link-out", 403, "only folders inside"),
                ("sneaky", 403, "links to files outside"),
                ("nothing-here", 422, "no artifact 'nothing-here'"),
                ("broken", 422, "'broken' could not be loaded"),
                (str(folder), 422, "no artifact '.'"),
                ("", 422, "artifact must be"),
                (7, 422, "artifact must be"),
        ):
            answer = client.post("/reload", json={"artifact": name})
            assert answer.status_code == status and word in answer.json()["error"], name
            # no server path, repr or traceback in any answer
            for secret in (str(folder), str(tmp_path), "Traceback", "PosixPath", "KeyError"):
                assert secret not in answer.text, (name, answer.text)
        bad_body = client.post("/reload", content=b"{not json",
                               headers={"content-type": "application/json"})
        assert bad_body.status_code == 422 and "JSON" in bad_body.json()["error"]
        extra = client.post("/reload", json={"artifact": "pop", "path": "/etc"})
        assert extra.status_code == 422
        inside = client.post("/reload", json={"artifact": str(artifacts["pop"])})
        assert inside.status_code == 200  # an absolute path inside the folder is fine
        assert client.get("/metrics").text.count('result="failed"} 1') == 1
    assert service.served.version_id.startswith("pop-")


def _tiny_interactions():
    import pandas as pd

    return pd.DataFrame({"user_id": [1, 2, 2], "item_id": ["a", "b", "a"],
                         "timestamp": pd.to_datetime(["2011-01-01"] * 3)})


def test_reload_without_a_models_folder_or_artifact(interactions, tmp_path):
    model = serving.default_model().fit(interactions)
    fitted = serving.RecommendationService(model, export.model_version(interactions, "b"),
                                           source="fitted at start-up")
    with serving.serve_in_thread(fitted, reload_token=TOKEN) as url:
        off = httpx.post(url + "/reload", headers=AUTH)
        assert off.status_code == 403 and "no models folder" in off.json()["error"]
    fitted.models_dir = tmp_path.resolve()
    with serving.serve_in_thread(fitted, reload_token=TOKEN) as url:
        answer = httpx.post(url + "/reload", headers=AUTH)
        assert answer.status_code == 422 and "not loaded from an artifact" in answer.text
        assert "Blend(" not in answer.text and "ItemKNN" not in answer.text


def test_server_processes_keep_the_model_out_of_the_garbage_collector(artifacts):
    import gc

    service = serving.RecommendationService.from_artifact(artifacts["pop"], freeze_gc=True)
    try:
        assert gc.get_freeze_count() == 0  # only a reload (or run) freezes
        service.reload("blend")
        frozen = gc.get_freeze_count()
        assert frozen > 1000 and service.served.version_id.startswith("blend-")
    finally:
        gc.unfreeze()


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

    with serving.serve_in_thread(service, reload_token=TOKEN) as url:
        clients = [httpx.Client(base_url=url, timeout=30) for _ in range(4)]
        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as admin:
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


def test_limits_on_body_and_time(service):
    with serving.serve_in_thread(service, max_body=2000, request_timeout=0.5) as url:
        big = httpx.post(url + "/recommend", json={"customers": list(range(900))})
        assert big.status_code == 413 and "2000 bytes" in big.json()["error"]
        chunked = httpx.post(url + "/recommend", content=iter([b'{"customers": [', b"1, " *
                                                               1000, b"1]}"]))
        assert chunked.status_code == 413
        assert httpx.post(url + "/recommend", json={"customers": [1]}).status_code == 200
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            start = time.monotonic()
            slow.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 40\r\n\r\n{\"cust")
            answer = slow.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 503") and "longer than 0.5 s" in answer
            assert 0.4 < time.monotonic() - start < 5


def test_request_ids_and_access_log(service, caplog):
    caplog.set_level(logging.INFO, logger="companion.access")
    with serving.serve_in_thread(service) as url, httpx.Client(base_url=url) as client:
        given = client.get("/recommend/1", headers={"X-Request-ID": "shop-42.a"})
        assert given.headers["x-request-id"] == "shop-42.a"
        made = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
        other = client.get("/health")
        assert made.headers["x-request-id"] != other.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made.headers["x-request-id"])
        failed = client.get("/recommend/1?k=0")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "companion.access"]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["shop-42.a"]["path"] == "/recommend/1" and by_id["shop-42.a"]["status"] == 200
    assert by_id[failed.headers["x-request-id"]]["status"] == 422
    assert by_id[failed.headers["x-request-id"]]["query"] == "k=0"
    line = by_id[other.headers["x-request-id"]]
    assert line["method"] == "GET" and line["ms"] > 0 and line["bytes"] == len(other.content)
    assert line["version"] == service.served.version_id and line["worker"] == os.getpid()
    assert line["time"].endswith("Z")


def test_metrics(service, interactions):
    customer = int(interactions["user_id"].iloc[0])
    with serving.serve_in_thread(service, reload_token=TOKEN) as url, \
            httpx.Client(base_url=url) as client:
        first = metric_values(client.get("/metrics").text)
        for _ in range(3):
            client.get(f"/recommend/{customer}")
        client.get("/recommend/99999999")
        client.get("/recommend/abc")
        client.post("/recommend", json={"history": ["NO-SUCH", "NOPE"]})
        client.post("/reload")
        response = client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        after = metric_values(response.text)
    key = 'companion_http_requests_total{route="recommend_one",status="200"}'
    assert after[key] - first.get(key, 0) == 4
    assert after['companion_http_requests_total{route="recommend_one",status="422"}'] >= 1
    assert after['companion_http_requests_total{route="reload",status="401"}'] >= 1
    assert after["companion_recommendation_fallbacks_total"] - \
        first["companion_recommendation_fallbacks_total"] == 2  # unknown customer, history
    assert after["companion_history_unknown_items_total"] - \
        first["companion_history_unknown_items_total"] == 2
    buckets = [(float(m.group(1)) if m.group(1) != "+Inf" else np.inf, v)
               for name, v in after.items()
               if (m := re.fullmatch(r'companion_http_request_duration_seconds_bucket\{route='
                                     r'"recommend_one",le="([^"]+)"\}', name))]
    counts = [v for _, v in sorted(buckets)]
    assert len(counts) == len(serving.BUCKETS) + 1 and counts == sorted(counts)
    assert counts[-1] == after[
        'companion_http_request_duration_seconds_count{route="recommend_one"}']
    assert after['companion_http_request_duration_seconds_sum{route="recommend_one"}'] > 0
    info = [n for n in after if n.startswith("companion_model_info")]
    assert info == [f'companion_model_info{{version="{service.served.version_id}",'
                    'model="Blend",generation="0"}']
    assert after["companion_workers"] == 1 and after["companion_requests_in_flight"] == 1


def test_workers_share_reloads_and_metrics(artifacts, tmp_path):
    """Two services on one state folder behave as two worker processes: a reload on one
    is followed by the other, a worker started later begins on the latest reload, and
    either one's /metrics counts both."""
    state = tmp_path / "state"
    state.mkdir()
    first = serving.RecommendationService.from_artifact(artifacts["blend"], state_dir=state,
                                                        poll_seconds=0.05)
    second = serving.RecommendationService.from_artifact(artifacts["blend"],
                                                         state_dir=state, poll_seconds=0.05)
    try:
        assert first.metrics.slot != second.metrics.slot
        assert first.following(0) == (2, 2)
        served = first.reload("pop")
        assert served.generation == 1 and first.served.version_id.startswith("pop-")
        deadline = time.monotonic() + 60
        while second.served.generation < 1:
            assert time.monotonic() < deadline, "the second worker did not follow"
            time.sleep(0.05)
        assert second.served.version_id == first.served.version_id
        assert second.served.source == "pop" and first.following(1) == (2, 2)
        late = serving.RecommendationService.from_artifact(artifacts["blend"],
                                                           state_dir=state)
        assert late.served.generation == 1 and late.served.version_id.startswith("pop-")
        assert first.reloads == 1 and second.reloads == 1  # each loaded it once
        second.metrics.observe(0, 200, 0.003)
        late.close()
        del late
        values = metric_values(first.metrics.exposition(first.served))
        assert values['companion_http_requests_total{route="recommend_one",status="200"}'] == 1
        assert values['companion_model_reloads_total{result="ok"}'] == 3
    finally:
        first.close()
        second.close()


def test_workers_follow_a_reload(artifacts, tmp_path):
    log = tmp_path / "access.log"
    with serving.serve_in_subprocess(artifacts["blend"], options=["--workers", "2"],
                                     env={serving.TOKEN_ENV: TOKEN}, log_file=log,
                                     timeout=240) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            deadline = time.monotonic() + 120
            while metric_values(client.get("/metrics").text)["companion_workers"] < 2:
                assert time.monotonic() < deadline, "the second worker did not start"
                time.sleep(0.5)
            answer = client.post("/reload", json={"artifact": "pop"}, headers=AUTH)
            assert answer.status_code == 200, answer.text
            done, done_id = answer.json(), answer.headers["x-request-id"]
            assert done["version"].startswith("pop-") and done["generation"] == 1
            assert done["workers"] == {"alive": 2, "serving": 2}
            gauges = metric_values(client.get("/metrics").text)
            assert [v for n, v in gauges.items()
                    if n.startswith("companion_worker_model_generation")] == [1, 1]
            assert gauges['companion_model_reloads_total{result="ok"}'] == 2
        versions = set()
        for _ in range(20):  # new connections, answered by either worker
            versions.add(httpx.get(url + "/health").json()["version"])
        assert versions == {done["version"]}
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["path"], line["status"]) for line in lines
            if line["request_id"] == done_id] == [("/reload", 200)]


def test_graceful_shutdown_finishes_requests_in_flight(artifacts):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "companion.ops.serving", "--artifact",
                             str(artifacts["pop"]), "--port", str(port), "--log-level",
                             "warning", "--no-access-log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        body = b'{"customers": [1, 2], "k": 3}'
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body[:10])
            while metric_values(httpx.get(f"http://127.0.0.1:{port}/metrics").text)[
                    "companion_requests_in_flight"] < 2:  # this one and /metrics itself
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # while the request is half received
            time.sleep(1.0)
            assert proc.poll() is None  # waits for the request in flight
            conn.sendall(body[10:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["k"] == 3
        # uvicorn re-raises the SIGTERM once it has shut down, so the process ends by it
        assert proc.wait(30) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


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


def test_command_line(artifacts, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv(serving.MODELS_ENV, raising=False)
    parser = argparse.ArgumentParser()
    serving.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.artifact, args.workers) == ("127.0.0.1", 8000, None, 1)
    assert args.models_dir is None and args.access_log is True
    bad = parser.parse_args(["--artifact", "/nonexistent"])
    assert serving.run(bad) == 2 and "no meta.json" in capsys.readouterr().err
    for wrong, word in ((["--port", "0"], "--port"), (["--workers", "0"], "--workers"),
                        (["--precompute", "-1"], "--precompute"),
                        (["--request-timeout", "0"], "timeouts"),
                        (["--models-dir", str(tmp_path / "none")], "--models-dir")):
        assert serving.run(parser.parse_args(wrong)) == 2
        assert word in capsys.readouterr().err
    monkeypatch.setenv(serving.MODELS_ENV, str(tmp_path))
    parser = argparse.ArgumentParser()
    serving.add_arguments(parser)
    assert parser.parse_args([]).models_dir == str(tmp_path)


def test_subprocess_server(artifacts):
    with serving.serve_in_subprocess(artifacts["pop"]) as url:
        health = httpx.get(url + "/health").json()
        assert health["version"].startswith("pop-") and health["model"] == "Popularity"
        assert httpx.get(url + "/recommend/1").status_code == 200
        off = httpx.post(url + "/reload", headers=AUTH)
        assert off.status_code == 403  # no token in its environment
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
