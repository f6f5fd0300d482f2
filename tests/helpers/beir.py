"""A BEIR folder small enough to read: what the eval tests load and search."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_beir(folder: Path) -> Path:
    """A tiny BEIR folder: three topics, graded judgments, one query with no relevant document."""
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        ("espresso", "Coffee", "Espresso is brewed by forcing hot water through finely ground coffee beans."),
        ("tea", "Tea", "Green tea leaves are steamed or pan-fired soon after picking to stop oxidation."),
        ("bikes", "", "A bicycle chain should be cleaned and oiled every few hundred kilometres."),
        ("tyres", "Bicycle tyres", "Road bike tyres are usually inflated to between six and eight bar."),
        ("bread", "Bread", "Sourdough rises with wild yeast and lactic acid bacteria, not baker's yeast."),
    ]
    lines = [json.dumps({"_id": i, "title": t, "text": x}) for i, t, x in corpus]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    queries = [("q1", "how do I make espresso coffee"), ("q2", "bicycle maintenance"), ("q3", "unjudged")]
    lines = [json.dumps({"_id": i, "text": t}) for i, t in queries]
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\tespresso\t2\nq2\tbikes\t2\nq2\ttyres\t1\nq2\tbread\t0\nq3\ttea\t0\n"
    )
    return folder
