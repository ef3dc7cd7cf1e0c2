"""Baseline scaling-law forms M1-M4 (Alabdulmohsin, Neyshabur, Zhai 2022, https://arxiv.org/abs/2209.06640).

    M1: y = b x^c
    M2: y = a + b x^c
    M3: y = b (1/x + g)^c
    M4: (y - e_inf) / (e0 - y)^alpha = b x^c      (y between e_inf and e0; solved for y numerically)

Each form gives log y in plain NumPy on z = log x - z0 (centred for conditioning) from an internal
vector theta, starting points from a small data-adaptive grid with linear least squares for the
linear parameters, and the map from theta to named parameters. fit.py refines them with
scipy.optimize.least_squares on the same log-space residuals as BNSL.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from fitting.bnsl import exp_or_inf, log_b_of

FORMS = ("m1", "m2", "m3", "m4")
PARAM_NAMES = {
    "m1": ["b", "c"],
    "m2": ["a", "b", "c"],
    "m3": ["b", "g", "c"],
    "m4": ["e_inf", "e0", "alpha", "b", "c"],
}
C_MAX = 20.0


def _softplus(u):
    return np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))


def _logaddexp0(la, L):
    """logaddexp(log a, L) where a may be 0 (log a = -inf)."""
    with np.errstate(divide="ignore"):
        return np.logaddexp(la, L)


# ---------------------------------------------------------------- M1 / M2 / M3


def log_m1(theta, z):
    """theta = [log b (at z0), c]."""
    return theta[0] + theta[1] * z


def log_m2(theta, z):
    """theta = [a, log b (at z0), c]; log(a + b x^c) computed as logaddexp."""
    a = theta[0]
    L = theta[1] + theta[2] * z
    return np.logaddexp(math.log(a), L) if a > 0 else L


def log_m3(theta, z, z0):
    """theta = [log b, log g, c]; log y = log b + c log(exp(-(z + z0)) + g) (z0 undoes the centring)."""
    return theta[0] + theta[2] * np.logaddexp(-(z + z0), theta[1])


def _sigmoid(q):
    e = np.exp(-np.abs(q))
    return np.where(q >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@nb.njit(cache=True)
def _m4_q_nb(theta, z, iters=200):
    """Numba twin of `_m4_q_np`, one point at a time (stops as soon as each point converges)."""
    B, alpha = max(theta[1], 1e-300), max(theta[2], 0.0)
    out = np.empty(z.shape[0])
    for j in range(z.shape[0]):
        K = theta[3] + theta[4] * z[j] - (1.0 - alpha) * math.log(B)
        lo, hi = -1e3, 1e3
        q = K if K < 0 else K / max(alpha, 1e-3)
        q = min(max(q, -999.0), 999.0)
        for _ in range(iters):
            sp_neg = max(-q, 0.0) + math.log1p(math.exp(-abs(q)))
            sp_pos = sp_neg + q
            h = -sp_neg + alpha * sp_pos - K
            if h < 0:
                lo = q
            else:
                hi = q
            sig = 1.0 / (1.0 + math.exp(-q)) if q >= 0 else math.exp(q) / (1.0 + math.exp(q))
            d = max(1.0 - sig + alpha * sig, 1e-300)
            step = q - h / d
            q_new = step if lo < step < hi else 0.5 * (lo + hi)
            if abs(q_new - q) <= 1e-13 * (1.0 + abs(q)):
                q = q_new
                break
            q = q_new
        out[j] = q
    return out


def _m4_q(theta, z):
    return _m4_q_nb(np.asarray(theta, dtype=np.float64), np.ascontiguousarray(z, dtype=np.float64))


def _m4_q_np(theta, z, iters: int = 200):
    """q with s = sigmoid(q), y = e_inf + B s solving M4 (see m4_solve); NumPy, vectorized."""
    B, alpha = max(theta[1], 1e-300), max(theta[2], 0.0)
    K = theta[3] + theta[4] * z - (1.0 - alpha) * math.log(B)
    lo = np.full_like(z, -1e3)
    hi = np.full_like(z, 1e3)
    # asymptotes: h ~ q for q << 0, h ~ alpha q for q >> 0
    q = np.clip(np.where(K < 0, K, K / max(alpha, 1e-3)), -999.0, 999.0)
    for _ in range(iters):
        h = -_softplus(-q) + alpha * _softplus(q) - K
        lo = np.where(h < 0, q, lo)
        hi = np.where(h < 0, hi, q)
        sig = _sigmoid(q)
        step = q - h / np.maximum(1.0 - sig + alpha * sig, 1e-300)
        q_new = np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
        done = np.all(np.abs(q_new - q) <= 1e-13 * (1.0 + np.abs(q)))
        q = q_new
        if done:
            break
    return q


def m4_solve(theta, z):
    """Solve M4 for log y. theta = [e_inf, B = e0 - e_inf, alpha, log b (at z0), c].

    With y = e_inf + B s, s in (0, 1): log s - alpha log(1 - s) = log b + c z - (1 - alpha) log B.
    Write s = sigmoid(q): the left side h(q) = -sp(-q) + alpha sp(q) increases in q (h' > 0), so a
    Newton iteration kept inside a shrinking bracket (bisection when a step leaves it) converges for
    any parameters.
    """
    q = _m4_q(theta, z)
    la = math.log(theta[0]) if theta[0] > 0 else -np.inf
    return _logaddexp0(la, math.log(max(theta[1], 1e-300)) - _softplus(-q))


def m4_resid_jac(theta, z, logy):
    """Residuals log yhat - log y and their Jacobian for M4, by implicit differentiation of
    G(w) = log w - alpha log(B - w) - log b - c z = 0, w = y - e_inf = B s:
    dw/dtheta = -(dG/dtheta) / (dG/dw), dG/dw = (1/s + alpha/(1 - s)) / B."""
    e_inf, B, alpha = theta[0], max(theta[1], 1e-300), max(theta[2], 0.0)
    q = _m4_q(theta, z)
    s, s1 = _sigmoid(q), _sigmoid(-q)  # s and 1 - s, each accurate
    la = math.log(e_inf) if e_inf > 0 else -np.inf
    logyhat = _logaddexp0(la, math.log(B) - _softplus(-q))
    inv_y = np.exp(-logyhat)
    den = s1 + alpha * s  # (dG/dw) * B * s * (1 - s)
    ok = den > 0  # den = 0 only for alpha = 0 with s = 1 in floating point: the limit is dw/dlog b = w
    den = np.where(ok, den, 1.0)
    dw_dlb = np.where(ok, B * s * s1 / den, B * s)
    J = np.empty((len(z), 5))
    J[:, 0] = inv_y
    J[:, 1] = alpha * s / den * inv_y
    J[:, 2] = (math.log(B) - _softplus(q)) * dw_dlb * inv_y  # log(B - w) = log B + log(1 - s)
    J[:, 3] = dw_dlb * inv_y
    J[:, 4] = z * dw_dlb * inv_y
    return logyhat - logy, J


def log_pred(form: str, theta, z, z0: float):
    """log y of a baseline form at centred z."""
    theta = np.asarray(theta, dtype=np.float64)
    if form == "m1":
        return log_m1(theta, z)
    if form == "m2":
        return log_m2(theta, z)
    if form == "m3":
        return log_m3(theta, z, z0)
    if form == "m4":
        return m4_solve(theta, z)
    raise ValueError(f"unknown form {form!r}")


def to_natural(form: str, theta, z0: float) -> dict[str, float]:
    """Internal theta to the named parameters of PARAM_NAMES[form], plus log_b beside b (b can
    leave float64's range on data far from x = 1; see bnsl.to_natural)."""
    t = [float(v) for v in theta]

    def with_b(log_b: float, **p) -> dict[str, float]:
        return {**p, "b": exp_or_inf(log_b), "log_b": log_b}
    if form == "m1":
        return {**with_b(t[0] - t[1] * z0), "c": t[1]}
    if form == "m2":
        return {**with_b(t[1] - t[2] * z0, a=t[0]), "c": t[2]}
    if form == "m3":
        return {**with_b(t[0]), "g": math.exp(t[1]), "c": t[2]}
    if form == "m4":
        return {**with_b(t[3] - t[4] * z0, e_inf=t[0], e0=t[0] + t[1], alpha=t[2]), "c": t[4]}
    raise ValueError(f"unknown form {form!r}")


def from_natural(form: str, p: dict[str, float], z0: float) -> np.ndarray:
    """Inverse of `to_natural` (log_b, or log(b) where only b is given)."""
    lb = log_b_of(p)
    if form == "m1":
        return np.array([lb + p["c"] * z0, p["c"]])
    if form == "m2":
        return np.array([p["a"], lb + p["c"] * z0, p["c"]])
    if form == "m3":
        return np.array([lb, math.log(p["g"]), p["c"]])
    if form == "m4":
        return np.array([p["e_inf"], p["e0"] - p["e_inf"], p["alpha"], lb + p["c"] * z0, p["c"]])
    raise ValueError(f"unknown form {form!r}")


def predict(form: str, params: dict[str, float], x) -> np.ndarray:
    """y of a baseline form with named parameters at x (finite for finite parameters)."""
    z = np.log(np.asarray(x, dtype=np.float64))
    return np.exp(np.clip(log_pred(form, from_natural(form, params, 0.0), z, 0.0), -745.0, 709.0))


def bounds(form: str, z, y):
    """(lower, upper) bounds on theta for least_squares."""
    inf = np.inf
    if form == "m1":
        return [-inf, -C_MAX], [inf, C_MAX]
    if form == "m2":
        return [0.0, -inf, -C_MAX], [float(np.max(y)), inf, C_MAX]
    if form == "m3":
        return [-inf, -inf, -C_MAX], [inf, inf, C_MAX]
    if form == "m4":
        return [0.0, 1e-12, 0.0, -inf, -C_MAX], [inf, inf, 50.0, inf, 0.0]
    raise ValueError(f"unknown form {form!r}")


def _lin(X, t, w=None):
    if w is not None:
        sw = np.sqrt(w)
        X, t = X * sw[:, None], t * sw
    beta, *_ = np.linalg.lstsq(X, t, rcond=None)
    return beta


def starts(form: str, z, y, z0: float) -> list[np.ndarray]:
    """Starting thetas from a data-adaptive grid over the non-linear parameters."""
    logy = np.log(y)
    one = np.ones_like(z)
    ymin, ymax = float(np.min(y)), float(np.max(y))
    out = []
    if form == "m1":
        out.append(_lin(np.stack([one, z], 1), logy))
    elif form == "m2":
        for a in np.concatenate([[0.0], ymin * (1 - np.geomspace(0.9, 0.002, 15))]):
            t = np.log(y - a)
            lb, c = _lin(np.stack([one, z], 1), t, ((y - a) / y) ** 2)
            out.append(np.array([a, lb, c]))
    elif form == "m3":
        zr = z + z0  # raw log x
        for lg in np.linspace(-zr.max() - 6.0, -zr.min() + 3.0, 40):
            col = np.logaddexp(-zr, lg)
            lb, c = _lin(np.stack([one, col], 1), logy)
            out.append(np.array([lb, lg, c]))
    elif form == "m4":
        # The linear step of the authors' estimator: log(y - e_inf) = log b + c z + alpha log(e0 - y).
        for e_inf in np.concatenate([[0.0], ymin * (1 - np.geomspace(0.9, 0.005, 9))]):
            for e0 in ymax * np.array([1.001, 1.01, 1.05, 1.2, 1.5, 2.0, 4.0, 10.0]):
                X = np.stack([one, z, np.log(e0 - y)], 1)
                lb, c, alpha = _lin(X, np.log(y - e_inf))
                out.append(np.array([e_inf, e0 - e_inf, min(max(alpha, 0.0), 50.0), lb, min(c, 0.0)]))
    else:
        raise ValueError(f"unknown form {form!r}")
    return out
