#!/usr/bin/env python3
"""How close can any model get to the knowledge-tracing oracle?

Simulates students as `backprop::data::knowledge::simulate` does (item-response theory with a
guess rate and practice gain), optionally with abilities correlated across concepts, and compares
three AUCs on the answers after each student's first: the per-item marginal, the Bayes-optimal
prediction from the answers (it knows the simulator; the posterior over a student's abilities is
importance-sampled from the prior, or — for independent concepts — computed exactly on a grid),
and the oracle (the true probabilities, which need the unobservable abilities).

    pip install numpy
    python3 docs/scripts/knowledge_ceiling.py

The output is quoted in docs/knowledge_tracing.md.
"""
import numpy as np


def auc(p, y):
    """Exact ROC AUC with ties counted as half (the Mann-Whitney statistic)."""
    order = np.argsort(p, kind="mergesort")
    p, y = p[order], y[order]
    ranks = np.empty(len(p))
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and p[j + 1] == p[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    pos = y.sum()
    return (ranks[y].sum() - pos * (pos + 1) / 2) / (pos * (len(y) - pos))


def run(rho=0.0, gain=0.1, guess=0.25, concepts=5, items=50, students=2000, draws=20000, seed=0):
    r = np.random.default_rng(seed)
    kc = r.integers(0, concepts, items)
    beta = r.normal(size=items)

    def abilities(n):  # α_k = √ρ·z + √(1−ρ)·e_k: unit variance, correlation ρ between concepts
        return np.sqrt(rho) * r.normal(size=(n, 1)) + np.sqrt(1 - rho) * r.normal(size=(n, concepts))

    def p_correct(alpha, j):
        return guess + (1 - guess) / (1 + np.exp(beta[j] - alpha))

    a = abilities(students)
    truth, answers = np.zeros((students, items)), np.zeros((students, items), bool)
    for j in range(items):
        truth[:, j] = p_correct(a[:, kc[j]], j)
        answers[:, j] = r.random(students) < truth[:, j]
        a[:, kc[j]] += gain
    marginal = np.tile(answers.mean(0), (students, 1))
    bayes = np.zeros((students, items))
    if rho == 0.0:  # independent concepts: an exact posterior per concept on a grid
        grid = np.linspace(-5, 5, 201)
        post = np.tile(np.exp(-grid ** 2 / 2), (students, concepts, 1))
        practice = np.zeros(concepts)
        for j in range(items):
            k = kc[j]
            p = p_correct(grid + practice[k], j)
            w = post[:, k] / post[:, k].sum(1, keepdims=True)
            bayes[:, j] = w @ p
            post[:, k] *= np.where(answers[:, j:j + 1], p, 1 - p)
            practice[k] += gain
    else:  # importance sampling from the correlated prior
        prior = abilities(draws)
        for s in range(0, students, 200):
            rows = slice(s, min(s + 200, students))
            logw = np.zeros((rows.stop - rows.start, draws))
            practice = np.zeros(concepts)
            for j in range(items):
                k = kc[j]
                p = p_correct(prior[:, k] + practice[k], j)
                w = np.exp(logw - logw.max(1, keepdims=True))
                bayes[rows, j] = (w @ p) / w.sum(1)
                logw += np.where(answers[rows, j:j + 1], np.log(p), np.log1p(-p))
                practice[k] += gain
    score = lambda m: auc(m[:, 1:].ravel(), answers[:, 1:].ravel())
    return score(marginal), score(bayes), score(truth)


if __name__ == "__main__":
    print("| abilities across concepts | marginal | Bayes (from the answers) | oracle | oracle − Bayes |")
    print("|---|---|---|---|---|")
    for rho, label in [(0.0, "independent (the default)"), (0.5, "correlation 0.5"),
                       (0.8, "correlation 0.8"), (1.0, "one shared ability")]:
        m, b, o = run(rho=rho)
        print(f"| {label} | {m:.4f} | {b:.4f} | {o:.4f} | {o - b:.4f} |", flush=True)
