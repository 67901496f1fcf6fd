"""grok-serve's HTTP API on a tiny export: the openai client and curl against a live server, streaming, every
bad-input case (status and message naming the field), the queue bound, auth, CORS, and grounding pass-through."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from grok.serve.app import create_app
from grok.serve.engine import Case, ImageFile, Sampling
from serve_helpers import GROUNDED_REPORT, GroundedEngine, LiveServer, data_url

ROW = {"eye": "R", "age_years": 63, "sex": "F", "sbp_mmhg": 150, "dbp_mmhg": 92}


def _png_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _png(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def _chat(*parts: dict, **extra) -> dict:
    return {"model": "grok", "messages": [{"role": "user", "content": list(parts)}], **extra}


def _image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def _text_part(text: str = "Write the diagnostic report.") -> dict:
    return {"type": "text", "text": text}


def test_openai_client_and_curl_get_reports_from_the_live_server(engine, serve_settings, eye_images, tmp_path) -> None:
    oct_path, cfp_path = eye_images
    app = create_app(engine, serve_settings(api_key="secret-key"))
    messages = [
        {"role": "user", "content": [_image_part(data_url(oct_path)), _image_part(data_url(cfp_path)), _text_part()]}
    ]
    with LiveServer(app) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="secret-key", max_retries=0)
        assert [model.id for model in client.models.list()] == ["grok"]
        reply = client.chat.completions.create(model="grok", messages=messages, max_tokens=5)
        text = reply.choices[0].message.content
        # the same case straight through the engine: same prompt length, same greedy reply
        case = Case(
            images={m: ImageFile(p.read_bytes(), ".png") for m, p in (("oct", oct_path), ("cfp", cfp_path))},
            turns=[{"role": "user", "content": "Write the diagnostic report."}],
        )
        prepared = engine.prepare(case)
        (direct,) = engine.generate([prepared], Sampling(5, 0.0, 1.0), [5], [None])
        assert text == direct.text
        assert reply.usage.prompt_tokens == prepared.prompt_tokens > prepared.text_tokens
        assert reply.usage.completion_tokens == direct.completion_tokens <= 5
        assert reply.choices[0].finish_reason == direct.finish_reason

        chunks = list(
            client.chat.completions.create(
                model="grok", messages=messages, max_tokens=5, stream=True, stream_options={"include_usage": True}
            )
        )
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
        assert streamed.strip() == text
        assert chunks[-1].usage.completion_tokens == direct.completion_tokens
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong", max_retries=0).models.list()

        body = tmp_path / "report.json"
        images = {"oct": data_url(oct_path), "cfp": data_url(cfp_path)}
        body.write_text(json.dumps({"images": images, "biomarkers": ROW}))
        curl = subprocess.run(
            ["curl", "-sS", "-H", "Authorization: Bearer secret-key", "-H", "Content-Type: application/json",
             "--data-binary", f"@{body}", f"{live.url}/v1/reports"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    report = json.loads(curl.stdout)
    assert report["object"] == "grok.report" and report["images"] == ["cfp", "oct"]
    assert isinstance(report["report"], str) and report["grounding"]["source"] == "auto"  # the export's default
    quoted = report["grounding"]["quantities"]
    assert all(report["report"][q["start"] : q["end"]] for q in quoted if q["start"] is not None)
    assert set(report["diagnosis"]) == {"labels", "display", "source"} and isinstance(report["findings"], list)
    assert report["usage"]["completion_tokens"] <= 6  # the engine's default in these tests


def test_report_prompt_comes_from_the_biomarker_row(engine, make_client, eye_images) -> None:
    oct_path, _ = eye_images
    case = Case(images={"oct": ImageFile(oct_path.read_bytes(), ".png")}, biomarkers={**ROW, "eye": "L"})
    prompt = engine.tokenizer.decode(engine.prepare(case).item["input_ids"])
    user = prompt.split("<|im_start|>user\n", 1)[1]
    assert user.startswith("<oct>\n") and "<cfp>" not in user
    # the row's numbers are quantity tokens carrying the row's values, not digits
    assert "BP <q:sbp_mmhg>/<q:dbp_mmhg> mmHg" in user and "left eye" in user and "<q:age_years>" in user
    item = engine.prepare(case).item
    column = engine.model.grounding.tokens.key_index
    assert [float(item["quantity_values"][column[k]]) for k in ("sbp_mmhg", "dbp_mmhg", "age_years")] == [150, 92, 63]
    plain = make_client().post("/v1/reports", json={"images": {"oct": data_url(oct_path)}, "stream": True})
    events = [json.loads(line[6:]) for line in plain.text.split("\n\n") if line.startswith("data: {")]
    assert events[-1]["type"] == "report" and plain.text.rstrip().endswith("data: [DONE]")
    assert "".join(e["text"] for e in events if e["type"] == "delta").strip() == events[-1]["report"]


def test_chat_images_are_oct_then_cfp_unless_the_grok_field_names_them(make_client, engine, eye_images) -> None:
    from grok.serve.requests import parse_chat

    client = make_client()
    settings = client.app.state.settings
    url = data_url(eye_images[1])
    default = engine.default_sampling()
    assert list(parse_chat(_chat(_image_part(url), _text_part()), settings, default, ()).case.images) == ["oct"]
    named = parse_chat(_chat(_image_part(url), _text_part(), grok={"images": ["cfp"]}), settings, default, ())
    assert list(named.case.images) == ["cfp"]
    prompt = engine.tokenizer.decode(engine.prepare(named.case).item["input_ids"])
    # the missing OCT image said as stage one says it (the prompt models trained with modality dropout saw)
    assert "No OCT image.\n<cfp>\nWrite the diagnostic report." in prompt and "<oct>" not in prompt


def _bad_inputs(oct_url: str) -> list[tuple]:
    """(name, path, body, config overrides, status, param, message fragment)."""
    reports, chat = "/v1/reports", "/v1/chat/completions"
    text_url = _png_url(b"plain text, not pixels")
    truncated = _png_url(_png()[:80])
    long_text = " ".join(["word"] * 400)
    return [
        ("malformed JSON", reports, b'{"images": ', [], 400, "body", "not valid JSON"),
        ("bad base64", reports, {"images": {"oct": "data:image/png;base64,@@@"}}, [], 400, "images.oct",
         "not valid base64"),
        ("not an image", reports, {"images": {"oct": text_url}}, [], 400, "images.oct", "not an image"),
        ("truncated image", reports, {"images": {"oct": truncated}}, [], 400, "images.oct",
         "cannot read the OCT image"),
        ("image over the byte limit", reports, {"images": {"oct": oct_url}}, ["limits.max_image_bytes=200"], 413,
         "images.oct", "over the limit of 200 (limits.max_image_bytes)"),
        ("image over the pixel limit", reports, {"images": {"oct": oct_url}}, ["limits.max_image_pixels=100"], 413,
         "images.oct", "over the limit of 100 pixels"),
        ("body over the limit", reports, {"images": {"oct": oct_url}}, ["limits.max_body_bytes=1000"], 413, "body",
         "over the limit of 1,000 bytes"),
        ("too many chat images", chat, _chat(*[_image_part(oct_url)] * 3, _text_part()), [], 400, "messages",
         "3 images, over the limit of 2"),
        ("too many report images", reports, {"images": {"oct": oct_url, "cfp": oct_url}}, ["limits.max_images=1"], 400,
         "images", "2 images, over the limit of 1"),
        ("unknown schema column", reports, {"images": {"oct": oct_url}, "biomarkers": {**ROW, "cst": 300}}, [], 400,
         "biomarkers.cst", "not declared in the schema"),
        ("out-of-range value", reports, {"images": {"oct": oct_url}, "biomarkers": {**ROW, "sbp_mmhg": 400}}, [], 400,
         "biomarkers.sbp_mmhg", "value 400 outside the valid range [60, 280] mmHg"),
        ("wrong unit", reports, {"images": {"oct": oct_url}, "biomarkers": {**ROW, "macula_central_mm": 0.3}}, [],
         400, "biomarkers.macula_central_mm", "column is in 'mm'"),
        ("bad category", reports, {"images": {"oct": oct_url}, "biomarkers": {**ROW, "sex": "X"}}, [], 400,
         "biomarkers.sex", "'X' is not one of ['F', 'M']"),
        ("not a number", reports, {"images": {"oct": oct_url}, "biomarkers": {**ROW, "age_years": "old"}}, [], 400,
         "biomarkers.age_years", "'old' is not a number"),
        ("row without the eye", reports, {"images": {"oct": oct_url}, "biomarkers": {"age_years": 63, "sex": "F"}},
         [], 400, "biomarkers.eye", "value is required"),
        ("labels as input", reports, {"images": {"oct": oct_url}, "biomarkers": {**ROW, "labels": "AMD"}}, [], 400,
         "biomarkers.labels", "not accepted in a request"),
        ("prompt over the token limit", chat, _chat(_image_part(oct_url), _text_part(long_text)),
         ["limits.max_prompt_tokens=64"], 400, "messages", "tokens, over the limit of 64 (limits.max_prompt_tokens)"),
        ("prompt over the character limit", chat, _chat(_text_part(long_text)), ["limits.max_prompt_chars=100"], 400,
         "messages", "characters, over the limit of 100"),
        ("remote image URL", chat, _chat(_image_part("https://example.org/oct.png")), [], 400,
         "messages[0].content[0].image_url.url", "http(s) image URLs are refused"),
        ("local image path", reports, {"images": {"oct": "file:///etc/hostname"}}, [], 400, "images.oct",
         "local image paths are refused"),
        ("unknown model", chat, {**_chat(_text_part()), "model": "gpt-4o"}, [], 404, "model", "not served here"),
        ("n > 1", chat, _chat(_text_part(), n=2), [], 400, "n", "only n=1"),
        ("max_tokens over the limit", chat, _chat(_text_part(), max_tokens=10**6), [], 400, "max_tokens",
         "(limits.max_new_tokens)"),
        ("temperature out of range", chat, _chat(_text_part(), temperature=3), [], 400, "temperature", "[0, 2]"),
        ("reserved token", chat, _chat(_text_part("hi<|im_end|>")), [], 400, "messages[0].content[0].text",
         "reserved token"),
        ("assistant turn last", chat, {"messages": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]}, [], 400,
         "messages", "the last message must be the user's"),
        ("unsupported part", chat, _chat({"type": "input_audio", "input_audio": {}}), [], 400,
         "messages[0].content[0].type", "not supported"),
        ("grok.images count", chat, _chat(_image_part(oct_url), grok={"images": ["oct", "cfp"]}), [], 400,
         "grok.images", "names 2 modalities for 1 image"),
        ("unknown report field", reports, {"images": {"oct": oct_url}, "prompt": "x"}, [], 400, "prompt",
         "unknown field"),
        ("no image", reports, {"images": {}}, [], 400, "images", "at least one image"),
        ("unknown modality", reports, {"images": {"fa": oct_url}}, [], 400, "images.fa", "unknown modality"),
        ("no messages", chat, {"model": "grok"}, [], 400, "messages", "non-empty list"),
        ("body not an object", chat, [1, 2], [], 400, "body", "expected a JSON object"),
    ]  # fmt: skip


def test_every_bad_input_is_a_4xx_naming_the_field(make_client, eye_images) -> None:
    cases = _bad_inputs(data_url(eye_images[0]))
    assert len({case[0] for case in cases}) == len(cases)
    clients = {}
    for name, path, body, overrides, status, param, fragment in cases:
        client = clients.get(tuple(overrides)) or clients.setdefault(tuple(overrides), make_client(overrides))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = client.post(path, content=content, headers={"Content-Type": "application/json"})
        error = response.json()["error"]
        assert response.status_code == status, (name, response.text)
        assert error["param"] == param, (name, error)
        assert error["message"].startswith(f"{param}: ") and fragment in error["message"], (name, error["message"])


def test_a_streamed_body_over_the_limit_is_refused_while_it_arrives(make_client) -> None:
    client = make_client(["limits.max_body_bytes=1000"])
    response = client.post("/v1/reports", content=(b"x" * 400 for _ in range(5)))  # chunked: no Content-Length
    assert response.status_code == 413 and "over the limit of 1,000 bytes" in response.json()["error"]["message"]


class BlockingEngine:
    """The real engine, whose generation waits until released (to fill the queue)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.entered = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, *args):
        self.entered.set()
        assert self.release.wait(60)
        return self.engine.generate(*args)


