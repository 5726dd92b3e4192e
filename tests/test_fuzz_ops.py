"""Property-based fuzzing of every edgead.ops function (hypothesis).

Inputs: random shapes (zero-size dimensions included), dtypes, memory layouts (C order, Fortran order,
negative strides, zero strides, non-contiguous slices, misaligned buffers, read-only arrays), NaN/Inf
values, huge magnitudes and extreme integer arguments (0, negative, > size, 2**31, 2**63, bool, float).

The property, for every call: either the op returns a result equal to ops_reference's on the same
values (within the tolerance stated per op), or it raises TypeError/ValueError whose message names one
of the op's arguments. Anything else -- a crash, another exception type, a message naming no argument,
a wrong or silently garbage result -- fails. A second property per op draws only documented-valid
inputs and requires a result (no false rejections).

Bounded for CI: EDGEAD_FUZZ_EXAMPLES examples per test (default 60, derandomized: the same cases every
run); tools/fuzz_long.py runs >= 10,000 per op family with a random seed.
"""
import collections
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgead import ops
from edgead import ops_reference as R

N_EXAMPLES = int(os.environ.get("EDGEAD_FUZZ_EXAMPLES", "60"))
DERANDOMIZE = os.environ.get("EDGEAD_FUZZ_RANDOM", "0") != "1"
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)

DTYPES = ["float32"] * 4 + ["float16"] * 2 + ["float64", "int32", "uint8", "bool"]
LAYOUTS = ["c"] * 8 + ["fortran", "negative", "zero", "strided", "misaligned", "readonly"]
INTS = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**31 - 1 + 2**31, 2**63 - 1, -2**31, -2**63]),
                 st.sampled_from([True, False, 2.0, 3.9, None, "3", np.int64(2), np.int32(1), np.uint64(2**63)]))


# ------------------------------------------------------------------------------------------------
# array generation
# ------------------------------------------------------------------------------------------------
def _values(data, shape, dtype, special):
    """float64 values of `shape` for `dtype`; `special`: none / nan / inf / huge / tiny / dup."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    g = np.random.default_rng(seed)
    if dtype == "bool":
        return g.random(shape) < 0.5
    if dtype in ("uint8", "int32"):
        return g.integers(0, 2 if data.draw(st.booleans(), label="binary") else 255, shape)
    v = g.random(shape) if special == "unit" else g.standard_normal(shape)
    if v.size and special in ("nan", "inf", "-inf"):
        flat = v.reshape(-1)
        flat[g.integers(0, flat.size)] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[special]
    elif special == "huge":
        v = v * (6e4 if dtype == "float16" else 1e20 if dtype == "float32" else 1e200)
    elif special == "tiny":
        v = v * 1e-30
    elif special == "dup" and v.ndim >= 1 and v.shape[0] > 1:
        v[1:] = v[:1]
    return v


def _layout(a, layout):
    """Same values, another memory layout."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "negative" and a.ndim >= 1:
        b = np.ascontiguousarray(a[::-1])
        return b[::-1]
    if layout == "zero" and a.ndim >= 1 and a.shape[0] >= 1:
        row = np.ascontiguousarray(a[:1])
        return np.broadcast_to(row, a.shape)  # stride 0 along axis 0: every row equals row 0 (values change!)
    if layout == "strided" and a.ndim >= 1:
        big = np.repeat(a, 2, axis=-1)
        return big[..., ::2]
    if layout == "misaligned":
        buf = bytearray(a.nbytes + 1)
        b = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        b[...] = a
        return b
    if layout == "readonly":
        b = np.ascontiguousarray(a).copy()
        b.flags.writeable = False
        return b
    return np.ascontiguousarray(a)


def draw_array(data, label, shape, dtypes=DTYPES, layouts=LAYOUTS, specials=("none",) * 10 + ("nan", "inf", "-inf", "huge", "tiny", "dup")):
    dtype = data.draw(st.sampled_from(dtypes), label=f"{label}.dtype")
    special = data.draw(st.sampled_from(specials), label=f"{label}.values")
    layout = data.draw(st.sampled_from(layouts), label=f"{label}.layout")
    with np.errstate(all="ignore"):
        a = _values(data, shape, dtype, special).astype(dtype)
    return _layout(a, layout)


