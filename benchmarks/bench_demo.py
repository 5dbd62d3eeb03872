"""What the demo feels like: time from a request to a finished 30-second piece with its audio.

Uses the demo's own code: ``Generator`` (the function behind the Generate button: primer
checks, the ``midi-generation`` pipeline with the grammar, the MIDI file, the audio and the
piano roll) and ``warm_up`` (what ``app.py`` runs at start-up), on one torch thread like
``app.py``. With the default model (``outputs/default``, left by ``python train.py``; without
it an untrained model of the default recipe's size, which the table says):

1. how many tokens a 30-second piece takes: ``--calibration-pieces`` pieces of
   ``--calibration-tokens`` tokens with the demo's default sampling, median tokens per second
   of music, times 30 (rounded up to the slider's step of 16);
2. requests for that many tokens, each a new seed, timed (wall and CPU) in four set-ups: the
   first request of a demo started without warm-up (model loading included), plain decoding
   after warm-up, and compiled decoding after warm-up (what ``app.py`` serves), with the piano
   roll redrawn while the model writes (as the page shows it) and without (the cost of
   streaming);
3. the same requests over HTTP, to ``python app.py`` serving on localhost in its own process
   (started once, warm-up and compiled decoding included), which adds Gradio's queue, the
   encoding of every update and the files a browser downloads. Two clients: one that does what
   the page does (Gradio's HTTP API, each streamed piano roll and then the audio fetched on
   one kept-alive connection), and ``gradio_client`` (which downloads every file of every
   update, each on a new connection with its own TLS set-up, and polls for messages every
   50 ms: it costs more CPU than the page on a machine it shares with the server).

Every seed runs in every set-up before the next seed, so load from other jobs hits them all.
Results go to ``benchmarks/results/bench_demo.{md,json}``::

    python benchmarks/bench_demo.py
    python benchmarks/bench_demo.py --model outputs/default --requests 5 --seconds 30
    python benchmarks/bench_demo.py --requests 3 --calibration-pieces 6  # a quicker look
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

try:  # run as a script (benchmarks/ on sys.path) or imported as benchmarks.bench_demo
    from _common import machine_description
except ImportError:
    from benchmarks._common import machine_description

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_MODEL = ROOT / "outputs" / "default"
SLIDER_STEP = 16
GOAL_S = 2.0
SAMPLING = {"temperature": 1.0, "top_k": 32, "top_p": 0.95, "grammar": True}  # the page's
logger = logging.getLogger("bench_demo")


def untrained_default_model(folder: Path) -> Path:
    """A randomly initialised model of the default recipe with the default tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from midiformers import MidiTokenizer
    from midiformers.training.arguments import parse_recipe
    from midiformers.training.run import resolve_model_type

    model_args, _, tok_args, _, _ = parse_recipe([str(ROOT / "configs" / "default.yaml")])
    tokenizer = MidiTokenizer(preset=tok_args.tokenizer_preset)
    config = AutoConfig.for_model(
        resolve_model_type(model_args.model_type),
        **model_args.model_config,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tokens_for(seconds: float, entry, pieces: int, tokens: int) -> tuple[int, list[dict]]:
    """Tokens a piece of ``seconds`` seconds takes: median tokens per second of music."""
    generate = entry.pipeline()
    samples = []
    for seed in range(pieces):
        piece = generate(None, max_new_tokens=tokens, seed=1000 + seed, **SAMPLING)
        music = piece["score"].to("second").end() if piece["num_notes"] else 0.0
        samples.append({"tokens": piece["num_generated_tokens"], "seconds": music})
    rates = [s["tokens"] / s["seconds"] for s in samples if s["seconds"] >= 1.0]
    if not rates:
        raise SystemExit("no calibration piece lasted a second: is the model trained?")
    needed = seconds * statistics.median(rates)
    return SLIDER_STEP * math.ceil(needed / SLIDER_STEP), samples


def request(generator, label: str, tokens: int, seed: int) -> dict:
    """One click of Generate, as the page sends it; wall and CPU seconds and what came out."""
    wall, cpu = time.perf_counter(), time.process_time()
    outputs = generator(label, None, None, SAMPLING["temperature"], SAMPLING["top_k"],
                        SAMPLING["top_p"], tokens, seed, SAMPLING["grammar"])  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    status, audio = outputs[0], outputs[1]
    if audio is None:
        raise RuntimeError(f"no audio: {status}")
    return {
        "wall": wall,
        "cpu": cpu,
        "generate": outputs[5],
        "tokens": outputs[4],
        "music_s": len(audio[1]) / audio[0],
    }


BROWSER = "over HTTP, as the page: `python app.py`, each update's roll and the audio fetched"
CLIENT = "over HTTP, `gradio_client` (every file of every update downloaded)"


@contextlib.contextmanager
def serving(model: str, timeout: float = 300.0):
    """``python app.py --model model`` serving on a free port of localhost in its own process,
    once it answers (start-up includes the warm-up); yields its URL."""
    import httpx

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited: {server.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(url + "gradio_api/info", timeout=10).raise_for_status()
                break
            except httpx.HTTPError:  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"app.py did not serve {url} within {timeout:.0f} s"
                    ) from None
                time.sleep(1.0)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def page_inputs(label: str, tokens: int, seed: int) -> list:
    """The ``/generate`` inputs in the page's order: no primer, a length in tokens, any
    instrument, no attribute control, the page's sampling."""
    from midiformers.app.demo import DEFAULT_BARS, DEFAULT_SECONDS
    from midiformers.generation.controls import CONTROLS

    controls = [[] if spec.kind == "set" else "any" for spec in CONTROLS.values()]
    sampling = [SAMPLING["temperature"], SAMPLING["top_k"], SAMPLING["top_p"]]
    return [label, None, None, *sampling, tokens, seed, SAMPLING["grammar"], "tokens",
            DEFAULT_BARS, DEFAULT_SECONDS, [], *controls]  # fmt: skip


def as_the_page(http, label: str, tokens: int, seed: int) -> dict:
    """One click of Generate as the page makes it, through Gradio's HTTP API on the kept-alive
    connection ``http`` (an ``httpx.Client``): the request, its stream of updates (each
    update's piano roll fetched, as the page's image loads it), then the finished piece's
    audio fetched. Wall seconds to the audio's last byte."""
    start = time.perf_counter()
    posted = http.post("gradio_api/call/generate", json={"data": page_inputs(label, tokens, seed)})
    posted.raise_for_status()
    event, outputs, first, updates = None, None, None, 0
    with http.stream("GET", f"gradio_api/call/generate/{posted.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "error":
                raise RuntimeError(f"/generate failed: {line}")
            elif line.startswith("data:") and event in ("generating", "complete"):
                outputs = json.loads(line.removeprefix("data:"))
                if outputs[1] is not None:  # the finished piece, with its audio
                    break
                updates += 1
                first = first if first is not None else time.perf_counter() - start
                if outputs[2]:
                    http.get(outputs[2]["url"]).raise_for_status()
    if outputs is None or outputs[1] is None:
        raise RuntimeError(f"no audio: {outputs[0] if outputs else 'no answer'}")
    audio = http.get(outputs[1]["url"])
    audio.raise_for_status()
    return {
        "wall": time.perf_counter() - start,
        "generate": outputs[5],
        "tokens": outputs[4],
        "first_update": first,
        "updates": updates,
        "audio_bytes": len(audio.content),
    }


def with_gradio_client(client, label: str, tokens: int, seed: int) -> dict:
    """The same click through ``gradio_client`` (``predict`` downloads every file it is sent)."""
    start = time.perf_counter()
    outputs = client.predict(*page_inputs(label, tokens, seed)[:9], length_unit="tokens",
                             api_name="/generate")  # fmt: skip
    wall = time.perf_counter() - start
    if not outputs[1] or not Path(outputs[1]).is_file():
        raise RuntimeError(f"no audio file: {outputs[0]}")
    return {"wall": wall, "generate": outputs[5], "tokens": outputs[4]}


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def markdown(report: dict) -> str:
    tokens, goal = report["tokens"], report["goal_s"]
    lines = [
        "## Demo latency (`benchmarks/bench_demo.py`)",
        "",
        machine_description("cpu"),
        "",
        f"Model: {report['model']}. A {report['seconds']:.0f}-second piece takes {tokens} "
        f"tokens (median of {len(report['calibration'])} pieces of "
        f"{report['calibration_tokens']} tokens: {report['tokens_per_second']:.1f} tokens per "
        f"second of music). Requests: {tokens} tokens, no primer, temperature 1, top-k 32, "
        "top-p 0.95, grammar on (the page's defaults), a new seed each, median of "
        f"{report['requests']} that ran to {tokens} tokens ({report['ended_early']} other seeds "
        f"ended their piece earlier); {torch.get_num_threads()} torch thread as in `app.py`. "
        "Request = the Generate button's function (generation with the piano roll redrawn "
        "every 0.5 s while the model writes, as the page streams it, then the MIDI file, audio "
        "and final piano roll).",
        "",
        "| set-up | request s (wall) | CPU s | generation s | rest s (audio, piano roll, "
        "file; model loading when cold; over HTTP queue, encoding, transfer) | music s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rows in report["setups"].items():
        wall, generate = _median(rows, "wall"), _median(rows, "generate")
        cpu = f"{_median(rows, 'cpu'):.2f}" if "cpu" in rows[0] else "–"
        music = f"{_median(rows, 'music_s'):.1f}" if "music_s" in rows[0] else "–"
        lines.append(
            f"| {name} | {wall:.2f} | {cpu} | {generate:.2f} | {wall - generate:.2f} | {music} |"
        )
    load = report.get("load_average") or []
    lines += [
        "",
        f"Start-up warm-up (load, grammar, compilation): {report['warmup_s']:.1f} s plain, "
        f"{report['compiled_warmup_s']:.1f} s compiled."
        + (
            f" Load average (1 min) {load[0]:.1f} at the start of the timed requests, "
            f"{load[-1]:.1f} at the end."
            if load
            else ""
        ),  # fmt: skip
    ]
    page = report["setups"].get(BROWSER)
    if page:
        lines.append(
            f"As the page: the first piano roll {_median(page, 'first_update'):.2f} s after the "
            f"request, {_median(page, 'updates'):.0f} updates, "
            f"{_median(page, 'audio_bytes') / 1e6:.1f} MB of audio."
        )
    served = report["setups"]["compiled decoding after warm-up (app.py)"]
    results = [("the demo's function", _median(served, "wall"))]
    if page:
        results.append(("over HTTP as the page", _median(page, "wall")))
    if report["setups"].get(CLIENT):
        results.append(("over HTTP with gradio_client", _median(report["setups"][CLIENT], "wall")))
    verdicts = "; ".join(
        f"{name} {wall:.2f} s ({'met' if wall < goal else 'NOT met'})" for name, wall in results
    )
    lines.append(f"Goal: a {report['seconds']:.0f}-second piece with its audio in under {goal:.0f} "
                 f"s: {verdicts}.")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=f"model folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the piece")
    parser.add_argument("--requests", type=int, default=7, help="timed requests per set-up")
    parser.add_argument("--calibration-pieces", type=int, default=16)
    parser.add_argument("--calibration-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (app.py: 1)")
    parser.add_argument("--no-http", dest="http", action="store_false")
    parser.add_argument("--label", default=None, help="how the table names the model")
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_demo")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from midiformers.app.demo import Generator, warm_up
    from midiformers.app.models import resolve_models

    scratch = Path(tempfile.mkdtemp(prefix="bench-demo-"))
    (scratch / "out").mkdir()
    model = Path(args.model) if args.model else DEFAULT_MODEL
    description = f"`{model}`, trained by `python train.py`"
    if args.model is None and not (model / "config.json").is_file():
        model = untrained_default_model(scratch / "untrained-default")
        description = "untrained (random weights) at the default recipe's size"
    elif args.model is not None:
        description = f"`{model}`"
    description = args.label or description

    def demo_generator(warm: bool, compiled: bool = False):
        """A Generator as create_demo builds it, and the seconds its warm-up took."""
        entries, notices = resolve_models([str(model)])
        if not entries:
            raise SystemExit("; ".join(notices))
        start = time.perf_counter()
        if warm:
            warm_up(entries, compile_models=compiled)
        generator = Generator(entries, scratch / "out", primer_dirs=[])
        return generator, entries[0].label, time.perf_counter() - start

    plain, label, warmup_s = demo_generator(True)
    tokens, calibration = tokens_for(
        args.seconds, plain.entries[label], args.calibration_pieces, args.calibration_tokens
    )
    compiled, _, compiled_warmup_s = demo_generator(True, compiled=True)
    entries = list(compiled.entries.values())
    unstreamed = Generator(entries, scratch / "out", primer_dirs=[], update_every=None)
    served = "compiled decoding after warm-up (app.py)"
    quiet = "compiled, no piano roll while the model writes"
    generators = {"plain decoding after warm-up": plain, served: compiled, quiet: unstreamed}
    runs = {name: functools.partial(request, g) for name, g in generators.items()}
    setups = {name: [] for name in runs}
    seeds, ended_early, load = [], 0, []
    with contextlib.ExitStack() as stack:
        if args.http:
            import httpx
            from gradio_client import Client

            url = stack.enter_context(serving(str(model)))
            http = stack.enter_context(httpx.Client(base_url=url, timeout=300))
            runs[BROWSER] = functools.partial(as_the_page, http)
            runs[CLIENT] = functools.partial(with_gradio_client, Client(url, verbose=False))
            setups.update({BROWSER: [], CLIENT: []})
        load.append(os.getloadavg()[0])
        for seed in range(20 * args.requests):  # every set-up per seed: load hits them all
            if len(seeds) == args.requests:
                break
            timings = {}
            for name, run in runs.items():
                timings[name] = run(label, tokens, seed)
                if timings[name]["tokens"] != tokens:
                    break  # the model closed the piece (EOS) before the requested length
            if len(timings) < len(runs) or timings[name]["tokens"] != tokens:
                ended_early += 1
                continue
            seeds.append(seed)
            for name, timing in timings.items():
                setups[name].append(timing)
        load.append(os.getloadavg()[0])
    cold, _, _ = demo_generator(False)
    first = "first request without warm-up (model loading included)"
    setups = {first: [request(cold, label, tokens, seeds[0])], **setups}
    report = {
        "model": description,
        "seconds": args.seconds,
        "tokens": tokens,
        "tokens_per_second": statistics.median(
            s["tokens"] / s["seconds"] for s in calibration if s["seconds"] >= 1.0
        ),
        "calibration": calibration,
        "calibration_tokens": args.calibration_tokens,
        "requests": len(seeds),
        "ended_early": ended_early,
        "setups": setups,
        "load_average": load,
        "warmup_s": warmup_s,
        "compiled_warmup_s": compiled_warmup_s,
        "goal_s": GOAL_S,
    }
    table = markdown(report)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".md").write_text(table + "\n")
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main()