def test_a_full_queue_answers_503_with_retry_after(engine, serve_settings, eye_images) -> None:
    blocking = BlockingEngine(engine)
    settings = serve_settings(["batching.max_batch_size=1", "batching.max_queue=1", "batching.retry_after_s=7"])
    app = create_app(blocking, settings)
    body = {"images": {"oct": data_url(eye_images[0])}}
    with LiveServer(app) as live:
        statuses: list[int] = []

        def post() -> None:
            statuses.append(httpx.post(f"{live.url}/v1/reports", json=body, timeout=120).status_code)

        running = threading.Thread(target=post)
        running.start()
        assert blocking.entered.wait(60)
        waiting = threading.Thread(target=post)
        waiting.start()
        deadline = time.monotonic() + 60
        while app.state.batcher.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = httpx.post(f"{live.url}/v1/reports", json=body, timeout=60)
        blocking.release.set()
        running.join(60)
        waiting.join(60)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "7"
    assert "the server is busy" in refused.json()["error"]["message"]
    assert statuses == [200, 200]


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_reply(engine, serve_settings, syntheye_dir) -> None:
    eyes = sorted((syntheye_dir / "oct").iterdir())[:4]
    bodies = [
        _chat(_image_part(data_url(path)), _text_part("Write the report." + " Be brief." * i), max_tokens=6)
        for i, path in enumerate(eyes)
    ]

    def replies(app, concurrent: bool) -> list[str]:
        with LiveServer(app) as live:
            post = lambda body: httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=120)  # noqa: E731
            if not concurrent:
                return [post(body).json()["choices"][0]["message"]["content"] for body in bodies]
            results: dict[int, str] = {}

            def send(i: int) -> None:
                results[i] = post(bodies[i]).json()["choices"][0]["message"]["content"]

            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            return [results[i] for i in range(len(bodies))]

    alone_app = create_app(engine, serve_settings(["batching.max_batch_size=1"]))
    alone = replies(alone_app, concurrent=False)
    batched_app = create_app(engine, serve_settings(["batching.max_batch_size=8", "batching.window_ms=2000"]))
    assert replies(batched_app, concurrent=True) == alone
    assert batched_app.state.batcher.batch_sizes == {4: 1}
    assert alone_app.state.batcher.batch_sizes == {1: 4}


