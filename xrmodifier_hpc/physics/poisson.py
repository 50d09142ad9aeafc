"""Exact Poisson draws for fakeit, compiled with numba, each row from its own random stream.

fakeit draws one Poisson count per noticed channel; on XMM EPIC-pn (1305 channels in
0.5-7 keV, most expected counts between 1 and 10 at 2e4 counts per spectrum) numpy's
``Generator.poisson`` spends 55-110 us per spectrum, the largest cost of a grid point. The
draws here follow the same distribution exactly, from uniforms of the point's own generator,
in a fraction of that time:

- ``lam < PTRS_MIN`` (40): inversion by sequential search (Devroye 1986, "Non-Uniform Random
  Variate Generation", section X.3.3): with one uniform ``u`` per channel, the count is the
  smallest ``k`` with ``u < F(k)``, the Poisson CDF built by ``p_k = p_(k-1) lam / k`` from
  ``p_0 = exp(-lam)`` (a whole row's in one vectorised loop, within ~1 ulp of math.exp);
  LANES channels advance together (independent chains the CPU overlaps, no unpredictable
  branch per channel) until the group's largest count is found.
- ``lam >= PTRS_MIN``: Hoermann's transformed rejection with squeeze (PTRS; W. Hoermann
  1993, "The transformed rejection method for generating Poisson random variables",
  Insurance: Mathematics and Economics 12, 39-45), the algorithm numpy uses from lam = 10,
  with ln k! from a table below 1024.

The draws are a deterministic function of the generator's stream, so a point's counts never
depend on its batch, but they are not the numbers ``Generator.poisson`` would give.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from xrmodifier_hpc.physics.compiled import compiled as _compiled

#: lam from which the transformed rejection (PTRS, valid from 10) is used; inversion below.
#: Chosen where the two cost about the same when it was set (one math.exp per inversion draw:
#: inversion 21, 26, 34, 43, 49, 59 ns per draw at lam = 5, 10, 20, 30, 40, 50; PTRS 64, 59,
#: 56, 54, 52 ns at lam = 10, 20, 30, 40, 50). With the vectorised exp and 24 lanes the
#: inversion now costs 27, 33, 40, 47 ns at lam = 45, 60, 80, 100 against PTRS's 47-52, and a
#: switch at 100 would take EPIC-pn's mean draw from ~19 to ~16 ns; it stays at 40 because
#: moving it changes every draw with 40 <= lam < 100 (another realisation of each grid
#: point, and a grid resumed across versions would mix the two)
PTRS_MIN = 40.0
#: largest lam accepted (numpy's own limit is ~9.2e18; beyond ~1e15 counts lose integer
#: precision in float64 anyway)
LAM_MAX = 1e15
#: inversion stops here (F(k) has reached 1 to rounding: probability ~1e-16 of mattering)
K_MAX = 256
#: ln k! tabulated below this k
LOG_FACTORIAL_TABLE = 1024
#: uniforms drawn per PTRS channel (two per try; 2.25-2.66 are used on average, measured for
#: lam from 1e8 down to 10) and beyond, before more are needed
PTRS_UNIFORMS = 3
SPARE_UNIFORMS = 64
#: channels the inversion advances together (independent chains the CPU overlaps): on
#: recorded EPIC-pn rows 20.4 ns per draw with 16, 19.8 with 20, 18.7 with 24, 20.0 with 28,
#: 18.9 with 32 (AMD EPYC, AVX2); a draw does not depend on it
LANES = 24
#: LLVM may reassociate and contract the inversion's sums (values are checked finite first)
_FAST = {"reassoc", "contract", "nsz", "arcp"}


_INV_K = np.array([0.0] + [1.0 / k for k in range(1, K_MAX + 1)])
#: exp(-x) of the inversion (:func:`_exp_neg`): x = k ln 2 - r, |r| <= ln 2 / 2, with ln 2 in
#: two parts (Cody & Waite 1980, "Software Manual for the Elementary Functions", ch. 6) and
#: exp(r) by Taylor to r^13 (the terms left out, < 0.35^14 / 14! = 5e-18, are below float64's
#: rounding); k by rounding with 1.5 x 2^52 added (its low bits then hold k)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_ROUND = 6755399441055744.0  # 1.5 * 2^52
_ROUND_BITS = int(np.array([_ROUND]).view(np.int64)[0])
_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(14))
_LOG_FACTORIAL = np.array([math.lgamma(k + 1.0) for k in range(LOG_FACTORIAL_TABLE)])


# error_model="numpy": no exception checks in the loop, which would keep it from being
# vectorised; "contract" (fused multiply-adds) but no reassociation (the rounding trick needs
# its order)
@_compiled(fastmath={"contract"}, error_model="numpy")
def _exp_neg(lam, out, k_bits):  # pragma: no cover - compiled
    # out[i] = exp(-lam[i]) for 0 <= lam[i] <= PTRS_MIN, within ~1 unit of the last place of
    # math.exp (measured: at most 1.01); anything for other lam (NaN included), never read.
    # One math.exp costs ~7.6 ns here, a third of an inversion draw; these loops are
    # vectorised (~1.5 ns per value). k_bits: float64 scratch of lam.size
    c = _TAYLOR
    for i in range(lam.size):
        x = lam[i]
        x = x if x >= 0.0 else 0.0
        x = x if x <= PTRS_MIN else PTRS_MIN
        t = x * _INV_LN2 + _ROUND
        k = t - _ROUND  # round(x / ln 2), exactly
        r = (k * _LN2_HI - x) + k * _LN2_LO
        poly = c[13]
        for n in range(12, -1, -1):  # Horner; a fixed count, unrolled by the compiler
            poly = poly * r + c[n]
        out[i] = poly
        k_bits[i] = t
    # exp(-x) = exp(r) / 2^k: k off the exponent field (the result stays a normal number)
    bits, kb = out.view(np.int64), k_bits.view(np.int64)
    for i in range(lam.size):
        bits[i] -= (kb[i] - _ROUND_BITS) << 52


@_compiled(fastmath=_FAST)
def _settle(mean, uu, p0, p, f, k):  # pragma: no cover - compiled
    # inversion of LANES channels: k = the number of j with F(j) <= u, that is the
    # smallest k with u < F(k); p0 = exp(-mean)
    inv_k = _INV_K
    for q in range(LANES):
        p[q] = p0[q]
        f[q] = p[q]
        k[q] = 0.0
    for j in range(1, inv_k.size):
        still = 0.0
        for q in range(LANES):
            above = 1.0 if uu[q] >= f[q] else 0.0
            k[q] += above
            still += above
            p[q] *= mean[q] * inv_k[j]
            f[q] += p[q]
        if still == 0.0:
            break


@_compiled()
def _inversion(lam, u, out, big, ex):  # pragma: no cover - compiled
    # draws every lam < PTRS_MIN by inversion (u[i]: channel i's uniform), LANES channels
    # at a time; lists the others in ``big``; returns their number, or -1 - i for an
    # invalid lam[i]. ``ex``: scratch of 2 x lam.size
    _exp_neg(lam, ex[: lam.size], ex[lam.size : 2 * lam.size])
    slot = np.empty(LANES, dtype=np.int64)
    mean = np.zeros(LANES)
    uu = np.zeros(LANES)
    p0 = np.ones(LANES)
    p = np.empty(LANES)
    f = np.empty(LANES)
    k = np.empty(LANES)
    n_big = 0
    filled = 0
    n = lam.size
    for g in range(0, n, LANES):
        stop = min(g + LANES, n)
        if filled == 0 and stop - g == LANES:
            # LANES channels in a row that all take the inversion (the usual case) settle in
            # place; each channel's count depends on its own lam and u alone, so the grouping
            # never changes a draw
            plain = True
            for q in range(LANES):
                x = lam[g + q]
                if not (x >= 0.0 and x < PTRS_MIN):
                    plain = False
            if plain:
                _settle(lam[g:stop], u[g:stop], ex[g:stop], p, f, k)
                for q in range(LANES):
                    out[g + q] = k[q]
                continue
        for i in range(g, stop):  # the others one by one: gathered into the lanes
            x = lam[i]
            if not (x >= 0.0 and x <= LAM_MAX):
                return -1 - i
            if x >= PTRS_MIN:
                big[n_big] = i
                n_big += 1
                continue
            slot[filled] = i
            mean[filled] = x
            uu[filled] = u[i]
            p0[filled] = ex[i]
            filled += 1
            if filled == LANES:
                _settle(mean, uu, p0, p, f, k)
                for q in range(LANES):
                    out[slot[q]] = k[q]
                filled = 0
    if filled:
        for q in range(filled, LANES):  # idle lanes settle at k = 0
            mean[q] = 0.0
            uu[q] = 0.0
            p0[q] = 1.0
        _settle(mean, uu, p0, p, f, k)
        for q in range(filled):
            out[slot[q]] = k[q]
    return n_big


@_compiled()
def _ptrs(lam, big, n_big, start, u, pos, out):  # pragma: no cover - compiled
    # returns (next big index to draw, next uniform): next < n_big when u ran out
    log_factorial = _LOG_FACTORIAL
    for b in range(start, n_big):
        i = big[b]
        mean = lam[i]
        slam = math.sqrt(mean)
        loglam = math.log(mean)
        bb = 0.931 + 2.53 * slam
        a = -0.059 + 0.02483 * bb
        invalpha = 1.1239 + 1.1328 / (bb - 3.4)
        vr = 0.9277 - 3.6224 / (bb - 2.0)
        while True:
            if pos + 2 > u.size:
                return b, pos
            uu = u[pos] - 0.5
            v = u[pos + 1]
            pos += 2
            us = 0.5 - abs(uu)
            kf = math.floor((2.0 * a / us + bb) * uu + mean + 0.43)
            if us >= 0.07 and v <= vr:
                break
            if kf < 0.0 or (us < 0.013 and v > us):
                continue
            kk = int(kf)
            lf = log_factorial[kk] if kk < log_factorial.size else math.lgamma(kf + 1.0)
            lhs = math.log(v) + math.log(invalpha) - math.log(a / (us * us) + bb)
            if lhs <= -mean + kf * loglam - lf:
                break
        out[i] = kf
    return n_big, pos


@_compiled()
def _rows(lam, u, starts, out, big):  # pragma: no cover - compiled
    # row r draws from u[starts[r]:starts[r + 1]]: its inversion uniforms, then the
    # rejection's; status[r] = 1 where those ran out; -1 - (flat index) for an invalid lam
    m, n = lam.shape
    status = np.zeros(m, dtype=np.int64)
    ex = np.empty(2 * n)
    for r in range(m):
        own = u[starts[r] : starts[r + 1]]
        n_big = _inversion(lam[r], own, out[r], big, ex)
        if n_big < 0:
            status[r] = -1 - (r * n - 1 - n_big)
            return status
        done, _ = _ptrs(lam[r], big, n_big, 0, own, n, out[r])
        if done < n_big:
            status[r] = 1
    return status


_MASK32 = np.uint64(0xFFFFFFFF)
_PCG_MULT_HI = np.uint64(2549297995355413924)
_PCG_MULT_LO = np.uint64(4865540595714422341)


@_compiled()
def _mulhi(a, b):  # pragma: no cover - compiled
    # the high 64 bits of the 128-bit product of two uint64
    a0, a1 = a & _MASK32, a >> np.uint64(32)
    b0, b1 = b & _MASK32, b >> np.uint64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> np.uint64(32)) + (p10 & _MASK32) + (p01 & _MASK32)
    return p11 + (p10 >> np.uint64(32)) + (p01 >> np.uint64(32)) + (mid >> np.uint64(32))


@_compiled()
def _pcg64_fill(state, out):  # pragma: no cover - compiled
    # numpy's PCG64 (XSL-RR 128/64, O'Neill 2014) doubles from state = [state_hi, state_lo,
    # inc_hi, inc_lo], advanced in place: step state = state * mult + inc (mod 2^128), output
    # rotr(hi ^ lo, state >> 122), double = (output >> 11) / 2^53, as Generator.random
    hi, lo, inc_hi, inc_lo = state[0], state[1], state[2], state[3]
    one, zero = np.uint64(1), np.uint64(0)
    for i in range(out.size):
        new_lo = lo * _PCG_MULT_LO
        new_hi = hi * _PCG_MULT_LO + lo * _PCG_MULT_HI + _mulhi(lo, _PCG_MULT_LO)
        lo = new_lo + inc_lo
        hi = new_hi + inc_hi + (one if lo < new_lo else zero)
        x = hi ^ lo
        rot = hi >> np.uint64(58)
        r = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
        out[i] = np.float64(r >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    state[0], state[1] = hi, lo


@_compiled()
def _rows_pcg64(lam, states, out, big, u):  # pragma: no cover - compiled
    # as _rows, each row's uniforms drawn here from its PCG64 state (``u``: even-sized
    # scratch): n for the inversion, then even batches for the rejection, consumed in pairs
    # as one continuous stream; -1 - (flat index) for an invalid lam
    m, n = lam.shape
    status = np.zeros(m, dtype=np.int64)
    ex = np.empty(2 * n)
    for r in range(m):
        state = states[r]
        _pcg64_fill(state, u[:n])
        n_big = _inversion(lam[r], u[:n], out[r], big, ex)
        if n_big < 0:
            status[r] = -1 - (r * n - 1 - n_big)
            return status
        start = 0
        while start < n_big:
            need = min(u.size, 2 * (n_big - start) + SPARE_UNIFORMS)
            _pcg64_fill(state, u[:need])
            start, _ = _ptrs(lam[r], big, n_big, start, u[:need], 0, out[r])
    return status


def _refuse_invalid(lam: np.ndarray, status: np.ndarray) -> None:
    """Raise the kernels' verdict on an invalid mean (status -1 - flat index) as ValueError."""
    if status.size and status.min() < 0:
        bad = lam.ravel()[-1 - int(status.min())]
        raise ValueError(f"Poisson mean {float(bad)!r} is not a finite value in [0, {LAM_MAX:g}]")