def shape_near(data, label, base, max_extra_dims=1):
    """`base` most of the time; sometimes a dimension changed, dropped, added or zero."""
    kind = data.draw(st.sampled_from(["same"] * 12 + ["zero", "change", "drop", "add"]), label=f"{label}.shape")
    shape = list(base)
    if kind == "zero" and shape:
        shape[data.draw(st.integers(0, len(shape) - 1))] = 0
    elif kind == "change" and shape:
        i = data.draw(st.integers(0, len(shape) - 1))
        shape[i] = data.draw(st.integers(0, 9))
    elif kind == "drop" and shape:
        shape.pop()
    elif kind == "add":
        shape.append(data.draw(st.integers(1, 3)))
    return tuple(shape)


ARG_ERRORS = (TypeError, ValueError)


def expect_clean_error(exc, names):
    """TypeError/ValueError naming one of the op's arguments (quoted or bare word)."""
    assert isinstance(exc, ARG_ERRORS), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert any(re.search(rf"\b{re.escape(n)}\b", msg) for n in names), f"message names no argument {names}: {msg!r}"


COUNTS = collections.Counter()  # (op, "accepted" | "rejected") -> calls; tools/fuzz_long.py reports them


def call(fn, names, *args, **kw):
    """(result, None) or (None, exception) after checking the exception is a clean argument error."""
    try:
        res = fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - classified here
        COUNTS[(fn.__name__, "rejected")] += 1
        expect_clean_error(e, names)
        return None, e
    COUNTS[(fn.__name__, "accepted")] += 1
    return res, None


def finite(*arrays):
    with np.errstate(all="ignore"):
        return all(np.isfinite(np.asarray(a, np.float64)).all() for a in arrays)


