import math
from collections import Counter

import numpy as np
import pytest

from genossm.data.tokenizer import encode
from genossm.tasks.baselines import MarkovBaseline, baseline_report, composition_entropy


def naive_markov_bits(train: list[str], test: list[str], k: int, alpha: float = 1.0) -> float:
    """Plain-Python reference: counts in dicts, a loop over every test base."""
    counts: list[Counter] = [Counter() for _ in range(k + 1)]
    for seq in train:
        for j in range(k + 1):
            for t in range(j, len(seq)):
                kmer = seq[t - j : t + 1]
                if all(b in "ACGT" for b in kmer):
                    counts[j][kmer] += 1
    bits, n = 0.0, 0
    for seq in test:
        for t, base in enumerate(seq):
            if base not in "ACGT":
                continue
            context = ""
            while len(context) < k and t - len(context) - 1 >= 0 and seq[t - len(context) - 1] in "ACGT":
                context = seq[t - len(context) - 1] + context
            j = len(context)
            num = counts[j][context + base] + alpha
            den = sum(counts[j][context + b] for b in "ACGT") + 4 * alpha
            bits -= math.log2(num / den)
            n += 1
    return bits / n


def test_hand_computed_order1():
    # train AAAC: order 0 counts A=3 C=1; order 1 counts AA=2 AC=1.
    # test AC: 'A' has no context -> order 0: (3+1)/(4+4) = 1/2 -> 1 bit;
    #          'C' after 'A': (1+1)/(3+4) = 2/7 -> log2(7/2) bits.
    m = MarkovBaseline(max_order=1).fit([encode("AAAC")])
    got = m.bits_per_base([encode("AC")])
    assert got[1] == pytest.approx((1 + math.log2(7 / 2)) / 2)
    assert got[0] == pytest.approx((1 + math.log2(8 / 2)) / 2)


def test_matches_naive_reference_with_n_and_several_sequences():
    rng = np.random.default_rng(0)
    alphabet = np.array(list("ACGTN"))
    train = ["".join(rng.choice(alphabet, size=n, p=[0.3, 0.2, 0.2, 0.25, 0.05])) for n in (300, 57, 5)]
    test = ["".join(rng.choice(alphabet, size=n, p=[0.3, 0.2, 0.2, 0.25, 0.05])) for n in (200, 3)]
    model = MarkovBaseline(max_order=4, pseudocount=0.5).fit([encode(s) for s in train])
    got = model.bits_per_base([encode(s) for s in test])
    for k in range(5):
        assert got[k] == pytest.approx(naive_markov_bits(train, test, k, alpha=0.5), rel=1e-9), k


def test_composition_entropy_and_report():
    assert composition_entropy([encode("ACGT" * 5 + "NN")]) == pytest.approx(2.0)
    assert composition_entropy([encode("AAAA")]) == pytest.approx(0.0)
    # a periodic sequence: a Markov chain of order >= 2 predicts it almost perfectly
    train, test = encode("ACGTTGCA" * 200), encode("ACGTTGCA" * 20)
    rep = baseline_report([train], [test], max_order=4)
    assert rep["composition_entropy"] == pytest.approx(2.0)
    assert rep["markov"][0] == pytest.approx(2.0, abs=1e-3)
    assert rep["best_markov"] < 0.1 and rep["best_order"] >= 2
    assert rep["n_bases"] == len(test)


def test_order_chosen_on_the_training_bases_and_the_standard_error():
    rng = np.random.default_rng(1)
    # an order-1 chain (each base mostly repeats the one before): order 1 wins on held-out training bases
    ids = [0]
    for _ in range(20000):
        ids.append(ids[-1] if rng.random() < 0.7 else int(rng.integers(4)))
    train = np.array(ids)
    test = [train[:500].copy(), train[500:1000].copy()]
    rep = baseline_report([train], test, max_order=3)
    assert rep["train_order"] >= 1 and rep["train_markov"] == rep["markov"][rep["train_order"]]
    assert rep["n_train_bases"] == len(train) and rep["n_windows"] == 2
    # the model fitted for the report is fitted on every training base (head + tail)
    full = MarkovBaseline(max_order=3).fit([train]).bits_per_base(test)
    assert rep["markov"] == pytest.approx(full)
    per_window = [MarkovBaseline(max_order=3).fit([train]).bits_per_base([t])[rep["best_order"]] for t in test]
    assert rep["best_markov_se"] == pytest.approx(abs(per_window[0] - per_window[1]) / 2, rel=1e-6)


