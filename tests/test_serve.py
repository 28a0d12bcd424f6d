"""rnnkit serve through a real uvicorn and a real HTTP client: answers equal `rnnkit predict`'s
records under concurrent load, requests arriving together share one model call, an input the
model refuses fails only its own request, bad requests get JSON errors and the service goes on,
/info, shutdown, the CLI's errors, and the page in a headless browser where one is installed."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from rnnkit.cli import main  # noqa: E402
from rnnkit.config import parse_config  # noqa: E402
from rnnkit.demo import make_corpus  # noqa: E402
from rnnkit.serve import create_app, listen  # noqa: E402
from rnnkit.run import Predictor, predict, train  # noqa: E402

TRAINER = {"batch_size": 16, "progress": False, "plots": False, "num_threads": 1,
           "optimizer": {"name": "adam", "lr": 0.01}}
MAX_LENGTH = 24  # the tagger's data.max_length: a longer input passes the service's checks, not the model's
LIMITS = {"max_texts": 16, "max_chars": 200, "max_body": 20_000}
SENTENCE = "Teddy bears are on sale"


def _train(out, data: dict, model_type: str, options: dict, epochs: int):
    train(parse_config({"name": f"serve-{model_type.lower()}", "data": data,
                        "model": {"type": model_type, "options": options},
                        "trainer": {**TRAINER, "epochs": epochs, "out_dir": str(out / "run")}}))
    return out / "run" / "best"


@pytest.fixture(scope="module")
def tagger_path(tmp_path_factory):
    """A BiGRU tagger on rnnkit demo's corpus, where later words decide ambiguous tags."""
    tmp = tmp_path_factory.mktemp("tagger")
    data = tmp / "train.conll"
    data.write_text("".join("".join(f"{w}\t{t}\n" for w, t in zip(tokens, tags)) + "\n"
                            for tokens, tags in make_corpus(600, seed=0).sentences))
    return _train(tmp, {"format": "conll", "train": str(data), "max_length": MAX_LENGTH}, "SequenceTagger",
                  {"embedding_dim": 16, "encoder": {"cell": "gru", "hidden_sizes": [16], "bidirectional": True}}, 3)


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classifier")
    data = tmp / "sst.txt"
    data.write_text("".join(f"{i % 3} {['bad dull', 'good fine', 'so so'][i % 3]} film {i}\n" for i in range(30)))
    return _train(tmp, {"format": "label_text", "train": str(data)}, "SequenceClassifier",
                  {"embedding_dim": 8, "encoder": {"cell": "gru", "hidden_sizes": [8]}}, 2)