def test_report_grounding_is_passed_through_with_source_status_and_offsets(make_client, engine, eye_images) -> None:
    client = make_client(engine_override=GroundedEngine(engine))
    response = client.post("/v1/reports", json={"images": {"oct": data_url(eye_images[0])}, "biomarkers": ROW})
    report = response.json()
    assert response.status_code == 200 and report["report"] == GROUNDED_REPORT
    quantities = {(q["key"], q["kind"]): q for q in report["grounding"]["quantities"]}
    thickness = quantities[("macula_central_um", "value")]
    assert thickness["source_name"] == "estimated from the image" and thickness["estimate"] == 339.2
    assert thickness["status"] == "high" and thickness["unit"] == "µm"  # 342 > 300, the range for women
    assert thickness["display"] == "central subfield macular thickness (CST)"
    assert quantities[("sbp_mmhg", "value")]["source_name"] == "measured (input)"
    assert quantities[("macula_central_um", "high")]["status"] == "reference"
    assert all(GROUNDED_REPORT[q["start"] : q["end"]] == q["text"] for q in quantities.values())
    assert report["findings"][0] == {"id": "centre_involving_macular_thickening",
                                     "display": "centre-involving macular thickening"}  # fmt: skip
    assert report["diagnosis"]["labels"] == ["AMD"]
    chat = client.post("/v1/chat/completions", json=_chat(_image_part(data_url(eye_images[0])), _text_part()))
    assert chat.json()["grok"]["grounding"]["quantities"][0]["source"] == "readout"


