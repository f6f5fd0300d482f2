"""The measurement behind docs/benchmarks.md, "int8 shape policies": shape policies and OpenVINO
properties for the served runtime, in-process, on server-like calls. A record of how the
figures were taken, not part of the project (it reaches into the scheduler's `_window` and
the runtime's compiled model).

Calls are formed as the scheduler forms them (engine.scheduler._window over a queue kept
at 128 corpus texts, oldest first), each repeat on a fresh sample so exact shapes are new.
Every variant runs the same calls of a repeat; the order of variants rotates per repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from keepwarm.bench.corpus import corpus_texts, sample
from keepwarm.catalog import DEFAULT_ENTRY
from keepwarm.engine.scheduler import CallLimits, _window
from keepwarm.engine.tokenization import ModelTokenizer
from keepwarm.runtimes.openvino import OpenVinoRuntime

QUEUE = 128


def calls_for(ids: list[np.ndarray], limits: CallLimits) -> list[list[np.ndarray]]:
    pending = list(range(len(ids)))
    queue: list[int] = []
    calls = []
    while pending or queue:
        while pending and len(queue) < QUEUE:
            queue.append(pending.pop(0))
        keys = sorted((len(ids[i]), i) for i in queue)
        anchor = keys.index((len(ids[queue[0]]), queue[0]))
        start, stop = _window(keys, anchor, limits)
        taken = [i for _, i in keys[start:stop]]
        calls.append([ids[i] for i in taken])
        queue = [i for i in queue if i not in set(taken)]
    return calls


def up(value: int, buckets: list[int]) -> int:
    return next(b for b in buckets if b >= value)


def padded(rows: list[np.ndarray], pad_id: int, row_buckets, token_buckets):
    longest = max(len(r) for r in rows)
    width = up(longest, token_buckets) if token_buckets else longest
    height = up(len(rows), row_buckets) if row_buckets else len(rows)
    input_ids = np.full((height, width), pad_id, dtype=np.int64)
    mask = np.zeros((height, width), dtype=np.int64)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    mask[len(rows) :, 0] = 1  # filler rows: one token, so pooling never divides by zero
    return input_ids, mask, len(rows)


def pow2(limit: int, first: int = 1) -> list[int]:
    out, b = [], first
    while b < limit:
        out.append(b)
        b *= 2
    return [*out, limit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--dtype", default="int8")
    parser.add_argument("--texts", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--variants", default="exact,tok32,tok_pow2")
    parser.add_argument("--padding", type=int, default=270)
    parser.add_argument("--budget", type=int, default=2048)
    parser.add_argument("--first-rep", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    spec = DEFAULT_ENTRY.to_spec()
    tok = ModelTokenizer(spec)
    if args.dtype == "int8":
        model = next(Path(args.data_dir).glob("artifacts/*openvino-int8*/model.int8.xml"))
        precision = json.loads((model.parent / "artifact.json").read_text()).get("precision", "f32")
    else:
        model = next(Path(args.data_dir).glob("artifacts/*/model.onnx"))
        chosen_precision = next(
            Path(args.data_dir).glob("artifacts/*openvino-fastest-precision/artifact.json")
        )
        precision = json.loads(chosen_precision.read_text())["precision"]  # what the server runs fp32 at
    maxt = spec.max_tokens
    limits = CallLimits(args.budget, 64, 10**9, args.padding)
    variants = {
        "exact": (None, None),
        "sorted32": (None, None),
        "tok16": (None, list(range(16, maxt, 16)) + [maxt]),
        "tok32": (None, list(range(32, maxt, 32)) + [maxt]),
        "tok_pow2": (None, pow2(maxt, 16)),
        "tok32_rows_pow2": (pow2(64), list(range(32, maxt, 32)) + [maxt]),
        "tok_pow2_rows_pow2": (pow2(64), pow2(maxt, 16)),
        "tok32_rows_15": ([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64], list(range(32, maxt, 32)) + [maxt]),
        "tok64_rows_15": ([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64], list(range(64, maxt, 64)) + [maxt]),
    }
    chosen = args.variants.split(",")
    runtimes = {}
    import openvino as ov

    for name in chosen:
        base, *extras = name.split("+")
        props = dict(
            e.split("=", 1) for e in extras
        )  # OpenVINO properties, e.g. CPU_RUNTIME_CACHE_CAPACITY=500
        rb, tb = variants.get(base, (None, None))
        if base == "ort_int8":
            from keepwarm.runtimes.ort import OnnxRuntime

            rt = OnnxRuntime(spec, next(Path(args.data_dir).glob("artifacts/*ort-int8/model.int8.onnx")))
        else:
            rt = OpenVinoRuntime(spec, model, precision=precision)
        if base == "bounded" or props:  # recompiled with these properties / upper-bounded dims
            core = ov.Core()
            m = core.read_model(str(model))
            if base == "bounded":  # as OpenVINO's CPU guide recommends for dynamic shapes
                m.reshape(
                    {
                        p.any_name: ov.PartialShape([ov.Dimension(1, 64), ov.Dimension(1, maxt)])
                        for p in m.inputs
                    }
                )
            config = {
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": 2,
                "INFERENCE_PRECISION_HINT": precision,
                "CPU_RUNTIME_CACHE_CAPACITY": 50,
            } | props
            rt._compiled = core.compile_model(m, "CPU", config)
            rt._request = rt._compiled.create_infer_request()
            rt._output = rt._compiled.output(0)
        runtimes[name] = (rt, rb, tb)
        if rb and tb:  # warm every reachable bucket shape, as a load-time warm-up would
            t0, n = time.perf_counter(), 0
            for i, r in enumerate(rb):
                for j, t in enumerate(tb):
                    smallest = ((rb[i - 1] + 1) if i else 1) * ((tb[j - 1] + 1) if j else 1)
                    if smallest <= args.budget:
                        ids = np.full((r, t), tok.pad_id, dtype=np.int64)
                        rt.embed(ids, np.ones_like(ids))
                        n += 1
            print(f"{name}: warmed {n} shapes in {time.perf_counter() - t0:.1f}s", flush=True)
    corpus = corpus_texts(None)[0]
    results = {name: [] for name in chosen}
    detail = []
    for rep in range(args.first_rep, args.first_rep + args.repeats):
        texts = sample(corpus, args.texts, 1000 + rep)
        ids = tok.encode_texts(texts, overflow="truncate").ids
        calls = calls_for([np.asarray(i) for i in ids], limits)
        real = sum(len(i) for i in ids)
        order = chosen[rep % len(chosen) :] + chosen[: rep % len(chosen)]
        by_length = sorted((np.asarray(i) for i in ids), key=len)
        sorted32 = [by_length[k : k + 32] for k in range(0, len(by_length), 32)]  # the bench's baseline
        for name in order:
            rt, rb, tb = runtimes[name]
            feeds = [
                padded(c, tok.pad_id, rb, tb) for c in (sorted32 if name.startswith("sorted32") else calls)
            ]
            pad_tokens = sum(f[0].size for f in feeds)
            started, cpu = time.perf_counter(), time.process_time()
            for input_ids, mask, n in feeds:
                rt.embed(input_ids, mask)[:n]
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            results[name].append(len(texts) / seconds)
            detail.append(
                {
                    "rep": rep,
                    "variant": name,
                    "texts_per_s": round(len(texts) / seconds, 1),
                    "texts_per_cpu_s": round(len(texts) / cpu, 1),
                    "calls": len(calls),
                    "padding_share": round(1 - real / pad_tokens, 3),
                    "load": os.getloadavg()[0],
                }
            )
            print(json.dumps(detail[-1]), flush=True)
    summary = {
        n: {"median_texts_per_s": round(statistics.median(v), 1), "runs": [round(x, 1) for x in v]}
        for n, v in results.items()
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"summary": summary, "detail": detail, "args": vars(args) | {"data_dir": str(args.data_dir)}},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
