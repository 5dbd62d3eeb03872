"""Fuzzing the MIDI readers in child processes: mutants of real files, and a runner that a
native crash cannot take down.

symusic parses MIDI in C++, so a bad file can kill the process (SIGSEGV, ``double free``)
instead of raising. Every case therefore runs in a child process (many cases per child, for
speed). The child prints a ``start`` line before each case and a result line after it, so
when the child dies the parent knows which case killed it, records a crash (or a hang, when
a case outlives its timeout) and goes on with the next cases in a fresh child.

Used by ``tests/test_robustness.py`` and ``benchmarks/bench_robustness.py``; run directly it
is the child: ``python tests/midi_fuzz.py WORK_FILE [--model DIR] [--midi-io PATH]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import selectors
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# ----------------------------------------------------------------------------- mutants

MUTATION_KINDS = ("prefix", "bit_flip", "chunk_length", "track_edit", "random")
"""prefix: the file cut after k bytes; bit_flip: 1-4 flipped bits anywhere; chunk_length:
one chunk's declared length replaced by a lie; track_edit: bytes inside a track replaced,
inserted or deleted with the chunk length fixed up, so every length is right and only the
events are corrupt; random: random bytes, bare or behind a valid header and track header."""


@dataclass(frozen=True)
class Case:
    """One input: ``id`` names the source file, the mutation kind and its parameters."""

    id: str
    kind: str
    data: bytes


def chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """``(offset, type, declared length)`` of each chunk header that lies inside ``data``."""
    found, offset = [], 0
    while offset + 8 <= len(data):
        kind, length = data[offset : offset + 4], struct.unpack(">I", data[offset + 4 : offset + 8])
        found.append((offset, kind, length[0]))
        offset += 8 + length[0]
    return found


def prefixes(name: str, data: bytes, step: int = 1) -> list[Case]:
    """``data[:k]`` for every ``k`` from 0 (or every ``step``-th), the full file excluded."""
    return [Case(f"{name}/prefix/{k}", "prefix", data[:k]) for k in range(0, len(data), step)]


def bit_flips(name: str, data: bytes, n: int, seed: int) -> list[Case]:
    """``n`` copies of ``data``, each with 1-4 random bits flipped."""
    rng = random.Random(f"bit_flip/{name}/{seed}")
    cases = []
    for i in range(n):
        mutant = bytearray(data)
        flips = sorted(
            (rng.randrange(len(data)), rng.randrange(8)) for _ in range(rng.choice((1, 1, 2, 3, 4)))
        )
        for position, bit in flips:
            mutant[position] ^= 1 << bit
        where = ",".join(f"{p}.{b}" for p, b in flips)
        cases.append(Case(f"{name}/bit_flip/{i}@{where}", "bit_flip", bytes(mutant)))
    return cases


def chunk_length_lies(name: str, data: bytes, n: int, seed: int) -> list[Case]:
    """``n`` copies of ``data`` in which one chunk (header or track) declares a wrong length."""
    rng = random.Random(f"chunk_length/{name}/{seed}")
    layout = chunks(data)
    cases = []
    for i in range(n):
        offset, _kind, length = rng.choice(layout)
        remaining = len(data) - offset - 8
        lie = rng.choice(
            (
                length + rng.randint(1, 16),
                max(0, length - rng.randint(1, 16)),
                remaining + rng.randint(1, 4),
                rng.randrange(2**32),
                rng.randrange(2**16),
                0,
                2**32 - 1,
                2**31,
            )
        )
        if lie == length:
            lie += 1
        mutant = bytearray(data)
        mutant[offset + 4 : offset + 8] = struct.pack(">I", lie % 2**32)
        cases.append(
            Case(f"{name}/chunk_length/{i}@{offset}:{length}->{lie}", "chunk_length", bytes(mutant))
        )
    return cases


def track_edits(name: str, data: bytes, n: int, seed: int) -> list[Case]:
    """``n`` copies of ``data`` with 1-3 byte edits inside one track, its length fixed up.

    Every declared length stays true, so only the events are corrupt: bad delta times,
    data bytes above 127, meta and SysEx lengths that run past the chunk, a lost End of
    Track, running status without a status...
    """
    rng = random.Random(f"track_edit/{name}/{seed}")
    tracks = [(o, length) for o, kind, length in chunks(data) if kind == b"MTrk" and length]
    interesting = (0x00, 0x7F, 0x80, 0x81, 0xF0, 0xF7, 0xFF, 0x2F, 0x51, 0x58, 0x59, 0xC0, 0x9F)
    cases = []
    for i in range(n):
        offset, length = rng.choice(tracks)
        body = bytearray(data[offset + 8 : offset + 8 + length])
        edits = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            position = rng.randrange(len(body) + 1)
            value = rng.choice(interesting) if rng.random() < 0.5 else rng.randrange(256)
            action = rng.choice(("set", "set", "insert", "delete", "cut"))
            if action == "set" and position < len(body):
                body[position] = value
            elif action == "insert":
                body.insert(position, value)
            elif action == "delete" and position < len(body):
                del body[position]
            elif action == "cut":
                del body[position:]
            edits.append(
                f"{action}{position}" + (f"={value:02x}" if action in ("set", "insert") else "")
            )
        mutant = (
            data[:offset]
            + b"MTrk"
            + struct.pack(">I", len(body))
            + bytes(body)
            + data[offset + 8 + length :]
        )
        cases.append(
            Case(f"{name}/track_edit/{i}@{offset}:{'+'.join(edits)}", "track_edit", mutant)
        )
    return cases


def random_inputs(name: str, n: int, seed: int, max_size: int = 1500) -> list[Case]:
    """``n`` random inputs: bare random bytes, a valid header then random bytes, or a valid
    header and one track chunk of random (truthfully sized) contents."""
    rng = random.Random(f"random/{name}/{seed}")
    cases = []
    for i in range(n):
        body = rng.randbytes(rng.randrange(max_size))
        shape = rng.choice(("bare", "header", "track", "track"))
        header = b"MThd" + struct.pack(">IHHH", 6, rng.choice((0, 1)), rng.randint(1, 3), 480)
        if shape == "bare":
            data = body
        elif shape == "header":
            data = header + body
        else:
            data = header + b"MTrk" + struct.pack(">I", len(body)) + body
        cases.append(Case(f"{name}/random/{i}@{shape}", "random", data))
    return cases


def mutants(name: str, data: bytes, kinds: Iterable[str], n: int, seed: int = 0) -> list[Case]:
    """``n`` mutants of each kind (all prefixes for ``prefix`` when ``n`` is 0 or negative,
    else ``n`` evenly spaced prefixes)."""
    cases = []
    for kind in kinds:
        if kind == "prefix":
            step = 1 if n <= 0 else max(1, len(data) // n)
            cases += prefixes(name, data, step)
        elif kind == "bit_flip":
            cases += bit_flips(name, data, n, seed)
        elif kind == "chunk_length":
            cases += chunk_length_lies(name, data, n, seed)
        elif kind == "track_edit":
            cases += track_edits(name, data, n, seed)
        elif kind == "random":
            cases += random_inputs(name, n, seed)
        else:
            raise ValueError(f"unknown mutation kind {kind!r}; choose from {MUTATION_KINDS}")
    return cases


# ----------------------------------------------------------------------------- parent side

TARGETS = ("symusic", "load_score", "tokenizer", "builder", "demo")
"""symusic: ``symusic.Score.from_midi`` alone (no validation, the baseline); load_score: the
MIDI loader (imported from its file, as remote code does); tokenizer: ``MidiTokenizer`` on the
bytes; builder: the ``midi_folder`` dataset builder on a folder of mutants; demo: the demo's
generate function with the mutant uploaded as the primer."""

HELPER = Path(__file__).resolve()


@dataclass
class Outcome:
    """How one case ended.

    ``status``: ``accepted`` (read, tokenized or generated), ``rejected`` (a clean
    ``MidiFileError``), ``unexpected`` (any other exception: a test failure), ``crash`` (the
    child died: ``detail`` has the signal) or ``hang`` (the case outlived its timeout).
    ``detail``: a digest of what was read, or the error message.
    """

    target: str
    case_id: str
    kind: str
    status: str
    detail: str
    seconds: float = 0.0


@dataclass
class RunStats:
    """What a :func:`run` cost: children started and their wall time."""

    children: int = 0
    seconds: float = 0.0
    stderr_tails: list[str] = field(default_factory=list)


def run(
    work: list[tuple[str, Case]],
    *,
    model_dir: str | os.PathLike | None = None,
    midi_io: str | os.PathLike | None = None,
    case_timeout: float = 30.0,
    startup_timeout: float = 180.0,
    batch_size: int = 5000,
    memory_limit: int | None = 4 * 2**30,
    env: dict[str, str] | None = None,
    child_script: str | os.PathLike = HELPER,
    stats: RunStats | None = None,
) -> list[Outcome]:
    """Run ``(target, case)`` items in child processes and return one outcome per item.

    Items run in order, ``batch_size`` per child; when a child dies or hangs, the item it
    was running gets a ``crash`` or ``hang`` outcome and a new child takes the rest.
    ``model_dir`` (a saved model with its tokenizer) is needed by the ``demo`` target;
    ``midi_io`` replaces the ``midi_io.py`` that the ``load_score`` target imports.
    ``memory_limit`` (bytes of heap) stops a parse that allocates without end: symusic
    reserves memory by the lengths a file declares. ``env`` adds environment variables.
    """
    command = [sys.executable, str(child_script)]
    if model_dir is not None:
        command += ["--model", str(model_dir)]
    if midi_io is not None:
        command += ["--midi-io", str(midi_io)]
    runner = _Runner(
        work, command, case_timeout, startup_timeout, memory_limit, env or {}, stats or RunStats()
    )
    pending = list(range(len(work)))
    with tempfile.TemporaryDirectory(prefix="midi-fuzz-") as tmp:
        while pending:
            batch, pending = pending[:batch_size], pending[batch_size:]
            while batch:
                runner.outcomes.update(runner.run_child(batch, Path(tmp)))
                batch = [i for i in batch if i not in runner.outcomes]
    return [runner.outcomes[i] for i in range(len(work))]


@dataclass
class _Runner:
    work: list[tuple[str, Case]]
    command: list[str]
    case_timeout: float
    startup_timeout: float
    memory_limit: int | None
    env: dict[str, str]
    stats: RunStats
    outcomes: dict[int, Outcome] = field(default_factory=dict)

    def run_child(self, batch: list[int], tmp: Path) -> dict[int, Outcome]:
        """One child on ``batch``; returns the outcomes it produced (and a crash or hang)."""
        work_file = tmp / "work.pkl"
        with open(work_file, "wb") as handle:
            items = [(i, self.work[i][0], self.work[i][1].id, self.work[i][1].data) for i in batch]
            pickle.dump(items, handle)
        env = {**os.environ, "PYTHONFAULTHANDLER": "1", "TOKENIZERS_PARALLELISM": "false"}
        start = time.perf_counter()
        with open(tmp / "stderr.txt", "w+b") as stderr:
            process = subprocess.Popen(
                [*self.command, str(work_file), "--tmp", str(tmp)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**env, **self.env},
                cwd=str(tmp),
                preexec_fn=self._limit_memory,
            )
            self.stats.children += 1
            try:
                done, running, hung = self._watch(process)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
                process.stdout.close()
                self.stats.seconds += time.perf_counter() - start
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
        if not hung and process.returncode == 0:
            if len(done) < len(batch):
                raise RuntimeError(f"the fuzzing child stopped early without an error:\n{errors}")
            return done
        self.stats.stderr_tails.append(errors[-2000:])
        if hung:
            reason = f"no answer within {self.case_timeout:.0f} s"
        else:
            reason = _describe_exit(process.returncode) + _last_error_line(errors)
        if running is None:  # stopped between two cases, or while starting
            if not done:
                raise RuntimeError(f"the fuzzing child failed to start ({reason}):\n{errors}")
            running = next((i for i in batch if i not in done), None)
            if running is None:
                return done
        target, case = self.work[running]
        done[running] = Outcome(target, case.id, case.kind, "hang" if hung else "crash", reason)
        return done

    def _limit_memory(self) -> None:
        """Cap the child's heap (``RLIMIT_DATA``); runs in the child before it starts."""
        if self.memory_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_DATA, (self.memory_limit, self.memory_limit))

    def _watch(self, process: subprocess.Popen) -> tuple[dict[int, Outcome], int | None, bool]:
        """Read the child's lines until it exits or a case outlives its timeout: the
        outcomes, the case it was running when it stopped, and whether it hung."""
        done: dict[int, Outcome] = {}
        running: int | None = None
        deadline = time.perf_counter() + self.startup_timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while True:
                if not selector.select(timeout=max(0.0, deadline - time.perf_counter())):
                    if time.perf_counter() >= deadline:
                        process.kill()
                        return done, running, True
                    continue
                chunk = os.read(process.stdout.fileno(), 1 << 16)
                if not chunk:
                    return done, running, False
                *lines, buffer = (buffer + chunk).split(b"\n")
                for line in lines:
                    message = json.loads(line) if line.startswith(b"{") else {}
                    if "start" in message:
                        running = message["start"]
                        deadline = time.perf_counter() + self.case_timeout
                    elif "index" in message:
                        index = message["index"]
                        target, case = self.work[index]
                        done[index] = Outcome(
                            target,
                            case.id,
                            case.kind,
                            message["status"],
                            message["detail"],
                            message.get("seconds", 0.0),
                        )
                        running = None if index == running else running


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