def test_grounding_status_follows_the_persons_range_and_offsets_are_checked() -> None:
    from grok.knowledge import load_knowledge_base
    from grok.serve.reports import ReportReader

    reader = ReportReader(load_knowledge_base(None))
    text = "central subfield thickness 305 µm"
    quantity = {"key": "macula_central_um", "kind": "value", "value": 305.0, "text": "305", "source": "input",
                "start": 0, "end": 3}  # fmt: skip
    for sex, status in (("F", "high"), ("M", "normal")):  # women 215-300 µm, men 220-310 µm
        (read,) = reader.grounding(text, {"quantities": [quantity]}, {"age_years": 60, "sex": sex})["quantities"]
        assert read["status"] == status
    assert (read["start"], read["end"]) == (27, 30)  # wrong offsets re-found by the quoted text
    lost = reader.grounding(text, {"quantities": [{**quantity, "text": "999"}]}, {})["quantities"][0]
    assert lost["start"] is None and lost["end"] is None
    assert reader.grounding(text, None, {}) is None


def test_auth_guards_the_api_but_not_the_page(make_client) -> None:
    client = make_client(api_key="k1")
    for path in ("/v1/models", "/v1/schema"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer k1"}).status_code == 200
    refused = client.post("/v1/reports", json={})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/").status_code == 200 and client.get("/healthz").status_code == 200
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert make_client().get("/v1/models").status_code == 200  # no key configured: open


def test_cors_is_off_unless_origins_are_configured(make_client) -> None:
    preflight = {"Origin": "https://clinic.example", "Access-Control-Request-Method": "POST"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.get("/v1/models", headers=preflight).headers
    assert closed.options("/v1/reports", headers=preflight).status_code in (404, 405)
    opened = make_client(["cors_origins=[https://clinic.example]"])
    response = opened.options("/v1/reports", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://clinic.example"


def test_mangled_requests_never_get_a_server_error(make_client, eye_images) -> None:
    import random

    rng = random.Random(0)
    url = data_url(eye_images[0])
    odd = [None, 0, -1, 1.5, float("nan"), 10**30, "", "x", "R", [], [1, "a"], {}, {"k": [None]}, True, "data:,", url]
    chat = _chat(_image_part(url), _text_part(), max_tokens=2)
    report = {"images": {"oct": url}, "biomarkers": dict(ROW), "max_tokens": 2}

    def mangle(value):
        if isinstance(value, dict) and value and rng.random() < 0.7:
            key = rng.choice(list(value))
            return {**value, key: mangle(value[key])}
        if isinstance(value, list) and value and rng.random() < 0.7:
            index = rng.randrange(len(value))
            return [*value[:index], mangle(value[index]), *value[index + 1 :]]
        return rng.choice(odd)

    client = make_client()
    statuses = set()
    for _ in range(150):
        path, body = rng.choice([("/v1/chat/completions", chat), ("/v1/reports", report)])
        response = client.post(path, content=json.dumps(mangle(body)), headers={"Content-Type": "application/json"})
        statuses.add(response.status_code)
        assert response.status_code < 500, response.text
        if response.status_code != 200:
            assert response.json()["error"]["message"]
    assert 400 in statuses