def test_the_report_says_what_it_is_doing(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="genossm.baselines"):
        baseline_report([encode("ACGT" * 300)], [encode("ACGTAC")], max_order=2)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("Markov baselines: fitting orders 0-2 on 1,200 training bases")
    assert messages[-1].startswith("Markov baselines done in")


def _lp(model: MarkovBaseline, context: str, base: str) -> float:
    """log P(base | context) in nats from the model's counts, by hand (add-one smoothing)."""
    k = len(context)
    row = 0
    for b in context:
        row = row * 4 + "ACGT".index(b)
    counts = model.counts[k][row] + model.pseudocount
    return math.log(counts["ACGT".index(base)] / counts.sum())


def _rc(seq: str) -> str:
    return seq[::-1].translate(str.maketrans("ACGT", "TGCA"))


def test_markov_variant_llr_of_an_snv_by_hand():
    """Order 1: an SNV changes P(allele | base before) and P(base after | allele), on each strand."""
    from genossm.tasks.baselines.markov import variant_llr

    model = MarkovBaseline(max_order=1).fit([encode("ACGTTGCAACGGATCCATGCAAGT" * 3)])
    left, ref, alt, right = "C", "G", "T", "A"
    forward = (_lp(model, left, alt) + _lp(model, alt, right)) - (_lp(model, left, ref) + _lp(model, ref, right))
    # reverse strand: RC(A) RC(G) RC(C) = T C G; the allele's complement follows T, is followed by G
    reverse = (_lp(model, "T", _rc(alt)) + _lp(model, _rc(alt), "G")) - (_lp(model, "T", _rc(ref)) + _lp(model, _rc(ref), "G"))
    got = variant_llr(model, 1, encode(left), encode(ref), encode(alt), encode(right))
    assert got == pytest.approx((forward + reverse) / 2, abs=1e-12)


def test_markov_variant_llr_of_an_insertion_by_hand():
    """Order 0: the alt's extra bases each add log P(base) + log 4; the shared base cancels."""
    from genossm.tasks.baselines.markov import variant_llr

    model = MarkovBaseline(max_order=0).fit([encode("AAAACCGT" * 5)])
    p = {b: _lp(model, "", b) for b in "ACGT"}
    forward = (p["A"] + p["C"] + p["G"] + 3 * math.log(4)) - (p["A"] + math.log(4))
    reverse = (p["T"] + p["G"] + p["C"] + 3 * math.log(4)) - (p["T"] + math.log(4))
    got = variant_llr(model, 0, encode(""), encode("A"), encode("ACG"), encode(""))
    assert got == pytest.approx((forward + reverse) / 2, abs=1e-12)
    # the deletion back is exactly its negative
    assert variant_llr(model, 0, encode(""), encode("ACG"), encode("A"), encode("")) == pytest.approx(-got, abs=1e-12)


def test_markov_order_for_variants_is_chosen_on_the_reference_alone():
    from genossm.tasks.baselines.markov import fit_chosen_order

    rng = np.random.default_rng(0)
    periodic = np.tile(rng.integers(0, 4, 7), 3000)  # period 7: a few bases of context predict the next
    model, order = fit_chosen_order([periodic], max_order=8)
    assert order >= 1
    assert order == baseline_report([periodic], [periodic[:100]], max_order=8)["train_order"]  # the same rule
    assert model.counts[0].sum() == len(periodic)  # refitted on every base after the choice
    random_bases = rng.integers(0, 4, 20000)
    assert fit_chosen_order([random_bases], max_order=6)[1] <= 1  # nothing to learn: a low order wins