_NATIVE_LAST_WORDS = re.compile(
    r"double free|free\(\)|corrupt|malloc|munmap|terminate called|what\(\)|stack smashing"
)


def _last_error_line(stderr: str) -> str:
    """The native library's last words (``double free or corruption``...), if any."""
    lines = [line.strip() for line in stderr.splitlines() if _NATIVE_LAST_WORDS.search(line)]
    return f" ({lines[-1][:200]})" if lines else ""


# ----------------------------------------------------------------------------- child side


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def score_digest(score) -> str:
    """Notes, tempos and signatures of a ``symusic`` score as a short, comparable string."""
    digest = hashlib.sha256()
    digest.update(struct.pack(">iq", score.ticks_per_quarter, score.end()))
    for track in score.tracks:
        digest.update(f"{track.program}/{track.is_drum}/{track.name}".encode(errors="replace"))
        for array in track.notes.numpy().values():
            digest.update(array.tobytes())
    for events in (score.tempos, score.time_signatures, score.key_signatures):
        for array in events.numpy().values():
            digest.update(array.tobytes())
    return f"{score.note_num()} notes, {len(score.tracks)} tracks, {digest.hexdigest()[:16]}"


class _Child:
    """The targets, set up lazily: a light child never imports midiformers."""

    def __init__(self, tmp: Path, model_dir: str | None, midi_io: str | None):
        self.tmp = tmp
        self.model_dir = model_dir
        self.midi_io_path = midi_io
        self._midi_io = None
        self._tokenizer = None
        self._generator = None

    def midi_io(self):
        """``midi_io.py`` imported from its file, without importing midiformers."""
        if self._midi_io is None:
            import importlib.util

            path = self.midi_io_path
            if path is None:
                package = importlib.util.find_spec("midiformers")
                path = Path(package.submodule_search_locations[0]) / "tokenization" / "midi_io.py"
            spec = importlib.util.spec_from_file_location("midi_io_under_test", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            self._midi_io = module
        return self._midi_io

    def run_one(self, target: str, case_id: str, data: bytes) -> tuple[str, str]:
        if target == "symusic":
            import symusic

            return "accepted", score_digest(symusic.Score.from_midi(data))
        if target == "load_score":
            return "accepted", score_digest(self.midi_io().load_score(data, name=case_id))
        if target == "tokenizer":
            if self._tokenizer is None:
                from midiformers import MidiTokenizer

                self._tokenizer = MidiTokenizer(preset="remi")
            ids = self._tokenizer(data).input_ids
            return (
                "accepted",
                f"{len(ids)} ids, {hashlib.sha256(str(ids).encode()).hexdigest()[:16]}",
            )
        if target == "demo":
            return self._demo(case_id, data)
        if target == "_segfault":  # for testing the runner itself
            import ctypes

            ctypes.string_at(0)
        if target == "_hang":
            time.sleep(3600)
        raise ValueError(f"unknown target {target!r}")

    def _demo(self, case_id: str, data: bytes) -> tuple[str, str]:
        """The demo's generate function on an upload, as Gradio hands it over: a path in a
        fresh folder under Gradio's upload folder, with the uploaded file's name."""
        if self._generator is None:
            uploads = self.tmp / "gradio"
            uploads.mkdir(exist_ok=True)
            os.environ["GRADIO_TEMP_DIR"] = str(uploads)  # where the demo accepts primers
            from midiformers.app.demo import Generator
            from midiformers.app.models import resolve_models

            entries, notices = resolve_models([self.model_dir])
            if notices:
                raise RuntimeError(f"demo target: cannot load {self.model_dir}: {notices}")
            (self.tmp / "demo-out").mkdir(exist_ok=True)
            self._generator = Generator(entries, self.tmp / "demo-out", audio_off="fuzzing")
            self._label = entries[0].label
        upload = Path(tempfile.mkdtemp(dir=os.environ["GRADIO_TEMP_DIR"]))
        path = upload / (case_id.split("/")[0] + ".mid")
        path.write_bytes(data)
        status, *_outputs, num_tokens, _seconds = self._generator(
            self._label, None, str(path), 1.0, 8, 1.0, 4, 0, True
        )
        first_line = status.splitlines()[0] if status else ""
        if status.startswith("**Primer rejected.**"):
            return "rejected", first_line
        if num_tokens is not None and "notes**" in status:
            return "accepted", first_line.split(" in ")[0]
        return "unexpected", first_line

    def run_builder(self, items: list[tuple[int, str, bytes]]) -> None:
        """Build a ``midi_folder`` dataset from a folder holding these files: each one must
        become a row or a skipped file with its reason."""
        import logging

        from midiformers.data_scripts import _common, get_builder

        logging.getLogger("midiformers").setLevel(logging.ERROR)
        folder = Path(tempfile.mkdtemp(prefix="folder-", dir=self.tmp))
        names = {}
        for index, _case_id, data in items:
            name = f"case{index:06d}.mid"
            (folder / name).write_bytes(data)
            names[name] = index
        inspect = _common.MidiDatasetBuilder.__dict__["_inspect"]

        def announce(data: bytes, name: str):
            if name in names:  # so that a crash names the file being read
                _emit({"start": names[name]})
            return inspect.__func__(data, name)

        _common.MidiDatasetBuilder._inspect = staticmethod(announce)
        try:
            builder = get_builder(
                "midi_folder",
                cache_dir=str(self.tmp / "cache"),
                path=str(folder),
                deduplicate=False,
            )
            builder.download_and_prepare()
            dataset = builder.as_dataset()
            rows = {row["source_path"]: row for split in dataset for row in dataset[split]}
            skipped = {item["name"]: item["reason"] for item in builder.skipped_files()}
        finally:
            _common.MidiDatasetBuilder._inspect = inspect
        for name, index in names.items():
            if name in rows:
                status, detail = "accepted", f"{rows[name]['num_notes']} notes"
            elif name in skipped:
                status, detail = "rejected", skipped[name]
            else:
                status, detail = "unexpected", "neither built nor reported as skipped"
            _emit({"index": index, "status": status, "detail": detail})


def child_main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run fuzzing cases (the child side).")
    parser.add_argument("work_file")
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--model")
    parser.add_argument("--midi-io")
    args = parser.parse_args(argv)
    with open(args.work_file, "rb") as handle:
        items = pickle.load(handle)
    child = _Child(Path(args.tmp), args.model, args.midi_io)
    position = 0
    while position < len(items):
        index, target, case_id, data = items[position]
        if target == "builder":
            group = []
            while position < len(items) and items[position][1] == "builder":
                group.append((items[position][0], items[position][2], items[position][3]))
                position += 1
            child.run_builder(group)
            continue
        position += 1
        _emit({"start": index})
        start = time.perf_counter()
        try:
            status, detail = child.run_one(target, case_id, data)
        except Exception as error:
            if type(error).__name__ == "MidiFileError":
                status, detail = "rejected", str(error.reason)
            elif target == "symusic" and isinstance(error, RuntimeError):  # symusic's own
                status, detail = "rejected", str(error)[:500]
            else:
                status, detail = "unexpected", f"{type(error).__name__}: {error}"[:500]
        _emit(
            {
                "index": index,
                "status": status,
                "detail": detail,
                "seconds": time.perf_counter() - start,
            }
        )


if __name__ == "__main__":
    child_main()