def as_int(v):
    """The int an integer argument means, or None when it is not an int (bool, float, str, None)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        return None
    return int(v)


# ------------------------------------------------------------------------------------------------
# knn
# ------------------------------------------------------------------------------------------------
KNN_NAMES = ("queries", "bank", "k", "bank_sq_norms")


def check_knn_result(q, b, k, dist, idx):
    q64, b64 = np.asarray(q, np.float64), np.asarray(b, np.float64)
    ref_d, ref_i = R.knn_reference(q64, b64, k)
    dist, idx = np.asarray(dist), np.asarray(idx)
    assert dist.shape == (q.shape[0], k) and idx.shape == (q.shape[0], k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    assert ((idx >= 0) & (idx < b.shape[0])).all(), f"index out of range: {idx.min()}..{idx.max()}"
    got = np.sqrt(((q64[:, None, :] - b64[idx]) ** 2).sum(-1))
    scale = max(1.0, float(np.abs(ref_d).max(initial=0)))
    # float32 tiled |q|^2 - 2qb + |b|^2 selection: neighbours may swap only on near-ties
    tol = 1e-4 * scale + 1e-3 * float(np.sqrt((q64 ** 2).sum(1).max(initial=0) + (b64 ** 2).sum(1).max(initial=0)))
    np.testing.assert_allclose(got, ref_d, atol=tol)
    np.testing.assert_allclose(dist, ref_d, atol=tol, rtol=1e-4)


@FUZZ
@given(st.data())
def test_fuzz_knn(data):
    Q, M, D = (data.draw(st.integers(0, 7), label=n) for n in ("Q", "M", "D"))
    q = draw_array(data, "queries", shape_near(data, "queries", (Q, D)))
    b = draw_array(data, "bank", shape_near(data, "bank", (M, D)))
    k = data.draw(INTS, label="k")
    use_norms = data.draw(st.sampled_from(["none", "none", "right", "wrongshape", "float64"]), label="norms")
    norms = None
    if use_norms == "right" and b.ndim == 2 and b.dtype in (np.float32, np.float16):
        norms = (np.asarray(b, np.float64) ** 2).sum(1).astype(np.float32)
    elif use_norms == "wrongshape":
        norms = np.zeros(max(M - 1, 0), np.float32)
    elif use_norms == "float64":
        norms = np.zeros(M, np.float64)
    res, err = call(ops.knn, KNN_NAMES, q, b, k, bank_sq_norms=norms)
    kk = as_int(k)
    valid = (q.ndim == 2 and b.ndim == 2 and q.dtype == b.dtype and q.dtype in (np.float32, np.float16)
             and q.shape[1] == b.shape[1] and kk is not None and 1 <= kk <= b.shape[0] and finite(q, b)
             and use_norms in ("none", "right"))
    if res is None:
        return
    assert valid, f"accepted invalid input: q {q.dtype}{q.shape} b {b.dtype}{b.shape} k={k!r} norms={use_norms}"
    check_knn_result(q, b, kk, *res)


@FUZZ
@given(st.data())
def test_fuzz_knn_valid_inputs_are_accepted(data):
    Q, M, D = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 24))
    dtype = data.draw(st.sampled_from(["float32", "float16"]))
    q = draw_array(data, "queries", (Q, D), [dtype], ["c"], ["none", "dup", "tiny"])
    b = draw_array(data, "bank", (M, D), [dtype], ["c"], ["none", "dup", "tiny"])
    k = data.draw(st.integers(1, min(M, 64)))
    (dist, idx), _ = call(ops.knn, KNN_NAMES, q, b, k)
    check_knn_result(q, b, k, dist, idx)
    n = ops.knn_bank_sq_norms(b)
    np.testing.assert_allclose(n, (np.asarray(b, np.float64) ** 2).sum(1), rtol=1e-5, atol=1e-30)


@FUZZ
@given(st.data())
def test_fuzz_knn_bank_sq_norms(data):
    M, D = data.draw(st.integers(0, 9)), data.draw(st.integers(0, 9))
    b = draw_array(data, "bank", shape_near(data, "bank", (M, D)))
    res, err = call(ops.knn_bank_sq_norms, ("bank",), b)
    if res is None:
        return
    assert b.ndim == 2 and b.dtype in (np.float32, np.float16), f"accepted bank {b.dtype}{b.shape}"
    with np.errstate(all="ignore"):
        ref = (np.asarray(b, np.float64) ** 2).sum(1)
    if finite(b) and np.isfinite(ref.astype(np.float32)).all():
        np.testing.assert_allclose(res, ref, rtol=1e-5, atol=1e-30)


# ------------------------------------------------------------------------------------------------
# coreset
# ------------------------------------------------------------------------------------------------
CORESET_NAMES = ("features", "n", "start")


def check_selection(x, n, start, idx, dist=None):
    """Same picks as coreset_reference except on near-ties (then the sequences may diverge: stop)."""
    x64 = np.asarray(x, np.float64)
    idx = np.asarray(idx)
    assert idx.shape == (n,) and idx.dtype == np.int64 and idx[0] == start
    assert ((idx >= 0) & (idx < len(x64))).all()
    ref = R.coreset_reference(x64, n, start=start)
    mind = np.full(len(x64), np.inf)
    # float32 squared distances: relative 1e-4, and below ~1e-19 the square underflows float32's normal
    # range, so such distances are ties (the kernel sees 0 where float64 sees 1e-60)
    scale = float(np.abs(x64).max(initial=0)) * np.sqrt(x64.shape[1])
    atol = 1e-4 * scale + 1e-18 * np.sqrt(x64.shape[1])
    for s in range(1, n):
        np.minimum(mind, ((x64 - x64[idx[s - 1]]) ** 2).sum(1), out=mind)
        d_got, d_ref = np.sqrt(mind[idx[s]]), np.sqrt(mind[ref[s]])
        if dist is not None:
            assert abs(float(dist[s]) - d_got) <= atol, (s, dist[s], d_got)
        if idx[s] != ref[s]:
            assert d_got >= d_ref - atol, f"step {s}: picked {idx[s]} at {d_got}, reference {ref[s]} at {d_ref}"
            return
    if dist is not None:
        assert np.isinf(dist[0])


@FUZZ
@given(st.data())
def test_fuzz_coreset(data):
    N, D = data.draw(st.integers(0, 12), label="N"), data.draw(st.integers(0, 6), label="D")
    x = draw_array(data, "features", shape_near(data, "features", (N, D)))
    n, start = data.draw(INTS, label="n"), data.draw(st.one_of(st.integers(-2, 14), INTS), label="start")
    rd = data.draw(st.booleans(), label="return_distances")
    res, err = call(ops.coreset, CORESET_NAMES, x, n, start=start, return_distances=rd)
    if res is None:
        return
    nn, ss = as_int(n), as_int(start)
    assert (x.ndim == 2 and x.dtype in (np.float32, np.float16) and nn is not None and ss is not None
            and 1 <= nn <= x.shape[0] and 0 <= ss < x.shape[0] and finite(x)), \
        f"accepted invalid input: features {x.dtype}{x.shape} n={n!r} start={start!r}"
    idx, dist = res if rd else (res, None)
    check_selection(x, nn, ss, idx, dist)


@FUZZ
@given(st.data())
def test_fuzz_coreset_valid_inputs_are_accepted(data):
    N, D = data.draw(st.integers(1, 60)), data.draw(st.integers(1, 20))
    x = draw_array(data, "features", (N, D), ["float32", "float16"], ["c"], ["none", "dup", "tiny"])
    n, start = data.draw(st.integers(1, N)), data.draw(st.integers(0, N - 1))
    (idx, dist), _ = call(ops.coreset, CORESET_NAMES, x, n, start=start, return_distances=True)
    check_selection(x, n, start, idx, dist)


# ------------------------------------------------------------------------------------------------
# msgms
# ------------------------------------------------------------------------------------------------
MSGMS_NAMES = ("image", "reconstruction", "c", "scales", "mean_filter", "out")
FLOATS = st.one_of(st.sampled_from([0.0026, 1.0, 0.0, -1.0, 1e-46, 1e39, float("nan"), float("inf"), 1e-3]),
                   st.sampled_from([None, "x", True, np.float32(0.01)]))


def msgms_valid(x, y, c, scales, mean_filter, out):
    sc, mf = as_int(scales), as_int(mean_filter)
    if not (x.ndim == 4 and y.shape == x.shape and x.dtype == y.dtype and x.dtype in (np.float32, np.float16)):
        return False
    if sc is None or mf is None or not 1 <= sc or mf < 1 or mf % 2 == 0 or mf > 63:
        return False
    if x.shape[0] < 1 or x.shape[1] < 1 or min(x.shape[2:]) < 2 ** (sc - 1):
        return False
    if isinstance(c, (bool, str)) or c is None or not (np.isfinite(c) and 1e-30 < c < 1e30):
        return False
    if out is not None and not (out.shape == (x.shape[0],) + x.shape[2:] and out.dtype == np.float32
                                and out.flags.writeable and out.flags.c_contiguous):
        return False
    return finite(x, y)


@FUZZ
@given(st.data())
def test_fuzz_msgms(data):
    B, C = data.draw(st.integers(0, 2), label="B"), data.draw(st.integers(0, 3), label="C")
    H, W = data.draw(st.integers(0, 20), label="H"), data.draw(st.integers(0, 20), label="W")
    x = draw_array(data, "image", shape_near(data, "image", (B, C, H, W)), specials=("unit",) * 6 + ("nan", "inf", "huge"))
    y = draw_array(data, "reconstruction", shape_near(data, "reconstruction", (B, C, H, W)), specials=("unit",) * 6 + ("nan", "inf"))
    c = data.draw(FLOATS, label="c")
    scales = data.draw(st.one_of(st.integers(1, 4), INTS), label="scales")
    mf = data.draw(st.one_of(st.sampled_from([1, 3, 5, 21]), INTS), label="mean_filter")
    out = None
    if data.draw(st.booleans(), label="use_out"):
        out = draw_array(data, "out", shape_near(data, "out", (B, H, W)), ["float32", "float32", "float64"],
                         ["c", "c", "readonly", "fortran", "negative", "misaligned"], ("none",))
    res, err = call(ops.msgms_map, MSGMS_NAMES, x, y, c=c, scales=scales, mean_filter=mf, out=out)
    if res is None:
        return
    assert msgms_valid(x, y, c, scales, mf, out), \
        f"accepted invalid input: image {x.dtype}{x.shape} rec {y.dtype}{y.shape} c={c!r} scales={scales!r} mean_filter={mf!r}"
    ref = R.msgms_map_reference(np.asarray(x, np.float32), np.asarray(y, np.float32), c=float(c), scales=int(scales),
                                mean_filter=int(mf)).numpy()
    assert res.shape == ref.shape and np.isfinite(res).all()
    # float32 gradient/GMS arithmetic in another order: ~1e-6; fp16 inputs are upcast exactly.
    np.testing.assert_allclose(res, ref, atol=2e-4)
    if out is not None:
        assert res is out


@FUZZ
@given(st.data())
def test_fuzz_msgms_valid_inputs_are_accepted(data):
    scales = data.draw(st.integers(1, 4), label="scales")
    lo = 2 ** (scales - 1)
    B, C = data.draw(st.integers(1, 2), label="B"), data.draw(st.integers(1, 3), label="C")
    H, W = data.draw(st.integers(lo, 40), label="H"), data.draw(st.integers(lo, 40), label="W")
    dtype = data.draw(st.sampled_from(["float32", "float16"]), label="dtype")
    x = draw_array(data, "image", (B, C, H, W), [dtype], ["c"], ["unit"])
    y = draw_array(data, "reconstruction", (B, C, H, W), [dtype], ["c"], ["unit", "unit", "dup"])
    c = data.draw(st.sampled_from([0.0026, 1.0, 1e-3, 10.0]), label="c")
    mf = data.draw(st.sampled_from([1, 3, 5, 7, 21, 63]), label="mean_filter")
    res, _ = call(ops.msgms_map, MSGMS_NAMES, x, y, c=c, scales=scales, mean_filter=mf)
    ref = R.msgms_map_reference(np.asarray(x, np.float32), np.asarray(y, np.float32), c=c, scales=scales, mean_filter=mf).numpy()
    np.testing.assert_allclose(res, ref, atol=2e-4)


# ------------------------------------------------------------------------------------------------
# softmask
# ------------------------------------------------------------------------------------------------
SOFTMASK_NAMES = ("pred", "features", "out")


@FUZZ
@given(st.data())
def test_fuzz_softmask(data):
    B = data.draw(st.integers(0, 2), label="B")
    h, w = data.draw(st.integers(0, 6), label="h"), data.draw(st.integers(0, 6), label="w")
    C, Hs, Ws = data.draw(st.integers(0, 3), label="C"), data.draw(st.integers(0, 12), label="Hs"), data.draw(st.integers(0, 12), label="Ws")
    p = draw_array(data, "pred", shape_near(data, "pred", (B, h, w)))
    f = draw_array(data, "features", shape_near(data, "features", (B, C, Hs, Ws)))
    out = None
    if data.draw(st.booleans(), label="use_out"):
        out = draw_array(data, "out", shape_near(data, "out", tuple(f.shape)), [str(f.dtype), str(f.dtype), "float64"],
                         ["c", "c", "readonly", "fortran", "negative", "misaligned"], ("none",))
    res, err = call(ops.softmask_apply, SOFTMASK_NAMES, p, f, out=out)
    if res is None:
        return
    ok = (p.ndim == 3 and f.ndim == 4 and p.shape[0] == f.shape[0] and p.dtype in (np.float32, np.float16)
          and f.dtype in (np.float32, np.float16) and finite(p) and min(p.shape) > 0 and min(f.shape[2:]) > 0
          and (out is None or (out.shape == f.shape and out.dtype == f.dtype and out.flags.writeable and out.flags.c_contiguous)))
    assert ok, f"accepted invalid input: pred {p.dtype}{p.shape} features {f.dtype}{f.shape} out {None if out is None else out.dtype}"
    ref = np.asarray(R.softmask_apply_reference(np.asarray(p, np.float32), np.asarray(f)))
    res = np.asarray(res)
    assert res.dtype == f.dtype and res.shape == f.shape
    with np.errstate(all="ignore"):
        if f.dtype == np.float16:  # one rounding to fp16 in both: at most 1 ulp apart
            np.testing.assert_allclose(res.astype(np.float32), ref.astype(np.float32), rtol=1e-3, atol=1e-7)
        else:
            np.testing.assert_allclose(res, ref, rtol=1e-6, atol=0)


@FUZZ
@given(st.data())
def test_fuzz_softmask_valid_inputs_are_accepted(data):
    B = data.draw(st.integers(1, 3), label="B")
    h, w = data.draw(st.integers(1, 8), label="h"), data.draw(st.integers(1, 8), label="w")
    C, Hs, Ws = data.draw(st.integers(1, 4), label="C"), data.draw(st.integers(1, 33), label="Hs"), data.draw(st.integers(1, 33), label="Ws")
    p = draw_array(data, "pred", (B, h, w), ["float32", "float16"], ["c"], ["none", "none", "dup", "tiny"])
    f = draw_array(data, "features", (B, C, Hs, Ws), ["float32", "float16"], ["c"], ["none"])
    in_place = data.draw(st.booleans(), label="in_place")
    f_before = f.copy()
    res, _ = call(ops.softmask_apply, SOFTMASK_NAMES, p, f, out=f if in_place else None)
    ref = np.asarray(R.softmask_apply_reference(np.asarray(p, np.float32), f_before))
    if f.dtype == np.float16:
        np.testing.assert_allclose(np.asarray(res, np.float32), ref.astype(np.float32), rtol=1e-3, atol=1e-7)
    else:
        np.testing.assert_allclose(res, ref, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------------
# pro_curve / aupro
# ------------------------------------------------------------------------------------------------
PRO_NAMES = ("anomaly_maps", "masks", "fpr_limit")


@FUZZ
@given(st.data())
def test_fuzz_pro(data):
    N, H, W = data.draw(st.integers(0, 3), label="N"), data.draw(st.integers(0, 9), label="H"), data.draw(st.integers(0, 9), label="W")
    maps = draw_array(data, "anomaly_maps", shape_near(data, "anomaly_maps", (N, H, W)), ["float32", "float64", "float16", "int32"])
    masks = draw_array(data, "masks", shape_near(data, "masks", (N, H, W)), ["bool", "uint8", "uint8", "float32", "int32"], specials=("none",))
    if data.draw(st.booleans(), label="quantize"):  # ties between scores
        with np.errstate(all="ignore"):
            maps = np.round(np.asarray(maps) * 2) / 2 if maps.dtype.kind == "f" else maps
    fpr_limit = data.draw(st.one_of(st.sampled_from([0.3, 1.0, 0.01, 0.0, -0.1, 1.5, float("nan")]),
                                    st.sampled_from([None, "0.3", True])), label="fpr_limit")
    curve_or_area = data.draw(st.sampled_from(["pro_curve", "aupro"]), label="fn")
    fn = getattr(ops, curve_or_area)
    res, err = call(fn, PRO_NAMES, maps, masks, fpr_limit)
    if res is None:
        return
    m = np.asarray(masks)
    ok = (maps.ndim == 3 and m.shape == maps.shape and maps.dtype in (np.float32, np.float64)
          and (m.dtype == np.bool_ or (m.dtype == np.uint8 and np.isin(m, (0, 1)).all()))
          and finite(maps) and m.any() and (~m.astype(bool)).any())
    ok = ok and not isinstance(fpr_limit, (str, type(None))) and 0 < float(fpr_limit) <= 1
    assert ok, f"accepted invalid input: maps {maps.dtype}{maps.shape} masks {m.dtype}{m.shape} fpr_limit={fpr_limit!r}"
    ref = R.pro_curve(np.asarray(maps), m.astype(bool), float(fpr_limit))
    area = res.aupro if curve_or_area == "pro_curve" else res
    assert abs(area - ref[3]) <= 1e-9, (area, ref[3])
    if curve_or_area == "pro_curve":
        np.testing.assert_allclose(res.fpr, ref[0], atol=1e-12)
        np.testing.assert_allclose(res.pro, ref[1], atol=1e-12)


@FUZZ
@given(st.data())
def test_fuzz_pro_valid_inputs_are_accepted(data):
    N, H, W = data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(1, 12), label="H"), data.draw(st.integers(2, 12), label="W")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    g = np.random.default_rng(seed)
    masks = g.random((N, H, W)) < data.draw(st.sampled_from([0.05, 0.2, 0.5]), label="density")
    masks.reshape(-1)[0], masks.reshape(-1)[-1] = True, False  # at least one defect and one normal pixel
    dtype = data.draw(st.sampled_from(["float32", "float64"]), label="dtype")
    maps = g.standard_normal((N, H, W)) + masks * data.draw(st.sampled_from([0.0, 0.5, 2.0]), label="signal")
    if data.draw(st.booleans(), label="ties"):
        maps = np.round(maps * 2) / 2
    maps = maps.astype(dtype)
    m = masks.astype(data.draw(st.sampled_from(["bool", "uint8"]), label="mask_dtype"))
    fpr_limit = data.draw(st.sampled_from([0.3, 1.0, 0.05, 1e-3]), label="fpr_limit")
    res, _ = call(ops.pro_curve, PRO_NAMES, maps, m, fpr_limit)
    ref = R.pro_curve(maps, masks, fpr_limit)
    assert abs(res.aupro - ref[3]) <= 1e-9
    np.testing.assert_allclose(res.fpr, ref[0], atol=1e-12)
    np.testing.assert_allclose(res.pro, ref[1], atol=1e-12)
    area, _ = call(ops.aupro, PRO_NAMES, maps, m, fpr_limit)
    assert abs(area - ref[3]) <= 1e-9


def test_fuzz_settings_are_bounded():
    """The CI run is derandomized and bounded; the long run sets EDGEAD_FUZZ_EXAMPLES/EDGEAD_FUZZ_RANDOM."""
    assert N_EXAMPLES >= 1 and FUZZ.deadline is None
    if "EDGEAD_FUZZ_EXAMPLES" not in os.environ:
        assert FUZZ.derandomize and FUZZ.max_examples <= 200