@contextmanager
def running(app):
    """``app`` on a real uvicorn in a thread, on a free port of 127.0.0.1; yields its base URL and
    checks on exit that the server stopped."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:  # startup is a few milliseconds: wait for it, but not forever
            thread.join(0.01)
            if not thread.is_alive():
                raise RuntimeError("the server thread ended before it started serving")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server did not shut down"


@pytest.fixture(scope="module")
def tagger(tagger_path):
    predictor = Predictor(tagger_path)
    app = create_app(predictor, **LIMITS)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield predictor, app, client


def _texts(n: int, seed: int) -> list[str]:
    texts = [" ".join(tokens) for tokens, _ in make_corpus(n, seed=seed).sentences]
    texts[::7] = [f"Zorro {t}" for t in texts[::7]]  # words the vocabulary lacks: <unk>
    return texts


def test_concurrent_requests_equal_rnnkit_predict(tagger, tagger_path):
    predictor, app, client = tagger
    texts = _texts(200, seed=7)
    expected = list(predict(tagger_path, texts))  # what `rnnkit predict CKPT FILE` prints, line by line
    before = dict(app.state.stats)

    def ask(text):
        response = client.post("/predict", json={"text": text})
        return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, texts))
    assert [status for status, _ in answers] == [200] * len(texts)
    assert [body["predictions"] for _, body in answers] == [[record] for record in expected]
    stats = client.get("/info").json()["stats"]
    assert stats["requests"] - before["requests"] == 200 and stats["inputs"] - before["inputs"] == 200
    assert 1 <= stats["batches"] - before["batches"] < 200  # requests in flight together shared calls

    response = client.post("/predict", json={"texts": texts[:10]})
    assert response.json() == {"predictions": expected[:10]}
    tokens = texts[3].split()
    (record,) = client.post("/predict", json={"tokens": tokens}).json()["predictions"]
    assert record == {"tokens": tokens, "tags": expected[3]["tags"]}


def test_requests_arriving_together_share_one_batch_and_a_bad_one_fails_alone(tagger_path):
    # max_batch = the number of requests, and a wait far longer than they take to arrive: the
    # worker must gather all eight into one batch. The seventh passes the service's checks but
    # not the model's max_length, which breaks the batch: only its own request may fail.
    predictor = Predictor(tagger_path)
    app = create_app(predictor, max_batch=8, max_wait_ms=20_000)
    texts = _texts(8, seed=11)
    texts[6] = " ".join(["bears"] * (MAX_LENGTH + 1))
    expected = {i: r for i, r in enumerate(predict(tagger_path, texts[:6] + texts[7:]))}
    expected[7], expected[6] = expected[6], None
    barrier = threading.Barrier(len(texts))
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        def ask(text):
            barrier.wait()
            return client.post("/predict", json={"text": text})

        with ThreadPoolExecutor(len(texts)) as pool:
            answers = list(pool.map(ask, texts))
        assert app.state.stats == {"requests": 8, "inputs": 8, "batches": 1}
        for i, response in enumerate(answers):
            if i == 6:
                assert response.status_code == 422
                assert f"more than max_length={MAX_LENGTH}" in response.json()["error"]
            else:
                assert response.status_code == 200 and response.json() == {"predictions": [expected[i]]}
        assert client.get("/health").json() == {"status": "ok"}


def test_a_full_queue_answers_busy_instead_of_waiting_without_end(tagger_path):
    # One request of 3 inputs waits (a long max_wait_ms and max_batch above what is pending);
    # with max_pending = 4, a second request of 2 would queue 5: it is answered 503 at once.
    app = create_app(Predictor(tagger_path), max_batch=64, max_wait_ms=3_000, max_pending=4)
    texts = _texts(5, seed=3)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/predict", json={"texts": texts[:3]})
            deadline = time.monotonic() + 10
            while app.state.stats["inputs"] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            busy = client.post("/predict", json={"texts": texts[3:]})
            assert busy.status_code == 503
            assert "3 inputs are waiting" in busy.json()["error"] and "max_pending = 4" in busy.json()["error"]
            assert first.result().status_code == 200
        assert client.post("/predict", json={"texts": texts[3:]}).status_code == 200


def bad(body, status: int, message: str, why: str):
    return pytest.param(body if isinstance(body, bytes) else json.dumps(body).encode(), status, message, id=why)


BAD = [  # body, status, what the error must say, test id
    bad(b'{"text": ', 400, r"not valid JSON \(Expecting value at line 1, column 10\)", "bad JSON"),
    bad(b"\xff\xfe\xfd", 400, "not JSON text", "not UTF-8"),
    bad(["Teddy"], 422, "must be a JSON object .* got a list", "not an object"),
    bad({}, 422, 'exactly one of "text".* got none of them', "no field"),
    bad({"text": "a", "texts": ["b"]}, 422, "exactly one of .* got text, texts", "two fields"),
    bad({"txt": "a"}, 422, "unknown field.*'txt'; allowed: text, texts, tokens", "unknown field"),
    bad({"text": 5}, 422, "text must be a string; got int", "text not a string"),
    bad({"texts": "a b"}, 422, "texts must be a non-empty list of strings; got a string", "texts not a list"),
    bad({"texts": []}, 422, r"texts must be a non-empty list .* \(empty\)", "texts empty"),
    bad({"texts": ["ok", 3]}, 422, r"texts\[1\] must be a string; got int", "texts item not a string"),
    bad({"tokens": ["ok", None]}, 422, r"tokens\[1\] must be a string; got null", "tokens item not a string"),
    bad({"text": ""}, 422, "text is empty", "empty text"),
    bad({"text": "   "}, 422, "text: no tokens in '   '", "blank text"),
    bad({"text": "a", "left_context": "yes"}, 422, 'left_context must be true or false; got "yes"',
        "left_context not a bool"),
    bad({"text": "a", "probabilities": True}, 422, "probabilities need a SequenceClassifier .* SequenceTagger",
        "probabilities for a tagger"),
    bad({"text": "a " * 101}, 413, r"text has 202 characters; the limit \(max_chars\) is 200", "text over max_chars"),
    bad({"tokens": ["abcd"] * 51}, 413, r"tokens have 204 characters; .*max_chars", "tokens over max_chars"),
    bad({"texts": ["a"] * 17}, 413, r"texts has 17 texts; the limit \(max_texts\) is 16", "over max_texts"),
    bad(b"[" * 9_000 + b"]" * 9_000, 400, "nests arrays or objects too deeply", "nested too deeply"),
    bad({"text": "a" * 30_000}, 413, r"the body has 30,012 bytes; the limit \(max_body\) is 20,000",
        "body over max_body"),
]


@pytest.mark.parametrize("body, status, message", BAD)
def test_a_bad_request_gets_a_json_error_and_the_service_goes_on(tagger, body, status, message):
    _, _, client = tagger
    response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json().keys() == {"error"}
    assert re.search(message, response.json()["error"]), response.json()
    assert client.get("/health").json() == {"status": "ok"}


def test_a_chunked_body_is_refused_once_it_passes_max_body(tagger):
    _, _, client = tagger
    chunks = iter([b'{"text": "', b"a" * 15_000, b"a" * 15_000, b'"}'])  # no Content-Length: chunked
    response = client.post("/predict", content=chunks)
    assert response.status_code == 413
    assert response.json() == {"error": "the body has over 20,000 bytes; the limit (max_body) is 20,000"}
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("method, path, status", [("GET", "/nope", 404), ("GET", "/predict", 405),
                                                  ("POST", "/info", 405)])
def test_unknown_routes_and_methods_get_json_errors(tagger, method, path, status):
    _, _, client = tagger
    response = client.request(method, path)
    assert response.status_code == status
    assert f"{method} {path}: " in response.json()["error"] and "POST /predict" in response.json()["error"]


def test_a_model_failure_is_a_json_500_and_the_service_goes_on(tagger_path):
    predictor = Predictor(tagger_path)
    batch = predictor.batch

    def failing(inputs, **kwargs):
        if any(obj.get("text") == "boom" for _, obj in inputs):
            raise RuntimeError("the kernel blew up")
        return batch(inputs, **kwargs)

    predictor.batch = failing
    with running(create_app(predictor)) as url, httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/predict", json={"text": "boom"})
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        assert response.json()["error"].startswith("internal error (RuntimeError: the kernel blew up)")
        assert "Traceback" not in response.text
        answer = client.post("/predict", json={"text": SENTENCE}).json()
        assert answer == {"predictions": batch([("", {"text": SENTENCE})])}


def test_left_context_tags_are_the_predictors(tagger):
    predictor, _, client = tagger
    response = client.post("/predict", json={"texts": [SENTENCE, "Yesterday Paris smiled at the crowd"],
                                             "left_context": True})
    records = response.json()["predictions"]
    for record in records:
        assert record["left_context_tags"] == predictor.left_context(record["tokens"])
        assert {k: v for k, v in record.items() if k != "left_context_tags"} == \
            predictor.batch([("x", {"text": record["text"]})])[0]


def test_info_describes_the_model_checkpoint_and_limits(tagger, tagger_path):
    predictor, _, client = tagger
    info = client.get("/info").json()
    assert info["kind"] == "SequenceTagger" and info["task"] is None and info["bidirectional"] is True
    assert info["labels"] == ["LOC", "O", "ORG", "PER"]
    assert info["sizes"]["vocab"] == {"words": len(predictor.vocabs["words"]), "labels": 4}
    assert info["sizes"]["encoder"] == {"cell": "gru", "hidden_sizes": [16], "bidirectional": True}
    assert info["checkpoint"] == str(tagger_path) and info["backend"] == "torch"
    assert info["sha256"] == hashlib.sha256((tagger_path / "model.safetensors").read_bytes()).hexdigest()
    assert info["limits"] == {"max_batch": 64, "max_wait_ms": 5, "max_pending": 4096, **LIMITS}
    assert set(info["stats"]) == {"requests", "inputs", "batches"}


def test_the_page_is_one_offline_file(tagger):
    _, _, client = tagger
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script>" in page and 'fetch(url' in page and "left_context" in page
    for attribute in ('src="http', "src='http", 'href="http', "@import", "//cdn"):
        assert attribute not in page  # nothing fetched from elsewhere: the machine may be offline


def test_classifier_probabilities_sum_to_one_and_label_is_their_argmax(classifier_path):
    texts = ["good fine film", "bad dull film 3", "so so", "film"]
    expected = list(predict(classifier_path, texts))
    app = create_app(Predictor(classifier_path))
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        info = client.get("/info").json()
        assert info["kind"] == "SequenceClassifier" and info["task"] == "classification"
        assert info["labels"] == ["0", "1", "2"] and info["bidirectional"] is False
        assert client.post("/predict", json={"texts": texts}).json() == {"predictions": expected}
        records = client.post("/predict", json={"texts": texts, "probabilities": True}).json()["predictions"]
        for record, plain in zip(records, expected):
            p = record.pop("probabilities")
            assert set(p) == {"0", "1", "2"} and sum(p.values()) == pytest.approx(1, abs=1e-5)
            assert record == plain and record["label"] == max(p, key=p.get)
        response = client.post("/predict", json={"text": "good", "left_context": True})
        assert response.status_code == 422
        assert response.json() == {"error": "left_context needs a SequenceTagger; this checkpoint holds a "
                                            "SequenceClassifier"}


def test_shutdown_stops_the_worker_and_the_server_thread(tagger_path):
    app = create_app(Predictor(tagger_path))
    with running(app) as url:
        assert httpx.post(f"{url}/predict", json={"text": SENTENCE}).status_code == 200
        worker = app.state.batcher.task
        assert worker is not None and not worker.done()
    # running() has checked that the server thread ended
    assert worker.done()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_limits_are_checked_when_the_app_is_made(tagger):
    predictor, _, _ = tagger
    with pytest.raises(ValueError, match="max_batch must be an integer >= 1; got 0"):
        create_app(predictor, max_batch=0)
    with pytest.raises(ValueError, match="max_chars must be an integer >= 1; got 2.5"):
        create_app(predictor, max_chars=2.5)
    with pytest.raises(ValueError, match="max_wait_ms must be a number >= 0; got -1"):
        create_app(predictor, max_wait_ms=-1)


def test_a_series_classifier_is_refused(tmp_path, capsys):
    lines = ["@problemName tiny", "@timeStamps false", "@missing false", "@univariate true",
             "@equalLength false", "@classLabel true a b", "@data"]
    lines += [",".join(str(t if i % 2 else -t) for t in range(4)) + (":a" if i % 2 else ":b") for i in range(8)]
    (tmp_path / "tiny.ts").write_text("\n".join(lines) + "\n")
    path = _train(tmp_path, {"format": "ts", "train": str(tmp_path / "tiny.ts")}, "SequenceClassifier",
                  {"encoder": {"cell": "gru", "hidden_sizes": [4]}}, 1)
    with pytest.raises(ValueError, match="a series classifier reads .ts files, not text"):
        create_app(Predictor(path))
    assert main(["serve", str(path), "--port", "0"]) == 2
    assert "rnnkit predict" in capsys.readouterr().err


def test_cli_help_port_in_use_and_missing_fastapi(tagger_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0 and "usage: rnnkit serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["serve", str(tagger_path), "--port", "70000"])
    assert e.value.code == 2 and "must be an integer from 0 to 65535; got 70000" in capsys.readouterr().err

    taken = listen("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        assert main(["serve", str(tagger_path), "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert err.startswith(f"rnnkit serve: error: 127.0.0.1:{port} is already in use") and "--port" in err

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if fastapi were not installed
    monkeypatch.delitem(sys.modules, "rnnkit.serve")
    assert main(["serve", str(tagger_path)]) == 2
    err = capsys.readouterr().err
    assert "fastapi is not installed" in err and "pip install 'rnnkit[serve]'" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ the page

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


class _Chips(HTMLParser):
    """(row, token, tag) of each chip the page drew, and the page's data-state."""

    def __init__(self):
        super().__init__()
        self.row, self.chips, self.state = None, [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.state = a.get("data-state")
        if "data-row" in a:
            self.row = a["data-row"]
        if "data-tag" in a:
            self.chips.append((self.row, a["data-token"], a["data-tag"]))


@pytest.mark.skipif(BROWSER is None, reason=f"no headless browser installed (looked for {', '.join(BROWSERS)})")
def test_the_page_tags_a_sentence_in_a_headless_browser(tagger, tmp_path):
    predictor, _, client = tagger
    url = f"{client.base_url}/?text={quote(SENTENCE)}&left_context=1"
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,560", "--virtual-time-budget=10000"]
    dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    page = _Chips()
    page.feed(dom)
    assert page.state == "done", dom[-2000:]
    tokens = SENTENCE.split()
    (record,) = predictor.batch([("page", {"text": SENTENCE})])
    assert page.chips == [("full", t, tag) for t, tag in zip(tokens, record["tags"])] + \
        [("left", t, tag) for t, tag in zip(tokens, predictor.left_context(tokens))]
    changed = sum(a != b for a, b in zip(record["tags"], predictor.left_context(tokens)))
    assert dom.count('class="chip changed"') == 2 * changed

    shot = tmp_path / "page.png"
    subprocess.run([*command, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
