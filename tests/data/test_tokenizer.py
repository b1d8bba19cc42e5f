"""Tokenizer: round trip, IUPAC -> N, soft-mask bit, reverse complement against Biopython, numpy and torch."""

import numpy as np
import pytest
import torch
from Bio.Seq import Seq
from hypothesis import given, settings
from hypothesis import strategies as st

from genossm.data import tokenizer as tk

BASES = "ACGTacgt"
IUPAC = "RYKMSWBDHVNrykmswbdhvn"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=BASES + "Nn", max_size=300))
def test_round_trip_keeps_bases_and_case(seq):
    ids, soft = tk.encode_with_softmask(seq)
    assert ids.dtype == np.uint8 and soft.dtype == bool
    assert tk.decode(ids, soft) == seq
    assert tk.decode(torch.from_numpy(ids), torch.from_numpy(soft)) == seq
    assert tk.decode(ids) == seq.upper()


def test_ids_are_the_documented_ones():
    assert list(tk.encode("ACGTN")) == [tk.A, tk.C, tk.G, tk.T, tk.N] == [0, 1, 2, 3, 4]
    assert tk.VOCAB[tk.PAD] == "<pad>" and tk.VOCAB[tk.MASK] == "<mask>" and tk.NUM_BASES == 4


def test_iupac_codes_read_as_n_and_keep_their_case_as_softmask():
    ids, soft = tk.encode_with_softmask(IUPAC)
    assert (ids == tk.N).all()
    assert list(soft) == [c.islower() for c in IUPAC]
    assert (tk.encode("-*.1 ") == tk.N).all()


def test_softmask_is_lowercase_and_ids_ignore_case():
    ids_upper, soft_upper = tk.encode_with_softmask("ACGTNACGT")
    ids_lower, soft_lower = tk.encode_with_softmask("acgtnACGT")
    assert (ids_upper == ids_lower).all()
    assert not soft_upper.any()
    assert list(soft_lower) == [True] * 5 + [False] * 4


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=BASES + "N", min_size=1, max_size=300))
def test_reverse_complement_matches_biopython(seq):
    ids, soft = tk.encode_with_softmask(seq)
    expected = str(Seq(seq).reverse_complement())  # Biopython keeps case: lowercase stays lowercase
    rc_ids, rc_soft = tk.reverse_complement(ids, soft)
    assert tk.decode(rc_ids, rc_soft) == expected
    t_ids, t_soft = tk.reverse_complement(torch.from_numpy(ids), torch.from_numpy(soft))
    assert tk.decode(t_ids, t_soft) == expected
    assert np.array_equal(tk.reverse_complement(tk.reverse_complement(ids)), ids)


def test_reverse_complement_batched_torch_flips_last_axis_only():
    batch = torch.from_numpy(np.stack([tk.encode("AACGT"), tk.encode("GGGTN")])).long()
    rc = tk.reverse_complement(batch)
    assert rc.dtype == torch.long
    assert [tk.decode(row) for row in rc] == ["ACGTT", "NACCC"]
    specials = torch.tensor([tk.PAD, tk.MASK, tk.CLS])
    assert tk.complement(specials).tolist() == specials.tolist()


@pytest.mark.parametrize("as_torch", [False, True])
def test_pack_unpack_round_trip(as_torch):
    ids, soft = tk.encode_with_softmask("ACgtNnAC")
    packed = tk.pack(ids, soft)
    assert packed.dtype == np.uint8
    assert list(packed >= 0x80) == list(soft)
    back_ids, back_soft = tk.unpack(torch.from_numpy(packed) if as_torch else packed)
    assert np.array_equal(np.asarray(back_ids), ids) and np.array_equal(np.asarray(back_soft), soft)


def test_tokenizer_object_and_vocab_check():
    tok = tk.Tokenizer()
    tk.Tokenizer.check_compatible(tok.to_dict())
    with pytest.raises(ValueError):
        tk.Tokenizer.check_compatible({"vocab": ["A", "C"]})
