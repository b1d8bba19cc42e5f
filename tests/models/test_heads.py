"""Heads: tied LM head, RC-equivariant LM head, SequenceHead pooling."""

import pytest
import torch

from genossm.models import BiMambaLM, SequenceHead
from genossm.models.heads import LMHead, pool

from conftest import tiny


def test_tied_head_reads_the_embedding_rows_of_the_bases():
    torch.manual_seed(0)
    model = BiMambaLM(tiny(tie_embeddings=True))
    h = torch.randn(2, 5, 16)
    expected = h @ model.embedding.weight[:4].T + model.lm_head.bias
    torch.testing.assert_close(model.lm_head(h, model.embedding.weight), expected)
    assert "lm_head.weight" not in model.state_dict()
    untied = BiMambaLM(tiny(tie_embeddings=False))
    assert untied.state_dict()["lm_head.weight"].shape == (4, 16)


def test_rc_head_reads_the_complement_from_the_second_strand():
    torch.manual_seed(0)
    head = LMHead(3, rc_strands=True, tied=False)
    h = torch.randn(1, 1, 6)
    logits = head(h)[0, 0]
    w, b = head.weight, head.bias
    for base in range(4):
        expected = h[0, 0, :3] @ w[base] + b[base] + h[0, 0, 3:] @ w[3 - base] + b[3 - base]
        torch.testing.assert_close(logits[base], expected)


def test_pooling():
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    valid = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    torch.testing.assert_close(pool(h, "mean", valid), torch.stack([h[0, :3].mean(0), h[1, 1:].mean(0)]))
    torch.testing.assert_close(pool(h, "mean"), h.mean(1))
    torch.testing.assert_close(pool(h, "center", valid), torch.stack([h[0, 1], h[1, 2]]))
    torch.testing.assert_close(pool(h, "center"), h[:, 2])
    with pytest.warns(FutureWarning, match="pooling=cls is deprecated"):
        torch.testing.assert_close(pool(h, "cls"), h[:, 0])
    with pytest.raises(ValueError, match="pooling"):
        SequenceHead(3, 2, pooling="max")


def test_cls_pooling_still_takes_position_0_and_says_it_is_padding_under_centred_padding():
    """There is no <cls> token: "cls" is the window's first position (here a <pad> position), kept for one
    release with a warning that says so and names the choices."""
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    valid = torch.tensor([[False, True, True, True, False], [False, False, True, False, False]])
    with pytest.warns(FutureWarning) as caught:
        torch.testing.assert_close(pool(h, "cls", valid), h[:, 0])
    message = str(caught[0].message)
    assert "no <cls> token" in message and "first position" in message and "<pad>" in message
    assert "pooling=mean or pooling=center" in message
    head = SequenceHead(3, 2, pooling="cls")
    with pytest.warns(FutureWarning, match="pooling=cls"):
        torch.testing.assert_close(head(h, valid), head.proj(h[:, 0]))
    model = BiMambaLM(tiny())
    x = torch.randint(0, 4, (2, 9))
    with pytest.warns(FutureWarning, match="pooling=cls"):
        torch.testing.assert_close(model.embed(x, pooling="cls"), model.embed(x, pooling=None)[:, 0])


def test_unknown_pooling_names_the_documented_choices():
    with pytest.raises(ValueError, match=r"unknown pooling 'max'; choose one of mean, center$"):
        SequenceHead(3, 2, pooling="max")
    with pytest.raises(ValueError, match=r"choose one of mean, center$"):
        pool(torch.zeros(1, 2, 3), "max")


def test_sequence_head_on_the_backbone_ignores_padding_positions():
    torch.manual_seed(0)
    model = BiMambaLM(tiny(rc_equivariant=True))
    head = SequenceHead(model.embed_dim, 2, pooling="mean", dropout=0.1)
    x = torch.randint(0, 4, (4, 12))
    valid = torch.ones(4, 12, dtype=torch.bool)
    valid[:, 9:] = False
    out = head(model.embed(x, pooling=None), valid)
    assert out.shape == (4, 2)
    head.eval()
    feats = model.embed(x, pooling=None)
    torch.testing.assert_close(head(feats, valid), head.proj(pool(feats[:, :9], "mean")))