def poisson_rows_pcg64(lam: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Draw one Poisson count per element of ``lam``, row r from numpy's PCG64 at ``states[r]``.

    The same counts as :func:`poisson_rows` given row r's ``numpy.random.Generator`` (a
    ``PCG64`` set to that state) as its uniforms, with the stream generated in the compiled
    code (no Python per row).

    Parameters
    ----------
    lam : numpy.ndarray
        (m, n) expected counts, finite and in [0, LAM_MAX].
    states : numpy.ndarray
        (m, 4) uint64: each row's PCG64 state and increment as [state >> 64, state mod 2^64,
        inc >> 64, inc mod 2^64] (``bit_generator.state["state"]``); not modified.

    Returns
    -------
    numpy.ndarray
        (m, n) float64 counts, exactly Poisson(lam) distributed and independent.

    Raises
    ------
    ValueError
        A negative, non-finite or too large ``lam``, or states of the wrong shape.
    """
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    states = np.array(states, dtype=np.uint64, copy=True)
    if lam.ndim != 2 or states.shape != (lam.shape[0], 4):
        raise ValueError(f"lam must be (m, n) and states (m, 4), not {lam.shape}, {states.shape}")
    m, n = lam.shape
    out = np.empty((m, n))
    scratch = np.empty(2 * n + SPARE_UNIFORMS + (SPARE_UNIFORMS % 2))
    status = _rows_pcg64(lam, states, out, np.empty(n, dtype=np.int64), scratch)
    _refuse_invalid(lam, status)
    return out


def uniforms_needed(lam: np.ndarray) -> np.ndarray:
    """Count the uniforms each row's draws take (more only if the rejections need them).

    Parameters
    ----------
    lam : numpy.ndarray
        (m, n) expected counts.

    Returns
    -------
    numpy.ndarray
        (m,) int: n for the inversion, PTRS_UNIFORMS per element with ``lam >= PTRS_MIN``,
        SPARE_UNIFORMS.
    """
    return (
        lam.shape[1] + PTRS_UNIFORMS * np.count_nonzero(lam >= PTRS_MIN, axis=1) + (SPARE_UNIFORMS)
    )


def poisson_rows(lam: np.ndarray, uniforms: Callable[[int, np.ndarray], None]) -> np.ndarray:
    """Draw one Poisson count per element of ``lam``, row r from row r's own random stream.

    Parameters
    ----------
    lam : numpy.ndarray
        (m, n) expected counts, finite and in [0, LAM_MAX].
    uniforms : callable
        ``uniforms(r, out)`` fills the float64 array ``out`` with the FIRST ``out.size``
        uniforms in [0, 1) of row r's stream (e.g. ``generator.random(out=out)`` on a
        generator set to the row's seed); called again with a longer ``out`` if the
        rejections of that row need more than :func:`uniforms_needed`.

    Returns
    -------
    numpy.ndarray
        (m, n) float64 counts, exactly Poisson(lam) distributed and independent; row r is a
        function of ``lam[r]`` and row r's stream only.

    Raises
    ------
    ValueError
        A negative, non-finite or too large ``lam``.
    """
    lam = np.ascontiguousarray(lam, dtype=np.float64)
    if lam.ndim != 2:
        raise ValueError(f"lam must be (m, n), not {lam.shape}")
    m, n = lam.shape
    sizes = uniforms_needed(lam)
    starts = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    u = np.empty(int(starts[-1]))
    for r in range(m):
        uniforms(r, u[starts[r] : starts[r + 1]])
    out = np.empty((m, n))
    big = np.empty(n, dtype=np.int64)
    status = _rows(lam, u, starts, out, big)
    _refuse_invalid(lam, status)
    for r in np.flatnonzero(status).tolist():  # rare: the rejections needed more uniforms
        size = int(sizes[r])
        while True:
            size *= 2
            longer = np.empty(size)
            uniforms(r, longer)
            again = _rows(lam[r : r + 1], longer, np.array([0, size]), out[r : r + 1], big)
            if again[0] == 0:
                break
    return out


def poisson_counts(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """Draw one Poisson count per element of ``lam`` from one generator.

    Parameters
    ----------
    rng : numpy.random.Generator
        The generator whose uniforms (``rng.random``) the draws use: one per element (the
        inversion's), then PTRS_UNIFORMS per element with ``lam >= PTRS_MIN`` and
        SPARE_UNIFORMS (the rejection's, two per try), more if those run out.
    lam : numpy.ndarray
        Expected counts, any shape, finite and in [0, LAM_MAX].

    Returns
    -------
    numpy.ndarray
        float64 counts, the shape of ``lam``; exactly Poisson(lam) distributed, independent.

    Raises
    ------
    ValueError
        A negative, non-finite or too large ``lam``.
    """
    lam = np.asarray(lam, dtype=np.float64)
    drawn = np.empty(0)

    def uniforms(_: int, out: np.ndarray) -> None:
        nonlocal drawn
        if out.size > drawn.size:  # the stream continues where it was left
            drawn = np.concatenate([drawn, rng.random(out.size - drawn.size)])
        out[:] = drawn[: out.size]

    return poisson_rows(lam.reshape(1, -1), uniforms).reshape(lam.shape)
