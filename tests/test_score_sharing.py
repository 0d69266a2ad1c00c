"""Scoring shares one forward row between requests whose fed tokens are equal or a prefix of another
request's (same adapter): results equal each request scored alone; the fed rows are exactly the
requests that are no other request's prefix."""
import random

import warmfast as wf
from warmfast.engine.scorer import _Row, share_prefixes


def rel(a, b):
    return abs(a - b) / max(1.0, abs(b))


def test_shared_rows_equal_each_request_alone(tiny):
    paths = tiny("llama", 3)
    eng = wf.Engine.from_pretrained(paths.model_dir, adapters=paths.adapters)
    names = [None, *paths.adapters]
    ctx = "Question: is the sky green? Answer with one word. Verdict:"
    reqs = []
    for a in names:
        reqs += [wf.ScoreRequest(ctx, c, a) for c in (" yes", " no", " maybe", " yes")]  # duplicates too
        reqs.append(wf.ScoreRequest(ctx, " yes it is green", a))  # the single-word rows are its prefixes
        reqs.append(wf.ScoreRequest(ctx + " yes", " it is", a))   # a different split of the same tokens
    reqs.append(wf.ScoreRequest("Something else entirely", " here", names[1]))
    rng = random.Random(0)
    rng.shuffle(reqs)
    got = eng.score(reqs)
    for req, res in zip(reqs, got):
        alone = eng.score([req])[0]
        assert res.num_tokens == alone.num_tokens
        assert rel(res.logprob, alone.logprob) < 1e-5, (req, res.logprob, alone.logprob)
        assert all(rel(x, y) < 1e-5 for x, y in zip(res.token_logprobs, alone.token_logprobs))
        assert res.is_greedy == alone.is_greedy
    # the adapters really differ (B non-zero): the same request under two adapters scores differently
    by = {(r.adapter, r.continuation): g.logprob for r, g in zip(reqs, got) if r.context == ctx}
    assert abs(by[(names[0], " no")] - by[(names[1], " no")]) > 1e-6


def _brute_force_fed(rows):
    """Rows that are no other row's prefix (equal rows: one of them), same slot."""
    keep = set()
    for r in rows:
        longer = [s for s in rows if s.slot == r.slot and len(s.tokens) >= len(r.tokens)
                  and s.tokens[:len(r.tokens)] == r.tokens and s.tokens != r.tokens]
        if not longer:
            keep.add((r.slot, tuple(r.tokens)))
    return keep


def test_share_prefixes_matches_brute_force():
    rng = random.Random(1)
    for _ in range(50):
        rows = []
        for i in range(rng.randint(1, 40)):
            if rows and rng.random() < 0.5:  # derive from an earlier row: prefix, extension or copy
                base = rng.choice(rows)
                toks = base.tokens[:rng.randint(1, len(base.tokens))] + [rng.randrange(3) for _ in range(rng.randint(0, 3))]
                slot = base.slot if rng.random() < 0.8 else rng.randrange(-1, 2)
            else:
                toks, slot = [rng.randrange(3) for _ in range(rng.randint(1, 6))], rng.randrange(-1, 2)
            rows.append(_Row(i, slot, toks, 0, [1]))
        fed = share_prefixes(rows)
        assert {(f.slot, tuple(f.tokens)) for f in fed} == _brute_force_fed(rows)
        assert sorted(r.index for f in fed for r in f.members) == list(range(len(rows)))  # each served once
        for f in fed:
            for r in f.members:
                assert r.slot == f.slot and f.tokens[:len(r.tokens)] == r.tokens
