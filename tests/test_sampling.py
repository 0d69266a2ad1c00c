"""The sampling contract: C++ == Triton (interpreter) == sort-based torch reference, in every mode;
a row's token ignores the rest of its batch; frequencies follow the (filtered) distribution."""
import numpy as np
import pytest
import torch
from scipy.stats import chi2

from warmfast import _C
from warmfast.engine.sampling import SamplingParams, sample_logits, sample_probs
from warmfast.kernels.sampling import sample as triton_sample
from warmfast.kernels.sampling import sample_ref
from kernel_common import DEV  # where the Triton sampler runs: CUDA, or the CPU interpreter

MODES = {  # name -> (temperature, top_k, top_p, min_p)
    "greedy": (0.0, 0, 1.0, 0.0),
    "plain": (1.0, 0, 1.0, 0.0),
    "temperature": (0.6, 0, 1.0, 0.0),
    "top_k": (1.0, 7, 1.0, 0.0),
    "top_p": (1.0, 0, 0.7, 0.0),
    "min_p": (1.4, 0, 1.0, 0.05),
    "all": (0.8, 25, 0.9, 0.02),
}


def random_probs(n: int, v: int, seed: int) -> torch.Tensor:
    """Peaked and flat rows, exact ties, exact zeros, and unnormalised scales."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * torch.linspace(0.3, 6.0, n)[:, None]
    probs = torch.softmax(logits, -1)
    probs[0, : v // 3] = 0.0  # zeros never win
    probs[1, 5:15] = probs[1].max()  # a tie at the top
    probs[2] *= 1e-30  # only ratios matter
    probs[3, ::4] = probs[3, 1]  # many ties in the middle
    return probs.contiguous()


def run_all(probs, seeds, reqs, steps, mode):
    n = probs.shape[0]
    t, k, p, m = MODES[mode]
    temp, tk, tp, mp = (np.full(n, t), np.full(n, k, np.int64), np.full(n, p), np.full(n, m))
    cpp = _C.sample(probs.numpy(), np.asarray(seeds, np.uint64), np.asarray(reqs, np.uint64),
                    np.asarray(steps, np.uint32), temperature=temp, top_k=tk, top_p=tp, min_p=mp).tolist()
    dev = [torch.tensor(np.asarray(seeds, np.uint64).view(np.int64)),
           torch.tensor(np.asarray(reqs, np.uint64).view(np.int64)), torch.tensor(steps, dtype=torch.int64),
           torch.from_numpy(temp), torch.from_numpy(tk), torch.from_numpy(tp), torch.from_numpy(mp)]
    tri = triton_sample(probs.to(DEV), *[a.to(DEV) for a in dev]).tolist()
    ref = sample_ref(probs, seeds, reqs, steps, temp, tk, tp, mp)
    return cpp, tri, ref


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("v", [97, 1500])
def test_cpp_equals_triton_equals_ref(mode, v):
    n = 6
    probs = random_probs(n, v, seed=v)
    seeds = [0, 1, 2**64 - 1, 7, 123456789, 2**40]
    reqs = [5, 2**63 + 11, 0, 99, 3, 2**33 + 1]
    steps = [0, 1, 2, 2**32 - 1, 40, 7]
    cpp, tri, ref = run_all(probs, seeds, reqs, steps, mode)
    assert cpp == tri == ref, (cpp, tri, ref)
    assert all(probs[r, t] > 0 for r, t in enumerate(cpp))


@pytest.mark.parametrize("mode", ["plain", "temperature", "all"])
def test_cpp_equals_ref_over_many_draws(mode):
    # the C++ race skips the logarithm of entries that cannot win; over 300 draws (flat rows,
    # where the skipping bound is tightest, and peaked ones) the token is still the reference's
    n, v = 300, 301
    probs = random_probs(n, v, seed=11)
    probs[10:20] = 1.0 / v  # perfectly flat rows
    seeds = list(range(n))
    reqs = [(2**64 - 1 - 7 * i) for i in range(n)]
    steps = [i % 5 for i in range(n)]
    t, k, p, m = MODES[mode]
    temp, tk, tp, mp = (np.full(n, t), np.full(n, k, np.int64), np.full(n, p), np.full(n, m))
    cpp = _C.sample(probs.numpy(), np.asarray(seeds, np.uint64), np.asarray(reqs, np.uint64),
                    np.asarray(steps, np.uint32), temperature=temp, top_k=tk, top_p=tp, min_p=mp).tolist()
    assert cpp == sample_ref(probs, seeds, reqs, steps, temp, tk, tp, mp)
    assert len(set(cpp[10:20])) > 1  # the flat rows really draw different tokens


def test_mixed_settings_in_one_batch_equal_across_implementations():
    probs = random_probs(7, 300, seed=3)
    params = [SamplingParams(*MODES[m], seed=i) for i, m in enumerate(MODES)]
    reqs, steps = [11 * i for i in range(7)], [i * i for i in range(7)]
    assert (sample_probs(probs, params, reqs, steps, "cpp")
            == sample_probs(probs.to(DEV), params, reqs, steps, "triton"))


def test_greedy_and_filter_tie_rules():
    def draws(p, n=200, **kw):
        """The set of tokens over n steps of one request (one batched call)."""
        args = {k: np.full(n, v) for k, v in kw.items()}
        return set(_C.sample(np.tile(np.asarray(p, np.float32), (n, 1)), np.full(n, 3, np.uint64),
                             np.full(n, 4, np.uint64), np.arange(n, dtype=np.uint32), **args).tolist())

    assert draws([0.1, 0.4, 0.4, 0.1], temperature=0.0) == {1}  # greedy: lowest index of the max
    # top-k = 2 with a tie at the 2nd value keeps all tied entries (HF TopK rule), never index 0
    assert draws([0.05, 0.4, 0.3, 0.3], top_k=2) == {1, 2, 3}
    # top-p = 0.5: mass strictly above the 0.28 entries is 0.4 < 0.5, so both ties survive
    assert draws([0.04, 0.4, 0.28, 0.28], top_p=0.5) == {1, 2, 3}
    # top-p = 0.35: mass above the 0.28 entries is 0.4 >= 0.35: only the top entry
    assert draws([0.04, 0.4, 0.28, 0.28], top_p=0.35) == {1}
    # min-p = 0.5 keeps p >= 0.2 here
    assert draws([0.1, 0.4, 0.3, 0.2], min_p=0.5) == {1, 2, 3}
    assert draws([0.1, 0.4, 0.3, 0.2]) == {0, 1, 2, 3}  # and without filters every entry comes up


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_row_token_ignores_the_rest_of_the_batch(impl):
    probs = random_probs(9, 211, seed=5).to(DEV if impl == "triton" else "cpu")
    params = [SamplingParams(*MODES[m], seed=42) for m in ["plain", "top_p", "all"]] * 3
    reqs, steps = list(range(100, 109)), [3] * 9
    together = sample_probs(probs, params, reqs, steps, impl)
    alone = [sample_probs(probs[i:i + 1], params[i:i + 1], reqs[i:i + 1], steps[i:i + 1], impl)[0]
             for i in range(9)]
    perm = [4, 8, 0, 2, 6, 1, 7, 3, 5]
    shuffled = sample_probs(probs[perm], [params[i] for i in perm], [reqs[i] for i in perm], [3] * 9, impl)
    assert together == alone
    assert [shuffled[perm.index(i)] for i in range(9)] == together


def test_logits_dispatch_batch_invariant_and_greedy_is_logit_argmax():
    logits = torch.randn(6, 50) * 2
    params = [SamplingParams(0.0), SamplingParams(0.9, seed=1), SamplingParams(1.0, top_k=5, seed=2)] * 2
    reqs, steps = [1, 2, 3, 4, 5, 6], [0] * 6
    toks = sample_logits(logits, params, reqs, steps, "cpp")
    assert toks[0] == int(logits[0].argmax()) and toks[3] == int(logits[3].argmax())
    for i in range(6):
        assert sample_logits(logits[i:i + 1], params[i:i + 1], reqs[i:i + 1], [0], "cpp") == [toks[i]]
    assert toks == sample_logits(logits.to(DEV), params, reqs, steps, "triton")


def chi_square_ok(counts: np.ndarray, expected_p: np.ndarray, alpha: float = 1e-4) -> tuple[float, float]:
    n = counts.sum()
    support = expected_p > 0
    assert counts[~support].sum() == 0, "a filtered-out entry was drawn"
    exp = n * expected_p[support]
    stat = float(((counts[support] - exp) ** 2 / exp).sum())
    return stat, float(chi2.ppf(1 - alpha, df=int(support.sum()) - 1))


@pytest.mark.parametrize("mode", ["plain", "temperature", "top_k", "top_p", "min_p"])
def test_frequencies_match_the_filtered_distribution(mode):
    p = np.array([0.30, 0.22, 0.15, 0.11, 0.08, 0.06, 0.04, 0.02, 0.015, 0.005], np.float64)
    t, k, top_p, min_p = {"plain": (1.0, 0, 1.0, 0.0), "temperature": (0.7, 0, 1.0, 0.0),
                          "top_k": (1.0, 4, 1.0, 0.0), "top_p": (1.0, 0, 0.8, 0.0),
                          "min_p": (1.0, 0, 1.0, 0.25)}[mode]
    q = p ** (1.0 / t)
    q /= q.sum()
    if k:
        q[k:] = 0.0
    if top_p < 1.0:  # mass strictly above each entry (sorted descending, no ties here)
        above = np.concatenate([[0.0], np.cumsum(q)[:-1]])
        q[above >= top_p * q.sum()] = 0.0
    if min_p:
        q[q < min_p * q.max()] = 0.0
    q /= q.sum()
    n = 20000
    probs = np.tile(p.astype(np.float32), (n, 1))
    toks = _C.sample(probs, np.full(n, 2024, np.uint64), np.arange(n, dtype=np.uint64),
                     np.zeros(n, np.uint32), temperature=np.full(n, t), top_k=np.full(n, k, np.int64),
                     top_p=np.full(n, top_p), min_p=np.full(n, min_p))
    stat, bound = chi_square_ok(np.bincount(toks, minlength=len(p)), q)
    assert stat < bound, (mode, stat, bound)


def test_steps_and_seeds_give_fresh_draws():
    p = np.full((1, 1000), 1.0, np.float32)
    draws = {int(_C.sample(p, np.array([s], np.uint64), np.array([9], np.uint64), np.array([k], np.uint32))[0])
             for s in range(5) for k in range(20)}
    assert len(draws) > 90  # 100 draws over 1000 equal entries: collisions are rare


def test_triton_launcher_validates():
    probs = torch.ones(2, 8, device=DEV)
    z64, f64 = torch.zeros(2, dtype=torch.int64, device=DEV), torch.ones(2, dtype=torch.float64, device=DEV)
    with pytest.raises(ValueError, match="top_p must be torch.float64"):
        triton_sample(probs, z64, z64, z64, f64, z64, torch.ones(2, device=DEV), f64 * 0)
    with pytest.raises(ValueError, match="row 1 has invalid settings"):
        triton_sample(probs, z64, z64, z64, f64, z64, torch.tensor([1.0, 0.0], dtype=torch.float64, device=DEV),
                      f64 * 0)
    probs[1] = 0.0
    with pytest.raises(ValueError, match="probs row 1 has no positive finite entry"):
        triton_sample(probs, z64, z64, z64, f64, z64, f64, f64 * 0)


@pytest.mark.parametrize("mode", ["greedy", "plain", "top_k", "top_p", "all"])
def test_rows_split_over_several_programs_agree(mode):
    # 9,000 entries: three 4,096-entry chunks per row in the Triton sampler (the last one ragged),
    # so maxima, histograms and the race are combined across programs; the top entries are put in
    # different chunks and a tie straddles a chunk border
    n, v = 4, 9000
    probs = random_probs(n, v, seed=17)
    probs[1, 4095] = probs[1, 4096] = probs[1, 8999] = probs[1].max() * 2  # tied maxima in 3 chunks
    probs[3] = (probs[3] * 40).round() / 40 + 1e-3  # few distinct values: ties at every threshold
    seeds, reqs, steps = [3, 1, 4, 1], [5, 9, 2, 6], [5, 3, 5, 8]
    cpp, tri, ref = run_all(probs, seeds, reqs, steps, mode)
    assert cpp == tri == ref, (cpp, tri, ref)


@pytest.mark.parametrize("impl", ["cpp", "triton"])
def test_thresholds_on_digit_borders(impl):
    # entries whose bit patterns differ only in the low radix digits (one ulp apart) and across the
    # 2^20 / 2^10 digit borders: top-k and top-p must still cut between the right neighbours
    base = np.float32(0.25).view(np.int32)
    offsets = np.array([0, 1, 2, 1023, 1024, 1025, 2**20 - 1, 2**20, 2**20 + 1, 3 * 2**20], np.int32)
    p = torch.from_numpy((base + offsets).view(np.float32).astype(np.float32))
    v = p.numel()
    settings = [(k, tp) for k in (1, 3, 4, 7, 9) for tp in (1.0, 0.35)]
    draws = 6  # steps per setting
    params = [SamplingParams(1.0, top_k=k, top_p=tp, seed=7) for k, tp in settings for _ in range(draws)]
    n = len(params)
    probs = p.repeat(n, 1)
    reqs, steps = [3] * n, list(range(n))
    got = sample_probs(probs.to(DEV) if impl == "triton" else probs, params, reqs, steps, impl)
    ref = sample_ref(probs, [7] * n, reqs, steps, [1.0] * n, [q.top_k for q in params],
                     [q.top_p for q in params], [0.0] * n)
    assert got == ref
    for j, (k, tp) in enumerate(settings):  # values grow with the index: top-k keeps the last k
        toks = got[j * draws:(j + 1) * draws]
        assert min(toks) >= v - k, (k, tp, toks)
        if tp == 1.0 and k > 1:
            assert len(set(toks)) > 1, (k, toks)  # nearly equal entries: several come up


def test_triton_launcher_finds_the_first_bad_row_of_a_large_batch():
    # the settings check and the empty-row check run as kernels over blocks of 256 rows: the
    # lowest offending row is reported whichever block it is in
    n = 300
    probs = torch.rand(n, 8, device=DEV) + 0.1
    z64 = torch.zeros(n, dtype=torch.int64, device=DEV)
    temp, ones = torch.zeros(n, dtype=torch.float64, device=DEV), torch.ones(n, dtype=torch.float64, device=DEV)
    for field, value in (("temp", float("nan")), ("top_p", 0.0), ("min_p", float("inf"))):
        args = {"temp": temp.clone(), "top_p": ones.clone(), "min_p": temp.clone()}
        args[field][[290, 270]] = value
        with pytest.raises(ValueError, match="row 270 has invalid settings"):
            triton_sample(probs, z64, z64, z64, args["temp"], z64, args["top_p"], args["min_p"])
    steps = z64.clone()
    steps[299] = 2**32
    with pytest.raises(ValueError, match="row 299 has invalid settings"):
        triton_sample(probs, z64, z64, steps, temp, z64, ones, temp)
    probs[[280, 260]] = float("nan")
    with pytest.raises(ValueError, match="probs row 260 has no positive finite entry"):
        triton_sample(probs, z64, z64, z64, temp, z64, ones, temp)
    probs[[280, 260]] = 1.0
    assert triton_sample(probs, z64, z64, z64, temp, z64, ones, temp).tolist() == probs.argmax(-1).tolist()


@pytest.mark.parametrize("v", [1, 2, 3, 5])
def test_tiny_vocabularies(v):
    probs = torch.tensor([[0.5, 0.2, 0.2, 0.05, 0.05][:v]] * len(MODES), dtype=torch.float32)
    params = [SamplingParams(*MODES[m], seed=9) for m in MODES]
    reqs, steps = list(range(len(MODES))), [2] * len(MODES)
    cpp = sample_probs(probs, params, reqs, steps, "cpp")
    tri = sample_probs(probs.to(DEV), params, reqs, steps, "triton")
    ref = sample_ref(probs, [9] * len(MODES), reqs, steps, *zip(*[MODES[m] for m in MODES]))
    assert cpp == tri == ref


@pytest.mark.parametrize("temperature", [0.02, 0.25, 4.0, 50.0])
def test_extreme_temperatures(temperature):
    # the C++ skips exact weights where a per-exponent bound settles W = 0, min-p or the race:
    # very low and very high temperatures stretch those bounds the most
    n, v = 8, 700
    probs = random_probs(n, v, seed=int(temperature * 100))
    settings = [(0, 1.0, 0.0), (0, 0.9, 0.0), (0, 1.0, 0.3), (5, 0.5, 0.01)] * 2
    temp = np.full(n, temperature)
    tk = np.array([s[0] for s in settings], np.int64)
    tp = np.array([s[1] for s in settings])
    mp = np.array([s[2] for s in settings])
    seeds, reqs, steps = list(range(n)), list(range(50, 50 + n)), [9] * n
    cpp = _C.sample(probs.numpy(), np.asarray(seeds, np.uint64), np.asarray(reqs, np.uint64),
                    np.asarray(steps, np.uint32), temperature=temp, top_k=tk, top_p=tp, min_p=mp).tolist()
    dev = [torch.tensor(seeds), torch.tensor(reqs), torch.tensor(steps), torch.from_numpy(temp),
           torch.from_numpy(tk), torch.from_numpy(tp), torch.from_numpy(mp)]
    tri = triton_sample(probs.to(DEV), *[a.to(DEV) for a in dev]).tolist()
    assert cpp == tri == sample_ref(probs, seeds, reqs, steps, temp, tk, tp, mp)
