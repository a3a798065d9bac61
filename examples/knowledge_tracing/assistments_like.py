#!/usr/bin/env python3
"""Writes three-line files of the size and shape of the DKT paper's ASSISTments 2009 split — 3,361
training students with 407,967 answers (longest 4,290) and 856 test students with 117,567 answers
(longest 8,214), over 124 items — with simulated answers, for checking that the example runs on
data of that size (memory, time per epoch) without the real files.

    python3 examples/knowledge_tracing/assistments_like.py target/assistments_like
    cargo run --release --example knowledge_tracing -- \\
        --data target/assistments_like/train.txt --test target/assistments_like/test.txt \\
        --concepts target/assistments_like/concepts.csv

History lengths are log-normal (most students answer tens of questions, a few thousands), scaled
to the totals above, the longest set to the maximum. Each student works through items grouped in
20 concepts in runs (a practice session stays on one concept for a while); answers follow
P(right) = 0.1 + 0.9·σ(θ_c + 0.05·n_c − β_i), θ_c ~ N(0, 1.5²) per student and concept, n_c the
answers to that concept so far, β_i ~ N(0, 1). Standard library only; seeded.
"""
import math
import random
import sys
from pathlib import Path

ITEMS, CONCEPTS = 124, 20


def lengths(rng, students, total, longest):
    raw = [rng.lognormvariate(0.0, 1.3) for _ in range(students)]
    scale = (total - longest) / (sum(raw) - max(raw))
    out = [max(2, round(v * scale)) for v in raw]
    out[raw.index(max(raw))] = longest
    # Make the total exact by adjusting the longest-but-one histories.
    diff = total - sum(out)
    order = sorted(range(students), key=lambda i: -out[i])[1:]
    k = 0
    while diff != 0:
        i = order[k % len(order)]
        step = 1 if diff > 0 else -1
        if out[i] + step >= 2:
            out[i] += step
            diff -= step
        k += 1
    return out


def student(rng, n, concept_of, difficulty):
    by_concept = [[j for j in range(ITEMS) if concept_of[j] == c] for c in range(CONCEPTS)]
    theta = [rng.gauss(0.0, 1.5) for _ in range(CONCEPTS)]
    practice = [0] * CONCEPTS
    items, answers = [], []
    c = rng.randrange(CONCEPTS)
    while len(items) < n:
        if rng.random() < 0.15:
            c = rng.randrange(CONCEPTS)  # a new session
        j = rng.choice(by_concept[c])
        z = theta[c] + 0.05 * practice[c] - difficulty[j]
        p = 0.1 + 0.9 / (1.0 + math.exp(-z))
        items.append(j)
        answers.append(1 if rng.random() < p else 0)
        practice[c] += 1
    return items, answers


def write(path, rng, counts, concept_of, difficulty):
    with open(path, "w") as f:
        for n in counts:
            items, answers = student(rng, n, concept_of, difficulty)
            f.write(f"{n}\n{','.join(map(str, items))}\n{','.join(map(str, answers))}\n")


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/assistments_like")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2009)
    concept_of = [j % CONCEPTS for j in range(ITEMS)]
    rng.shuffle(concept_of)
    difficulty = [rng.gauss(0.0, 1.0) for _ in range(ITEMS)]
    write(out / "train.txt", rng, lengths(rng, 3361, 407_967, 4290), concept_of, difficulty)
    write(out / "test.txt", rng, lengths(rng, 856, 117_567, 8214), concept_of, difficulty)
    with open(out / "concepts.csv", "w") as f:
        f.write("item,concept\n")
        for j, c in enumerate(concept_of):
            f.write(f"{j},{c}\n")
    print(f"wrote train.txt, test.txt and concepts.csv to {out}")


if __name__ == "__main__":
    main()
